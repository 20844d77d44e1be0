"""Procedural textures described by short prompts: the data the built-in prior and classifier learn.

Six patterns (solid, stripes, checkerboard, dots, gradient, waves) in eight colours; the patterned
ones take two colours. Every sample draws its own phase, orientation, scale and colour jitter, so
each prompt names a distribution of images, not one image.

Half of the images are "object-like" composites that resemble what the engine renders: the
pattern inside a blob, bent as if on a curved surface, lit by ambient + diffuse shading, over a
random solid background. The other half fill the frame (a texture seen flat).

Everything is vectorized torch code driven by a ``torch.Generator``: the same seed gives the same
batch, bit for bit, on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..vocabulary import COLOURS, COLOUR_NAMES, NEGATIVE_PROMPT, NEGATIVE_WORDS, PATTERNS, SPECS, VIEW_SUFFIXES, TextureSpec
from .patterns import pattern_mask, uniform
from .scenes import scene_images


@dataclass
class DatasetConfig:
    """How images are drawn.

    size: output resolution (images are drawn at 2x and box-filtered, i.e. antialiased).
    object_fraction: share of object-like composites (blob, shading, background).
    jitter: std of the per-channel colour jitter; brightness varies by +-``brightness``.
    period_range: pattern period as a fraction of the image width.
    """

    size: int = 32
    object_fraction: float = 0.5
    scene_fraction: float = 0.5  # with a ViewBank: share of baked mesh views (the rest split as above)
    jitter: float = 0.04
    brightness: float = 0.08
    period_range: tuple[float, float] = (0.16, 0.42)


def _colour_table() -> torch.Tensor:
    return torch.tensor([COLOURS[c] for c in COLOUR_NAMES], dtype=torch.float32)


def _blob(n, grid_x, grid_y, g):
    """Object masks (a wobbly ellipse), sphere-like normals ``[N, 3, H, W]`` and the masks ``[N, H, W]``."""
    cx = uniform(n, 0.38, 0.62, g).view(n, 1, 1)
    cy = uniform(n, 0.38, 0.62, g).view(n, 1, 1)
    rx = uniform(n, 0.28, 0.5, g).view(n, 1, 1)
    ry = uniform(n, 0.28, 0.5, g).view(n, 1, 1)
    rot = uniform(n, 0, math.pi, g).view(n, 1, 1)
    dx, dy = grid_x - cx, grid_y - cy
    ex = (dx * torch.cos(rot) + dy * torch.sin(rot)) / rx
    ey = (-dx * torch.sin(rot) + dy * torch.cos(rot)) / ry
    ang = torch.atan2(ey, ex)
    k = torch.randint(2, 5, (n, 1, 1), generator=g).float()
    wobble = 1 + uniform(n, 0.0, 0.15, g).view(n, 1, 1) * torch.sin(k * ang + uniform(n, 0, 6.3, g).view(n, 1, 1))
    r2 = (ex**2 + ey**2) / wobble**2
    mask = (r2 < 1).float()
    nz = torch.sqrt((1 - r2).clamp(min=0))
    normals = torch.stack([ex / wobble, -ey / wobble, nz], 1)
    # (x * x).sum().sqrt(), not .norm(): the same value, 6x faster on the CPU at [N, 3, 128, 128]
    normals = normals / (normals * normals).sum(1, keepdim=True).sqrt().clamp(min=1e-6)
    return mask, normals


def sample_batch(specs: list[TextureSpec], g: torch.Generator, config: DatasetConfig = DatasetConfig(),
                 return_mask: bool = False, scenes=None):
    """Draw one image per spec.

    Args:
        specs: what each image shows.
        g: a CPU ``torch.Generator``; the batch is a deterministic function of its state.
        config: resolution and augmentation ranges.
        return_mask: also return the object masks.
        scenes: a :class:`nfsd.builtin.training.scenes.ViewBank` at ``config.size``: a ``config.scene_fraction``
            of the images are then its baked mesh views, textured with the spec's pattern.

    Returns:
        images ``[N, 3, S, S]`` float32 in [0, 1], row 0 at the top; with ``return_mask`` also
        masks ``[N, 1, S, S]`` in [0, 1] (all ones for full-frame images).
    """
    n, s = len(specs), config.size
    hi = 2 * s  # drawn at 2x, box-filtered down: antialiased edges like a rendered texture
    coords = (torch.arange(hi, dtype=torch.float32) + 0.5) / hi
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    gx, gy = gx.expand(n, hi, hi), gy.expand(n, hi, hi)
    table = _colour_table()
    pids = torch.tensor([PATTERNS.index(sp.pattern) for sp in specs])
    c0 = torch.tensor([COLOUR_NAMES.index(sp.colours[0]) for sp in specs])
    c1 = torch.tensor([COLOUR_NAMES.index(sp.colours[-1]) for sp in specs])
    is_object = torch.rand(n, generator=g) < config.object_fraction
    mask, normals = _blob(n, gx, gy, g)
    mask = torch.where(is_object.view(n, 1, 1), mask, torch.ones_like(mask))
    # On objects the pattern bends with the surface, as a texture on a curved mesh does.
    bulge = uniform(n, 0.0, 0.25, g).view(n, 1, 1) * is_object.view(n, 1, 1)
    px = gx + bulge * normals[:, 0]
    py = gy - bulge * normals[:, 1]
    m = pattern_mask(pids, px, py, g, config.period_range, pixel=1.0 / hi).unsqueeze(1)

    def jittered(idx):
        col = table[idx] + config.jitter * torch.randn(n, 3, generator=g)
        col = col * uniform(n, 1 - config.brightness, 1 + config.brightness, g).view(n, 1)
        return col.clamp(0, 1).view(n, 3, 1, 1)

    img = jittered(c0) * (1 - m) + jittered(c1) * m
    # Ambient + diffuse shading from a random light in front, as the engine lights its renders.
    light = torch.stack([uniform(n, -0.7, 0.7, g), uniform(n, -0.7, 0.7, g), torch.ones(n)], 1)
    light = light / light.norm(dim=1, keepdim=True)
    diffuse = (normals * light.view(n, 3, 1, 1)).sum(1, keepdim=True).clamp(min=0)
    ambient = uniform(n, 0.45, 0.8, g).view(n, 1, 1, 1)
    shade = ambient + (1 - ambient) * diffuse
    shade = torch.where(is_object.view(n, 1, 1, 1), shade, torch.ones_like(shade))
    background = torch.rand(n, 3, 1, 1, generator=g)
    mask4 = mask.unsqueeze(1)
    img = (img * shade).clamp(0, 1) * mask4 + background * (1 - mask4)
    img, mask4 = F.avg_pool2d(img, 2), F.avg_pool2d(mask4, 2)
    if scenes is not None:
        if scenes.size != s:
            raise ValueError(f"the view bank is {scenes.size} px, the dataset {s} px")
        chosen = torch.nonzero(torch.rand(n, generator=g) < config.scene_fraction).flatten()
        if len(chosen):
            views = torch.randint(0, len(scenes), (len(chosen),), generator=g)
            buffers = scenes.buffers[views]
            img[chosen] = scene_images(buffers, pids[chosen], jittered(c0)[chosen], jittered(c1)[chosen], g,
                                       config.period_range)
            mask4[chosen] = buffers[:, 6:7].float()
    if return_mask:
        return img, mask4
    return img


def degrade(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """What the negative prompt describes: blurred, darkened, washed-out versions of ``images`` [N,3,H,W]."""
    n = images.shape[0]
    sigma = uniform(n, 0.8, 2.5, g)
    k = 9
    xs = torch.arange(k, dtype=torch.float32) - k // 2
    kern = torch.exp(-xs.view(1, -1) ** 2 / (2 * sigma.view(-1, 1) ** 2))
    kern = kern / kern.sum(1, keepdim=True)  # [N, k]
    x = F.pad(images, (k // 2,) * 4, mode="replicate")
    # Separable per-sample blur via grouped convolution (one group per image channel).
    w_h = kern.repeat_interleave(3, 0).view(n * 3, 1, 1, k)
    w_v = kern.repeat_interleave(3, 0).view(n * 3, 1, k, 1)
    x = x.reshape(1, n * 3, *x.shape[-2:])
    x = F.conv2d(F.conv2d(x, w_h, groups=n * 3), w_v, groups=n * 3).view_as(images)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = uniform(n, 0.25, 0.6, g).view(n, 1, 1, 1)
    x = mean + (x - mean) * contrast
    grey = x.mean(1, keepdim=True)
    x = grey + (x - grey) * uniform(n, 0.2, 0.7, g).view(n, 1, 1, 1)
    return (x * uniform(n, 0.3, 0.65, g).view(n, 1, 1, 1)).clamp(0, 1)


def random_specs(n: int, g: torch.Generator) -> list[TextureSpec]:
    """``n`` specs, patterns drawn uniformly first (so solids are not rare), then colours."""
    pattern_idx = torch.randint(0, len(PATTERNS), (n,), generator=g).tolist()
    out = []
    for p in pattern_idx:
        pattern = PATTERNS[p]
        candidates = [s for s in SPECS if s.pattern == pattern]
        out.append(candidates[int(torch.randint(0, len(candidates), (1,), generator=g))])
    return out


@dataclass
class CaptionConfig:
    """How training captions are formed: view suffixes, negative captions, condition dropout."""

    view_suffix_prob: float = 0.5
    negative_prob: float = 0.1  # degraded image captioned with (some of) the negative words
    drop_prob: float = 0.12  # empty caption, for classifier-free guidance


def training_batch(n: int, g: torch.Generator, config: DatasetConfig = DatasetConfig(),
                   captions: CaptionConfig = CaptionConfig(), scenes=None) -> tuple[torch.Tensor, list[str]]:
    """A batch for the prior: images ``[n, 3, S, S]`` in [0, 1] and their captions (``scenes``:
    see :func:`sample_batch`)."""
    specs = random_specs(n, g)
    images = sample_batch(specs, g, config, scenes=scenes)
    r = torch.rand(n, generator=g)
    negative = r < captions.negative_prob
    dropped = (r >= captions.negative_prob) & (r < captions.negative_prob + captions.drop_prob)
    suffix = torch.rand(n, generator=g) < captions.view_suffix_prob
    which_suffix = torch.randint(0, len(VIEW_SUFFIXES), (n,), generator=g).tolist()
    if negative.any():
        images[negative] = degrade(images[negative], g)
    texts = []
    for i, spec in enumerate(specs):
        if negative[i]:
            if torch.rand(1, generator=g).item() < 0.5:
                texts.append(NEGATIVE_PROMPT)
            else:  # a few of the words, so each one carries meaning on its own
                keep = torch.randperm(len(NEGATIVE_WORDS), generator=g)[: int(torch.randint(1, 5, (1,), generator=g))]
                texts.append(", ".join(NEGATIVE_WORDS[j] for j in sorted(keep.tolist())))
        elif dropped[i]:
            texts.append("")
        else:
            texts.append(spec.prompt + (VIEW_SUFFIXES[which_suffix[i]] if suffix[i] else ""))
    return images, texts
