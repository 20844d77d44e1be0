"""Texel grids on UV space: which triangle covers each texel, UV coverage, island dilation, ``logit``.

Below the texture parametrizations (``nfsd.distill.texture``, ``nfsd.distill.surface_field``), which
both build on it. A texture is ``[H, W, C]`` with row 0 = v = 0 = the BOTTOM; UVs are per-corner
``[F, 3, 2]`` float32 with (0, 0) bottom-left.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..render.renderer import get_rasterizer


def logit(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(1e-3, 1 - 1e-3)
    return torch.log(x / (1 - x))


def uv_faces(uvs: torch.Tensor, size: int, rasterizer=None) -> torch.Tensor:
    """The mesh rasterized in UV space: which triangle covers each texel centre.

    Args:
        uvs: ``[F, 3, 2]`` float32 per-corner UVs, (0, 0) bottom-left.
        size: texture size.
        rasterizer: a ``nfsd.render.renderer`` rasterizer (default: the pure-PyTorch one on ``uvs.device``).

    Returns:
        ``[size, size]`` float32 triangle index, -1 where no triangle covers the texel; row 0 bottom.
    """
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
