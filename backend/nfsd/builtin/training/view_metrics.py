"""Measurements on rendered views of a texturing result: the numbers the quality benchmarks report.

Images are float32 ``[V, 3, S, S]`` in [0, 1] (row 0 top), masks ``[V, 1, S, S]`` (1 inside the
object, antialiased at the silhouette); every measure reads only pixels well inside the object.

    python -m nfsd.builtin.training.view_metrics OUT_DIR [OUT_DIR ...]   # `nfsd demo` outputs: side, above, below
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def render_result(result, size: int, azimuths, elevation: float, background=(0.5, 0.5, 0.5)):
    """Fixed orbit views of a ``TextureResult``: images ``[V, 3, S, S]`` and masks ``[V, 1, S, S]`` (row 0 top)."""
    from ...distill.outputs import render_result as render

    out = render(result, size, azimuths, elevation, background)
    return out.image, out.mask


def saturation(images: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean HSV saturation ``(max - min) / max`` over pixels with ``mask > 0.99``."""
    mx, mn = images.amax(1), images.amin(1)
    s = (mx - mn) / mx.clamp(min=1e-4)
    m = mask[:, 0] > 0.99
    return float(s[m].mean()) if m.any() else float("nan")


def clipped_fraction(images: torch.Tensor, mask: torch.Tensor, eps: float = 0.02) -> float:
    m = (mask > 0.99).expand_as(images)
    v = images[m]
    return float(((v < eps) | (v > 1 - eps)).float().mean()) if v.numel() else float("nan")


def high_frequency_energy(images: torch.Tensor, mask: torch.Tensor, size: int = 32, sigma: float = 1.0) -> float:
    """Mean squared difference between the image and its Gaussian blur, at ``size`` (the prior's
    resolution), over pixels well inside the object (silhouette edges would count the outline)."""
    if images.shape[-1] != size:
        images = F.interpolate(images, (size, size), mode="bilinear", align_corners=False, antialias=True)
        mask = F.interpolate(mask, (size, size), mode="bilinear", align_corners=False, antialias=True)
    k = 5
    xs = torch.arange(k, dtype=torch.float32) - k // 2
    w = torch.exp(-xs**2 / (2 * sigma**2))
    w = w / w.sum()
    kern = (w.view(-1, 1) * w.view(1, -1)).expand(3, 1, k, k)
    blurred = F.conv2d(F.pad(images, (k // 2,) * 4, mode="replicate"), kern, groups=3)
    inner = -F.max_pool2d(-(mask > 0.99).float(), k, stride=1, padding=k // 2)  # eroded mask
    energy = ((images - blurred) ** 2).sum(1, keepdim=True)
    return float((energy * inner).sum() / inner.sum().clamp(min=1))


def off_palette_fraction(images: torch.Tensor, mask: torch.Tensor, colours, threshold: float = 0.35) -> float:
    """Share of pixels with ``mask > 0.99`` whose RGB lies farther than ``threshold`` from every one
    of ``colours`` (``[K, 3]`` in [0, 1]): what the prompt did not ask for (stray tints, dark specks,
    blotches; also the soft edge between two colours, which every result has alike)."""
    palette = torch.as_tensor(colours, dtype=images.dtype)
    pixels = images.permute(0, 2, 3, 1)[mask[:, 0] > 0.99]
    if not len(pixels):
        return float("nan")
    return float((torch.cdist(pixels, palette).amin(1) > threshold).float().mean())


# Orbit bands for ``view_bands``: eight azimuths each, at the elevations views.png looks from.
BANDS = {"side": 15.0, "above": 60.0, "below": -60.0}


def view_bands(result, prompt: str, size: int = 128) -> dict:
    """Off-palette share (``off_palette_fraction``, the prompt's dataset colours) and high-frequency
    energy of a result seen from the side, from above and from below: eight azimuths per band."""
    from ..vocabulary import COLOURS, parse_prompt

    colours = [COLOURS[c] for c in parse_prompt(prompt).colours]
    azimuths = tuple(float(a) for a in range(0, 360, 45))
    out = {}
    for band, elevation in BANDS.items():
        images, mask = render_result(result, size, azimuths, elevation)
        out[band] = {"off_palette": off_palette_fraction(images, mask, colours),
                     "hf_energy": high_frequency_energy(images, mask, size=64)}
    return out


def main(argv=None) -> int:
    """``python -m nfsd.builtin.training.view_metrics DIR [DIR ...] [--mesh default] [--prompt P]``: score the
    ``texture.png`` of ``nfsd demo`` output folders from the side, above and below."""
    import argparse
    import sys
    from types import SimpleNamespace

    from ...geometry.builtin_meshes import builtin_mesh
    from ...geometry.unwrap import ensure_uvs
    from ...errors import NfsdError
    from ...distill.image_files import load_png

    p = argparse.ArgumentParser(prog="python -m nfsd.builtin.training.view_metrics", description=main.__doc__)
    p.add_argument("dirs", nargs="+", help="output folders of `nfsd demo` (their texture.png)")
    p.add_argument("--mesh", default="default", help="the built-in mesh they were made on")
    p.add_argument("--prompt", default="red and white stripes", help="their prompt (a dataset prompt)")
    args = p.parse_args(argv)
    mesh = ensure_uvs(builtin_mesh(args.mesh))
    print("folder | " + " | ".join(f"off-palette {b} | hf {b}" for b in BANDS))
    for folder in args.dirs:
        try:
            texture = load_png(f"{folder}/texture.png")
            bands = view_bands(SimpleNamespace(mesh=mesh, uvs=mesh.uvs, texture=texture, offsets=None), args.prompt)
        except (NfsdError, ValueError) as exc:  # no texture.png there, or not a dataset prompt
            print(f"view_metrics: error: {exc}", file=sys.stderr)
            return 2
        print(f"{folder} | " + " | ".join(f"{v['off_palette']:.3f} | {v['hf_energy'] * 1000:.2f}" for v in bands.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
