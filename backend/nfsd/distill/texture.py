"""UV textures: parametrizations that are optimized, UV coverage and regions, UV-island dilation.

In memory a texture is ``[H, W, C]`` with row 0 = v = 0 = the BOTTOM (nvdiffrast's and Blender's
order). Files and conversions to uint8 live in ``nfsd.distill.image_files``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError

PARAMETRIZATIONS = ("pyramid", "pixels", "surface")


def logit(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(1e-3, 1 - 1e-3)
    return torch.log(x / (1 - x))


class PixelTexture(torch.nn.Module):
    """One logit per texel: ``image = sigmoid(logits)``. The plain baseline.

    Args:
        size: texture width and height in texels.
        init: optional ``[size, size, 3]`` float in [0, 1], row 0 bottom; default mid-grey.
    """

    def __init__(self, size: int, init: torch.Tensor | None = None):
        super().__init__()
        logits = torch.zeros(1, 3, size, size)
        if init is not None:
            logits = logit(init.permute(2, 0, 1)[None].float())
        self.logits = torch.nn.Parameter(logits)
        self.size = size

    def forward(self) -> torch.Tensor:
        """Texture ``[size, size, 3]`` float32 in [0, 1], row 0 bottom."""
        return torch.sigmoid(self.logits)[0].permute(1, 2, 0)


class PyramidTexture(torch.nn.Module):
    """A multi-resolution sum of logit images: ``image = sigmoid(L_n + up(L_n-1 + up(... + up(L_0))))``.

    Levels go from ``base`` texels up to ``size`` by factors of 2. With Adam every level moves at
    the same rate, so coarse levels make smooth, large-scale changes early on while fine levels add
    detail: it converges faster and without the texel noise of a raw-pixel texture (measured in
    BENCHMARKS.md).

    Args:
        size: texture width and height (a power of two times ``base`` is not required).
        base: the coarsest level's size.
        init: optional ``[size, size, 3]`` float in [0, 1] (row 0 bottom), put in the finest level.
    """

    def __init__(self, size: int, base: int = 16, init: torch.Tensor | None = None):
        super().__init__()
        sizes = []
        s = min(base, size)
        while s < size:
            sizes.append(s)
            s *= 2
        sizes.append(size)
        self.sizes = sizes
        self.size = size
        self.levels = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(1, 3, s, s)) for s in sizes])
        if init is not None:
            with torch.no_grad():
                self.levels[-1].copy_(logit(init.permute(2, 0, 1)[None].float()))

    def forward(self) -> torch.Tensor:
        """Texture ``[size, size, 3]`` float32 in [0, 1], row 0 bottom."""
        # Coarse to fine, one 2x upsampling per level: a single full-size interpolation instead of
        # one per level (the sum is still a smooth multi-resolution field).
        total = self.levels[0]
        for level, size in zip(list(self.levels)[1:], self.sizes[1:]):
            total = F.interpolate(total, size=(size, size), mode="bilinear", align_corners=False) + level
        return torch.sigmoid(total)[0].permute(1, 2, 0)


def make_texture(kind: str, size: int, init: torch.Tensor | None = None, surface=None) -> torch.nn.Module:
    """A texture parametrization by name: ``"pyramid"`` (the engine's default), ``"pixels"`` or ``"surface"``.

    ``"surface"`` (``nfsd.distill.surface_field``) needs the mesh: ``surface = (positions [V, 3] in
    [-1, 1]^3, triangles [F, 3], uvs [F, 3, 2])``; the others ignore it.
    """
    if kind == "surface":
        from .surface_field import SurfaceFieldTexture

        if surface is None:
            raise ConfigError("the surface parametrization needs the mesh (positions, triangles, uvs)")
        return SurfaceFieldTexture.from_mesh(size, *surface, init=init)
    if kind == "pyramid":
        return PyramidTexture(size, init=init)
    if kind == "pixels":
        return PixelTexture(size, init=init)
    raise ConfigError(f"unknown texture parametrization {kind!r}: choose one of {', '.join(PARAMETRIZATIONS)}")


# ---------------------------------------------------------------------------------------------
# UV coverage and island dilation


def uv_faces(uvs: torch.Tensor, size: int, rasterizer=None) -> torch.Tensor:
    """The mesh rasterized in UV space: which triangle covers each texel centre.

    Args:
        uvs: ``[F, 3, 2]`` float32 per-corner UVs, (0, 0) bottom-left.
        size: texture size.
        rasterizer: a ``nfsd.render.renderer`` rasterizer (default: the pure-PyTorch one on ``uvs.device``).

    Returns:
        ``[size, size]`` float32 triangle index, -1 where no triangle covers the texel; row 0 bottom.
    """
    from ..render.renderer import get_rasterizer

    rasterizer = rasterizer or get_rasterizer("torch", uvs.device)
    n = uvs.shape[0]
    corners = uvs.reshape(-1, 2).float()
    clip = torch.cat([corners * 2 - 1, torch.zeros_like(corners[:, :1]), torch.ones_like(corners[:, :1])], dim=1)
    tri = torch.arange(3 * n, dtype=torch.int32, device=uvs.device).view(n, 3)
    rast = rasterizer.rasterize(clip[None].contiguous(), tri, (size, size))
    return rast[0, :, :, 3] - 1


def uv_coverage(uvs: torch.Tensor, size: int, rasterizer=None) -> torch.Tensor:
    """Which texels some triangle covers in UV space.

    Args:
        uvs: ``[F, 3, 2]`` float32 per-corner UVs, (0, 0) bottom-left.
        size: texture size.
        rasterizer: a ``nfsd.render.renderer`` rasterizer (default: the pure-PyTorch one on ``uvs.device``).

    Returns:
        ``[size, size]`` bool, row 0 bottom. Texels touched by a triangle edge count as covered
        (one texel of conservative growth) so bilinear lookups at island borders see real colour.
    """
    covered = (uv_faces(uvs, size, rasterizer) >= 0).float()[None, None]
    covered = F.max_pool2d(covered, 3, stride=1, padding=1)
    return covered[0, 0] > 0


def as_face_mask(values, num_faces: int) -> np.ndarray:
    """A face selection as ``[F]`` bool: from a bool array of length ``F`` or integer face indices.

    Raises ``ConfigError`` for another dtype or length, an index out of range, or an empty selection.
    """
    arr = np.asarray(values)
    if arr.dtype == np.bool_:
        if arr.shape != (num_faces,):
            raise ConfigError(f"face mask: a bool mask needs one value per triangle, shape ({num_faces},); "
                              f"got shape {arr.shape}")
        mask = arr.copy()
    elif np.issubdtype(arr.dtype, np.integer):
        if arr.ndim != 1:
            raise ConfigError(f"face mask: face indices must be a 1-D array, got shape {arr.shape}")
        if arr.size and (arr.min() < 0 or arr.max() >= num_faces):
            raise ConfigError(f"face mask: face index out of range 0..{num_faces - 1} "
                              f"(got {int(arr.min())}..{int(arr.max())})")
        mask = np.zeros(num_faces, dtype=bool)
        mask[arr] = True
    else:
        raise ConfigError(f"face mask: expected bool [F] or integer face indices, got dtype {arr.dtype}")
    if not mask.any():
        raise ConfigError("face mask selects no face: select the faces to re-texture")
    return mask


def face_region(uvs: torch.Tensor, face_mask: torch.Tensor, size: int, padding: int = 16,
                rasterizer=None) -> torch.Tensor:
    """The texels a re-texture of the faces in ``face_mask`` may change.

    Args:
        uvs: ``[F, 3, 2]`` float32 per-corner UVs.
        face_mask: ``[F]`` bool, True for the faces to re-texture.
        size: texture size.
        padding: rings of empty (uncovered) texels around the masked faces' islands that go with
            them, so the island padding ``dilate`` writes (and mipmaps read) follows the new colours.

    Returns:
        ``[size, size]`` bool, row 0 bottom: texels covered by a masked face and by no unmasked one
        (a texel an unmasked face also shows, along a shared seam or under overlapping UVs, is
        kept), plus the empty texels nearer to the masked faces than to any unmasked face (ties
        are kept), up to ``padding`` rings out.
    """
    face_mask = face_mask.to(device=uvs.device, dtype=torch.bool)
    empty = torch.zeros(size, size, dtype=torch.bool, device=uvs.device)
    inside = uv_coverage(uvs[face_mask], size, rasterizer) if face_mask.any() else empty
    outside = uv_coverage(uvs[~face_mask], size, rasterizer) if (~face_mask).any() else empty
    region, kept = inside & ~outside, outside.clone()
    free = ~(inside | outside)

    def grow(m):
        return F.max_pool2d(m[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0

    for _ in range(padding):
        reach_in, reach_out = grow(region) & free, grow(kept) & free
        if not (reach_in.any() or reach_out.any()):
            break
        region = region | (reach_in & ~reach_out)
        kept = kept | reach_out
        free = free & ~reach_in & ~reach_out
    return region


def dilate(texture: torch.Tensor, mask: torch.Tensor, iterations: int = 16) -> torch.Tensor:
    """Pad UV islands: fill texels outside ``mask`` from their covered neighbours, ring by ring.

    Args:
        texture: ``[H, W, C]`` float.
        mask: ``[H, W]`` bool, True where the texture is meaningful.
        iterations: rings to grow (pixels of padding); texels still empty after that get the mean
            colour of the covered ones, so mipmaps never average in black.

    Returns:
        ``[H, W, C]``: equal to ``texture`` inside ``mask``.
    """
    if mask.all() or not mask.any():
        return texture.clone()
    img = texture.permute(2, 0, 1)[None].float()
    m = mask[None, None].float()
    filled = img * m
    kernel = torch.ones(1, 1, 3, 3, dtype=img.dtype, device=img.device)
    for _ in range(iterations):
        count = F.conv2d(m, kernel, padding=1)
        summed = F.conv2d(filled, kernel.expand(img.shape[1], 1, 3, 3), padding=1, groups=img.shape[1])
        grow = (count > 0) & (m == 0)
        if not grow.any():
            break
        avg = summed / count.clamp(min=1)
        filled = torch.where(grow, avg, filled)
        m = torch.where(grow, torch.ones_like(m), m)
    mean = (img * mask[None, None]).sum(dim=(2, 3), keepdim=True) / mask.sum()
    filled = torch.where(m > 0, filled, mean.expand_as(filled))
    return filled[0].permute(1, 2, 0).to(texture.dtype)
