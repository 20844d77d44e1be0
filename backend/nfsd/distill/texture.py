"""UV textures: the parametrizations that are optimized, and the region a face mask re-textures.

In memory a texture is ``[H, W, C]`` with row 0 = v = 0 = the BOTTOM (nvdiffrast's and Blender's
order). Files and conversions to uint8 live in ``nfsd.distill.image_files``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .surface_field import SurfaceFieldTexture
from .texels import logit, uv_coverage

PARAMETRIZATIONS = ("pyramid", "pixels", "surface")


class PixelTexture(torch.nn.Module):
    """One logit per texel: ``image = sigmoid(logits)``. The plain baseline.

    Args:
        size: texture width and height in texels.
        init: optional ``[size, size, C]`` float in [0, 1], row 0 bottom; default mid-grey.
        channels: C without ``init`` (3 colour; a pbr material has more, ``nfsd.render.shading``).
    """

    def __init__(self, size: int, init: torch.Tensor | None = None, channels: int = 3):
        super().__init__()
        logits = torch.zeros(1, channels, size, size)
        if init is not None:
            logits = logit(init.permute(2, 0, 1)[None].float())
        self.logits = torch.nn.Parameter(logits)
        self.size = size

    def forward(self) -> torch.Tensor:
        """Texture ``[size, size, C]`` float32 in [0, 1], row 0 bottom."""
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
        init: optional ``[size, size, C]`` float in [0, 1] (row 0 bottom), put in the finest level.
        channels: C without ``init`` (3 colour; a pbr material has more, ``nfsd.render.shading``).
    """

    def __init__(self, size: int, base: int = 16, init: torch.Tensor | None = None, channels: int = 3):
        super().__init__()
        channels = init.shape[-1] if init is not None else channels
        sizes = []
        s = min(base, size)
        while s < size:
            sizes.append(s)
            s *= 2
        sizes.append(size)
        self.sizes = sizes
        self.size = size
        self.levels = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(1, channels, s, s)) for s in sizes])
        if init is not None:
            with torch.no_grad():
                self.levels[-1].copy_(logit(init.permute(2, 0, 1)[None].float()))

    def forward(self) -> torch.Tensor:
        """Texture ``[size, size, C]`` float32 in [0, 1], row 0 bottom."""
        # Coarse to fine, one 2x upsampling per level: a single full-size interpolation instead of
        # one per level (the sum is still a smooth multi-resolution field).
        total = self.levels[0]
        for level, size in zip(list(self.levels)[1:], self.sizes[1:]):
            total = F.interpolate(total, size=(size, size), mode="bilinear", align_corners=False) + level
        return torch.sigmoid(total)[0].permute(1, 2, 0)


def make_texture(kind: str, size: int, init: torch.Tensor | None = None, surface=None,
                 channels: int = 3) -> torch.nn.Module:
    """A texture parametrization by name: ``"pyramid"`` (the engine's default), ``"pixels"`` or ``"surface"``.

    ``"surface"`` (``nfsd.distill.surface_field``) needs the mesh: ``surface = (positions [V, 3] in
    [-1, 1]^3, triangles [F, 3], uvs [F, 3, 2])``; the others ignore it. ``channels``: 3 for a colour
    texture, more for a pbr material (``nfsd.distill.material``); ``init`` ``[size, size, C]`` sets it too.
    """
    if kind == "surface":
        if surface is None:
            raise ConfigError("the surface parametrization needs the mesh (positions, triangles, uvs)")
        return SurfaceFieldTexture.from_mesh(size, *surface, init=init, channels=channels)
    if kind == "pyramid":
        return PyramidTexture(size, init=init, channels=channels)
    if kind == "pixels":
        return PixelTexture(size, init=init, channels=channels)
    raise ConfigError(f"unknown texture parametrization {kind!r}: choose one of {', '.join(PARAMETRIZATIONS)}")


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
