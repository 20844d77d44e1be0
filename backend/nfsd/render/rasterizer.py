"""The rasterizer interface: nvdiffrast's four primitives, their conventions, and shared helpers.

Two implementations share these conventions exactly, so the rest of the code never asks which one
it has: ``nfsd.render.torch_rasterizer.TorchRasterizer`` (pure PyTorch, any device, the reference) and
``nfsd.render.nvdiffrast_rasterizer.NvdiffrastRasterizer`` (CUDA). ``nfsd.render.renderer`` picks one and renders.

Conventions (nvdiffrast's, which are OpenGL's):

- ``pos_clip`` [B,V,4] float32 clip-space positions; ``tri`` [F,3] int32 vertex indices.
- ``rast`` [B,H,W,4] float32: (u, v, z/w, triangle_id + 1); the last channel is 0 on the
  background. (u, v) are perspective-correct barycentrics weighting vertices 0 and 1 of the
  triangle; vertex 2 gets 1 - u - v. Pixel row 0 is the BOTTOM of the image; pixel (x, y) has
  its centre at NDC ((2x + 1) / W - 1, (2y + 1) / H - 1).
- Textures [B|1,Ht,Wt,C] float32 with row 0 at v = 0 (bottom); uv (0, 0) is the bottom-left
  corner of texel (0, 0), texel centres sit at ((i + 0.5) / Wt, (j + 0.5) / Ht).
- Mipmaps ("linear-mipmap-linear"): ``mip_levels(Ht, Wt)`` halvings, each a 2x2 box filter.
"""

from __future__ import annotations

from typing import Protocol

import torch


class Rasterizer(Protocol):
    """The four primitives ``render_views`` needs, with nvdiffrast's conventions (module docstring)."""

    name: str

    def rasterize(self, pos_clip: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
        """pos_clip [B,V,4], tri [F,3] int32, resolution (H, W) -> rast [B,H,W,4].

        Differentiable w.r.t. pos_clip through (u, v, z/w) of the covered pixels."""
        ...

    def interpolate(self, attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
        """attr [B,V,C], [1,V,C] or [V,C] -> [B,H,W,C]; 0 on the background."""
        ...

    def texture(
        self, tex: torch.Tensor, uv: torch.Tensor, filter_mode: str = "linear", uv_da: torch.Tensor | None = None
    ) -> torch.Tensor:
        """tex [B|1,Ht,Wt,C], uv [B,H,W,2] -> [B,H,W,C]; bilinear, clamped at the borders.

        filter_mode "linear" or "linear-mipmap-linear" (trilinear, needs uv_da [B,H,W,4] =
        (du/dx, du/dy, dv/dx, dv/dy) per pixel, see ``uv_pixel_derivatives``)."""
        ...

    def antialias(
        self, color: torch.Tensor, rast: torch.Tensor, pos_clip: torch.Tensor, tri: torch.Tensor
    ) -> torch.Tensor:
        """color [B,H,W,C] -> [B,H,W,C] blended across silhouette edges, with position gradients."""
        ...


def pixel_centres_ndc(x: torch.Tensor, y: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (2 * x.float() + 1) / width - 1, (2 * y.float() + 1) / height - 1



def rast_faces(rast: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Triangle index (0 on the background) and coverage mask from rast's last channel."""
    ids = rast[..., 3].detach().round().long()
    return (ids - 1).clamp_min(0), ids > 0


def batched_attr(attr: torch.Tensor, rast: torch.Tensor) -> torch.Tensor:
    if attr.dim() == 2:
        attr = attr.unsqueeze(0)
    if attr.dim() != 3 or attr.shape[0] not in (1, rast.shape[0]):
        raise ValueError(f"attr must be [V,C], [1,V,C] or [{rast.shape[0]},V,C], got {tuple(attr.shape)}")
    return attr


def check_geometry(pos_clip: torch.Tensor, tri: torch.Tensor) -> None:
    if pos_clip.dim() != 3 or pos_clip.shape[-1] != 4:
        raise ValueError(f"pos_clip must be [B,V,4] clip-space positions, got {tuple(pos_clip.shape)}")
    if tri.dim() != 2 or tri.shape[-1] != 3 or tri.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"tri must be an [F,3] int32 tensor, got {tuple(tri.shape)} {tri.dtype}")


def check_texture(tex: torch.Tensor, uv: torch.Tensor, filter_mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    if filter_mode not in ("linear", "linear-mipmap-linear"):
        raise ValueError(f"filter_mode must be 'linear' or 'linear-mipmap-linear', got {filter_mode!r}")
    if tex.dim() == 3:
        tex = tex.unsqueeze(0)
    if tex.dim() != 4 or uv.dim() != 4 or uv.shape[-1] != 2 or tex.shape[0] not in (1, uv.shape[0]):
        raise ValueError(f"texture expects tex [B|1,Ht,Wt,C] and uv [B,H,W,2], got {tuple(tex.shape)} and {tuple(uv.shape)}")
    return tex, uv



def mip_levels(height: int, width: int) -> int:
    """How many times a ``height`` x ``width`` texture can be halved into a mip stack.

    nvdiffrast's rule (``calculateMipInfo`` in its texture.cpp): each halving divides every side
    still above 1 by two and needs those sides to be even; it stops at 1 x 1. Asking nvdiffrast
    for more levels than this raises "cannot downsample an odd extent", which is why both
    rasterizers build exactly this many: 1024 -> 10 (down to 1 x 1), 768 = 3 x 2^8 -> 8 (down
    to 3 x 3), 1536 -> 9, 1024 x 768 -> 8 (4 x 3), 8 x 2 -> 3, any odd side above 1 -> 0.
    """
    height, width = int(height), int(width)
    if height < 1 or width < 1:
        raise ValueError(f"texture sides must be >= 1, got {height} x {width}")
    levels = 0
    while height > 1 or width > 1:
        if (height > 1 and height % 2) or (width > 1 and width % 2):
            break
        height, width = max(1, height // 2), max(1, width // 2)
        levels += 1
    return levels


def uv_pixel_derivatives(
    attr: torch.Tensor, attr_tri: torch.Tensor, rast: torch.Tensor, pos_clip: torch.Tensor, tri: torch.Tensor
) -> torch.Tensor:
    """Analytic screen-space derivatives of a 2-channel attribute (uv), for mipmap level selection.

    attr [B|1,Va,2] (or [Va,2]) indexed by attr_tri [F,3] (e.g. per-corner UVs), rast from either
    rasterizer, pos_clip [B,V,4] indexed by tri [F,3] (the triangles that were rasterized).
    Returns [B,H,W,4] = (du/dx, du/dy, dv/dx, dv/dy) per pixel (x right, y up, in pixels), the
    ``uv_da`` layout of nvdiffrast's ``texture``; 0 on the background. Not differentiable (the
    footprint only picks a mip level).

    With beta_i = (p . c_i) / (p . S), S = sum c_i, the attribute is a(p) = (p . N) / (p . S),
    N = sum a_i c_i, so da/dp = (N - a S) / (p . S) for the x and y components of p."""
    with torch.no_grad():
        attr = batched_attr(attr, rast)
        batch, height, width, _ = rast.shape
        face, covered = rast_faces(rast)
        b = torch.arange(batch, device=rast.device).view(-1, 1, 1).expand_as(face)
        xyw = pos_clip.float()[b.unsqueeze(-1), tri.long()[face]][..., [0, 1, 3]]  # [B,H,W,3,3]
        c = torch.linalg.cross(xyw.roll(-1, dims=-2), xyw.roll(-2, dims=-2), dim=-1)
        attr_b = b if attr.shape[0] > 1 else torch.zeros_like(b)
        a = attr.float()[attr_b.unsqueeze(-1), attr_tri.long()[face]]  # [B,H,W,3,2]
        y, x = torch.meshgrid(torch.arange(height, device=rast.device), torch.arange(width, device=rast.device), indexing="ij")
        xn, yn = pixel_centres_ndc(x, y, width, height)
        p = torch.stack([xn, yn, torch.ones_like(xn)], dim=-1)  # [H,W,3]
        s = c.sum(-2)  # [B,H,W,3]
        n = (a.unsqueeze(-1) * c.unsqueeze(-2)).sum(-3)  # [B,H,W,2,3]
        ps = (p * s).sum(-1).unsqueeze(-1).unsqueeze(-1)
        value = (n * p.unsqueeze(-2)).sum(-1, keepdim=True) / ps  # [B,H,W,2,1]
        d = (n[..., :2] - value * s[..., None, :2]) / ps  # [B,H,W,2 attr,2 axes] per NDC unit
        d = d * torch.tensor([2.0 / width, 2.0 / height], device=rast.device)
        d = torch.nan_to_num(d) * covered[..., None, None]
        return d.reshape(batch, height, width, 4)
