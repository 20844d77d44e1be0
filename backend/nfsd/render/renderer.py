"""Rendering a textured mesh from a batch of cameras: ``get_rasterizer``, lighting, ``render_views``.

The rasterizer primitives and their conventions live in ``nfsd.render.rasterizer``; the two backends in
``nfsd.render.torch_rasterizer`` (pure PyTorch, any device) and ``nfsd.render.nvdiffrast_rasterizer`` (CUDA).
Import each name from the module that defines it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from .cameras import Cameras
from ..errors import RendererError
from .nvdiffrast_rasterizer import INSTALL_HINT, NvdiffrastRasterizer, nvdiffrast_available
from .rasterizer import Rasterizer, rast_faces, uv_pixel_derivatives
from .shading import (MATERIAL_CHANNELS, PBR_NORMAL_CHANNELS, PbrLighting, as_pbr_lighting, corner_normals,
                      face_tangents, perturb_normal, shade_pbr)
from .torch_rasterizer import TorchRasterizer

__all__ = ["Lighting", "RenderOutput", "flat_lighting", "get_rasterizer", "random_lighting", "render_views"]


def get_rasterizer(kind: str = "auto", device="cpu") -> Rasterizer:
    """Pick a rasterizer for ``device``.

    "auto": nvdiffrast when it imports and starts on a CUDA device, else (with a warning if it
    failed to start) the PyTorch rasterizer. "torch" or "nvdiffrast" force one; forcing
    nvdiffrast where it cannot run raises RendererError with how to install it."""
    device = torch.device(device)
    if kind == "torch":
        return TorchRasterizer()
    if kind == "auto":
        if device.type == "cuda" and nvdiffrast_available():
            try:
                return NvdiffrastRasterizer(device)
            except RendererError as exc:
                warnings.warn(f"{exc}; falling back to the PyTorch rasterizer", RuntimeWarning, stacklevel=2)
        return TorchRasterizer()
    if kind == "nvdiffrast":
        if not nvdiffrast_available():
            raise RendererError(f"renderer 'nvdiffrast' requested but nvdiffrast.torch does not import; {INSTALL_HINT}")
        if device.type != "cuda":
            raise RendererError(f"renderer 'nvdiffrast' needs a CUDA device, got {device}; use renderer='torch' on {device}")
        return NvdiffrastRasterizer(device)
    raise RendererError(f"unknown renderer {kind!r}: use 'auto', 'torch' or 'nvdiffrast'")


# ----------------------------------------------------------------------------------------------
# Views
# ----------------------------------------------------------------------------------------------


@dataclass
class Lighting:
    """Per-view lighting. ``light_dir`` points from the surface towards the light."""

    background: torch.Tensor  # [B,3] in [0,1]
    light_dir: torch.Tensor  # [B,3] unit, world space
    ambient: torch.Tensor  # [B] in [0,1]

    def to(self, device) -> "Lighting":
        return Lighting(self.background.to(device), self.light_dir.to(device), self.ambient.to(device))


def flat_lighting(batch: int, background: Sequence[float] = (1.0, 1.0, 1.0)) -> Lighting:
    """Ambient 1: the render shows the pure albedo (fixed view grids, scoring)."""
    return Lighting(
        background=torch.tensor(background, dtype=torch.float32).expand(batch, 3).clone(),
        light_dir=torch.tensor([0.0, 0.0, 1.0]).expand(batch, 3).clone(),
        ambient=torch.ones(batch),
    )


def random_lighting(
    batch: int,
    generator: torch.Generator | None = None,
    eye: torch.Tensor | None = None,
    ambient_range: tuple[float, float] = (0.4, 0.8),
    spread: float = 0.6,
) -> Lighting:
    """Random solid background, ambient ~ U[ambient_range], light near the camera direction.

    eye [B,3] (``Cameras.eye``): the light direction is the view direction perturbed by Gaussian
    noise of std ``spread`` and kept in the camera's hemisphere; without it, the light comes
    from a random direction in the upper hemisphere. Sampled on the CPU; use ``.to(device)``."""
    background = torch.rand(batch, 3, generator=generator)
    ambient = ambient_range[0] + (ambient_range[1] - ambient_range[0]) * torch.rand(batch, generator=generator)
    noise = torch.randn(batch, 3, generator=generator)
    if eye is None:
        light = F.normalize(noise, dim=-1)
        light = torch.cat([light[:, :2], light[:, 2:].abs()], dim=-1)
    else:
        towards = F.normalize(eye.detach().float().cpu(), dim=-1)
        light = F.normalize(towards + spread * noise, dim=-1)
        facing = (light * towards).sum(-1, keepdim=True)
        light = torch.where(facing < 0, light - 2 * facing * towards, light)  # mirror into the hemisphere
    return Lighting(background=background, light_dir=F.normalize(light, dim=-1), ambient=ambient)


@dataclass
class RenderOutput:
    image: torch.Tensor  # [B,3,H,W] in [0,1], row 0 = TOP
    mask: torch.Tensor  # [B,1,H,W], 1 = covered (antialiased)
    albedo: torch.Tensor  # [B,3,H,W] unlit texture colour (a material's base colour), background where empty


def render_views(
    rasterizer: Rasterizer,
    positions: torch.Tensor,
    triangles: torch.Tensor,
    uvs: torch.Tensor,
    texture: torch.Tensor,
    cameras: Cameras,
    resolution: int | tuple[int, int],
    lighting: "Lighting | PbrLighting | None" = None,
    filter_mode: str = "linear-mipmap-linear",
) -> RenderOutput:
    """Render a textured mesh from a batch of cameras.

    positions [V,3] float32 world space (unit sphere; may require grad), triangles [F,3] int32,
    uvs [F,3,2] per-corner UVs, texture [Ht,Wt,3] float32 row 0 = bottom (may require grad),
    cameras on the same device, resolution H (square) or (H, W). lighting None = flat white.

    Shading: albedo * (ambient + (1 - ambient) * max(0, n . l)) with the geometric face normal
    flipped towards the camera (two-sided), composited over the background with antialiased
    coverage. Everything runs in float32, whatever precision the caller uses elsewhere.

    A material texture ([Ht,Wt,5] or [Ht,Wt,7] with a normal map, channels ``nfsd.render.shading.
    MATERIAL_CHANNELS``) is shaded by ``nfsd.render.shading.shade_pbr`` instead, under ``lighting`` as a
    ``PbrLighting`` (a ``Lighting`` is converted: ``as_pbr_lighting``; None = flat white), the view
    direction from each pixel's interpolated world position to the camera's eye.
    Images come back with row 0 at the TOP (PNG / diffusion-model convention).
    """
    if isinstance(resolution, int):
        resolution = (resolution, resolution)
    device = positions.device
    batch = len(cameras)
    channels = texture.shape[-1]
    if channels not in (3, 5, 7):
        raise ValueError(f"texture must be [Ht,Wt,3] (albedo) or a material [Ht,Wt,5|7], got {tuple(texture.shape)}")
    if lighting is None:
        lighting = flat_lighting(batch)
    lighting = (lighting if channels == 3 else as_pbr_lighting(lighting)).to(device)
    positions = positions.float()
    tri = triangles.to(device=device, dtype=torch.int32)
    num_tri = tri.shape[0]
    if uvs.shape != (num_tri, 3, 2):
        raise ValueError(f"uvs must be per-corner [F,3,2] = [{num_tri},3,2], got {tuple(uvs.shape)}")

    homogeneous = torch.cat([positions, torch.ones_like(positions[:, :1])], dim=-1)
    pos_clip = torch.einsum("bij,vj->bvi", cameras.mvp.to(device).float(), homogeneous).contiguous()
    rast = rasterizer.rasterize(pos_clip, tri, resolution)

    corner_uv = uvs.to(device).float().reshape(1, 3 * num_tri, 2)
    corner_tri = torch.arange(3 * num_tri, device=device, dtype=torch.int32).view(num_tri, 3)
    uv = rasterizer.interpolate(corner_uv, rast, corner_tri)
    uv_da = uv_pixel_derivatives(corner_uv, corner_tri, rast, pos_clip, tri) if "mipmap" in filter_mode else None
    albedo = rasterizer.texture(texture.float().unsqueeze(0), uv, filter_mode=filter_mode, uv_da=uv_da)

    # Geometric normals, flipped per view towards the eye (exact for a flat triangle).
    v = positions[tri.long()]  # [F,3,3]
    normal = F.normalize(torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1), dim=-1)
    eye = cameras.eye.to(device).float()
    facing = torch.einsum("fi,bfi->bf", normal, eye[:, None, :] - v[None, :, 0])
    normal_b = normal.unsqueeze(0) * torch.where(facing < 0, -1.0, 1.0).unsqueeze(-1)  # [B,F,3]
    face, covered = rast_faces(rast)
    pixel_normal = normal_b[torch.arange(batch, device=device).view(-1, 1, 1), face]  # [B,H,W,3]
    if channels == 3:
        lambert = (pixel_normal * lighting.light_dir.view(batch, 1, 1, 3)).sum(-1).clamp_min(0)
        ambient = lighting.ambient.view(batch, 1, 1, 1)
        shaded = albedo * (ambient + (1 - ambient) * lambert.unsqueeze(-1))
    else:
        material, albedo = albedo, albedo[..., MATERIAL_CHANNELS["base_color"]]
        # Smooth normals (creased as textured.glb's), on the side the face shows to this camera.
        smooth = rasterizer.interpolate(corner_normals(positions, tri).reshape(1, 3 * num_tri, 3), rast, corner_tri)
        side = (pixel_normal * normal[face]).sum(-1, keepdim=True).sign()
        pixel_normal = F.normalize(smooth * side, dim=-1)
        if channels == PBR_NORMAL_CHANNELS:
            frame = face_tangents(positions, tri, uvs.to(device))[face]  # [B,H,W,2,3]
            pixel_normal = perturb_normal(pixel_normal, frame, material[..., MATERIAL_CHANNELS["normal"]])
        point = rasterizer.interpolate(positions, rast, tri)  # [B,H,W,3] world position
        view = F.normalize(eye.view(batch, 1, 1, 3) - point, dim=-1)
        shaded = shade_pbr(albedo, material[..., MATERIAL_CHANNELS["roughness"]],
                           material[..., MATERIAL_CHANNELS["metallic"]], pixel_normal, view, lighting)

    background = lighting.background.view(batch, 1, 1, 3)
    cover = covered.unsqueeze(-1)
    layers = torch.cat(
        [
            torch.where(cover, shaded, background),
            torch.where(cover, albedo, background),
            cover.float(),
        ],
        dim=-1,
    )
    layers = rasterizer.antialias(layers.contiguous(), rast, pos_clip, tri)
    layers = layers.flip(1).permute(0, 3, 1, 2).clamp(0, 1)  # row 0 = top
    return RenderOutput(image=layers[:, 0:3], mask=layers[:, 6:7], albedo=layers[:, 3:6])
