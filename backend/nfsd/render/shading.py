"""Physically based shading of a material texture: the pbr ``material`` (glTF metallic-roughness).

A material texture is ``[Ht, Wt, C]`` float32 in [0, 1], row 0 = v = 0 = bottom (as every texture),
with the channels ``MATERIAL_CHANNELS`` names: base colour (sRGB, 0..2), roughness (3, linear,
perceptual: alpha = roughness^2), metallic (4, linear) and, with a normal map, the tangent-space
normal's x and y (5, 6; [0, 1] -> [-1, 1], OpenGL convention: +x along +u, +y along +v; z is
``sqrt(1 - x^2 - y^2)``). ``render_views`` samples it like an albedo texture (any channel count) and
shades the interpolated values here, so the shading is the same on both rasterizers.

The model (evaluated in linear light, the result turned back to sRGB for the prior):

    L = sum_k c_k (n.l_k) [ (1 - metallic) base + pi D G F / (4 (n.l_k)(n.v)) ]
        + ambient [ (1 - metallic) base + env(F0, roughness, n.v) ]
    D = GGX (Trowbridge-Reitz) NDF, G = Smith with Schlick-GGX, k = (roughness + 1)^2 / 8,
    F = Schlick, F0 = mix(0.04, base, metallic); env = Karis's analytic fit of the split-sum
    environment BRDF (the ambient light's specular part: rough and smooth surfaces differ there too).

Lights carry their colour as irradiance times pi (a white Lambert surface facing a light of colour
c shows c). Shapes are channels last, the rasterizer's attribute layout: ``[B, H, W, C]``; world axes
(Z up); directions unit, pointing away from the surface (towards the light, towards the eye).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Channel layout of a material texture (see the module docstring).
MATERIAL_CHANNELS = {"base_color": slice(0, 3), "roughness": slice(3, 4), "metallic": slice(4, 5),
                     "normal": slice(5, 7)}
PBR_CHANNELS = 5          # base colour, roughness, metallic
PBR_NORMAL_CHANNELS = 7   # ... and the normal map's x, y
MIN_ROUGHNESS = 0.05      # shading floor: a smaller alpha makes a highlight thinner than a pixel


def material_channels(normal_map: bool) -> int:
    """How many channels a pbr material texture has (5, or 7 with a normal map)."""
    return PBR_NORMAL_CHANNELS if normal_map else PBR_CHANNELS


@dataclass
class PbrLighting:
    """Per-view lights for pbr shading. K lights per view; colours in linear light.

    background [B,3] sRGB in [0,1]; light_dir [B,K,3] unit, world space, surface -> light;
    light_colour [B,K,3] >= 0; ambient [B,3] >= 0 (a uniform environment)."""

    background: torch.Tensor
    light_dir: torch.Tensor
    light_colour: torch.Tensor
    ambient: torch.Tensor

    def to(self, device) -> "PbrLighting":
        return PbrLighting(self.background.to(device), self.light_dir.to(device), self.light_colour.to(device),
                           self.ambient.to(device))


def as_pbr_lighting(lighting) -> PbrLighting:
    """A ``nfsd.render.renderer.Lighting`` (one white light, grey ambient) as the pbr model's lights:
    the same light at strength ``1 - ambient``, so a white dielectric reads as the albedo shading shows it
    (plus its highlight)."""
    if isinstance(lighting, PbrLighting):
        return lighting
    strength = (1 - lighting.ambient).view(-1, 1, 1).expand(-1, 1, 3)
    return PbrLighting(background=lighting.background, light_dir=lighting.light_dir.unsqueeze(1),
                       light_colour=strength.clone(), ambient=lighting.ambient.view(-1, 1).expand(-1, 3).clone())


def random_pbr_lighting(batch: int, generator: torch.Generator | None = None, eye: torch.Tensor | None = None,
                        lights: int = 3, spread: float = 0.6) -> PbrLighting:
    """Random lights per view, so a highlight moves from view to view and cannot be painted into the colour.

    Light 0 (the key, strength U[0.6, 1.0]) comes from near the view direction (``eye`` [B,3], perturbed by
    Gaussian noise of std ``spread``, kept in the camera's hemisphere; without ``eye``: the upper hemisphere);
    the ``lights - 1`` others (strength U[0.1, 0.4]) from anywhere. Each light is tinted (every channel
    U[0.7, 1] of its strength); the ambient is a tinted grey of U[0.1, 0.3]; the background a random colour.
    Sampled on the CPU in a fixed order (same generator state, same lights); use ``.to(device)``."""
    background = torch.rand(batch, 3, generator=generator)
    noise = torch.randn(batch, lights, 3, generator=generator)
    if eye is None:
        key = F.normalize(noise[:, 0], dim=-1)
        key = torch.cat([key[:, :2], key[:, 2:].abs()], dim=-1)
    else:
        towards = F.normalize(eye.detach().float().cpu(), dim=-1)
        key = F.normalize(towards + spread * noise[:, 0], dim=-1)
        facing = (key * towards).sum(-1, keepdim=True)
        key = torch.where(facing < 0, key - 2 * facing * towards, key)
    direction = torch.cat([key.unsqueeze(1), noise[:, 1:]], dim=1)
    strength = torch.rand(batch, lights, 1, generator=generator)
    strength = torch.cat([0.6 + 0.4 * strength[:, :1], 0.1 + 0.3 * strength[:, 1:]], dim=1)
    tint = 0.7 + 0.3 * torch.rand(batch, lights, 3, generator=generator)
    ambient = (0.1 + 0.2 * torch.rand(batch, 1, generator=generator)) * \
        (0.8 + 0.2 * torch.rand(batch, 3, generator=generator))
    return PbrLighting(background=background, light_dir=F.normalize(direction, dim=-1),
                       light_colour=strength * tint, ambient=ambient)


def studio_lighting(eye: torch.Tensor, variant: int = 0, background=(0.5, 0.5, 0.5)) -> PbrLighting:
    """Two fixed setups for looking at a result (views.png): 0 = a white key light above the camera's left
    with a cool fill from the right; 1 = a warm low light from the camera's right with a blue rim from behind.
    eye [B,3] camera positions (world); the lights follow each camera."""
    eye = eye.detach().float().cpu()
    batch = eye.shape[0]
    back = F.normalize(eye, dim=-1)                                   # towards the camera
    up = torch.tensor([0.0, 0.0, 1.0]).expand(batch, 3)
    right = F.normalize(torch.linalg.cross(up, back, dim=-1) + 1e-6, dim=-1)  # camera's right, seen from it
    if variant == 0:
        dirs = [back - 0.6 * right + 0.7 * up, back + right + 0.1 * up]
        colours = [(1.0, 1.0, 1.0), (0.25, 0.3, 0.4)]
        ambient = (0.15, 0.15, 0.16)
    else:
        dirs = [back + 1.2 * right - 0.1 * up, -back + 0.5 * up]
        colours = [(1.0, 0.75, 0.5), (0.3, 0.4, 0.8)]
        ambient = (0.08, 0.09, 0.12)
    return PbrLighting(background=torch.tensor(background, dtype=torch.float32).expand(batch, 3).clone(),
                       light_dir=F.normalize(torch.stack(dirs, 1), dim=-1),
                       light_colour=torch.tensor(colours).expand(batch, -1, 3).clone(),
                       ambient=torch.tensor(ambient).expand(batch, 3).clone())


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] -> linear (IEC 61966-2-1), any shape."""
    return torch.where(x <= 0.04045, x / 12.92, ((x.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """Linear (>= 0) -> sRGB, clamped to [0, 1], any shape."""
    x = x.clamp(0, 1)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


def face_tangents(positions: torch.Tensor, triangles: torch.Tensor, uvs: torch.Tensor) -> torch.Tensor:
    """Per-face tangent frame from the UV layout: ``[F, 2, 3]`` float32 = (dP/du, dP/dv), unit, world space.

    positions [V,3], triangles [F,3] int, uvs [F,3,2] per corner ((0,0) bottom-left). Faces with a
    degenerate UV triangle get zero vectors (their normal map reads as flat)."""
    p = positions.float()[triangles.long()]  # [F,3,3]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    d1, d2 = uvs[:, 1].float() - uvs[:, 0].float(), uvs[:, 2].float() - uvs[:, 0].float()
    det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
    ok = det.abs() > 1e-12
    inv = torch.where(ok, 1.0 / torch.where(ok, det, torch.ones_like(det)), torch.zeros_like(det)).unsqueeze(-1)
    tangent = (e1 * d2[:, 1:2] - e2 * d1[:, 1:2]) * inv
    bitangent = (e2 * d1[:, 0:1] - e1 * d2[:, 0:1]) * inv
    return torch.stack([F.normalize(tangent, dim=-1), F.normalize(bitangent, dim=-1)], dim=1)


def corner_normals(positions: torch.Tensor, triangles: torch.Tensor, crease_deg: float = 40.0) -> torch.Tensor:
    """Smooth shading normals per corner: ``[F, 3, 3]`` float32 unit, world space.

    positions [V,3], triangles [F,3] int. Each corner gets its vertex's area-weighted normal, except where
    that is more than ``crease_deg`` off the face's own normal (a cube's edges): there the face normal, as
    textured.glb writes them (``nfsd.geometry.glb_export.save_textured_glb``)."""
    tri = triangles.long()
    p = positions.float()[tri]
    face_n = torch.linalg.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], dim=-1)  # area-weighted
    vert_n = torch.zeros_like(positions, dtype=torch.float32).index_add(0, tri.reshape(-1), face_n.repeat_interleave(3, 0))
    face_n, corner = F.normalize(face_n, dim=-1), F.normalize(vert_n, dim=-1)[tri]
    sharp = (corner * face_n.unsqueeze(1)).sum(-1, keepdim=True) < math.cos(math.radians(crease_deg))
    return torch.where(sharp, face_n.unsqueeze(1).expand_as(corner), corner)


def perturb_normal(normal: torch.Tensor, frame: torch.Tensor, encoded: torch.Tensor) -> torch.Tensor:
    """Apply a tangent-space normal map. normal [...,3] unit (the surface's, facing the camera), frame
    [...,2,3] (dP/du, dP/dv, ``face_tangents``), encoded [...,2] in [0, 1] (x, y; 0.5 = flat) -> [...,3] unit.
    The frame is made orthonormal against ``normal`` (Gram-Schmidt) before use."""
    t = F.normalize(frame[..., 0, :] - normal * (frame[..., 0, :] * normal).sum(-1, keepdim=True), dim=-1)
    b = frame[..., 1, :] - normal * (frame[..., 1, :] * normal).sum(-1, keepdim=True)
    b = F.normalize(b - t * (b * t).sum(-1, keepdim=True), dim=-1)
    xy = encoded * 2 - 1
    z = (1 - (xy * xy).sum(-1, keepdim=True)).clamp_min(1e-4).sqrt()
    return F.normalize(xy[..., :1] * t + xy[..., 1:] * b + z * normal, dim=-1)


def shade_pbr(base: torch.Tensor, roughness: torch.Tensor, metallic: torch.Tensor, normal: torch.Tensor,
              view: torch.Tensor, lighting: PbrLighting) -> torch.Tensor:
    """The pbr model of the module docstring, per pixel.

    base [B,H,W,3] sRGB in [0,1]; roughness, metallic [B,H,W,1] in [0,1]; normal, view [B,H,W,3] unit
    (view: surface -> eye); lighting with B views. Returns [B,H,W,3] sRGB in [0,1] (linear light clipped
    at 1 before the transfer curve). Differentiable in every input."""
    batch = base.shape[0]
    base_lin = srgb_to_linear(base.clamp(0, 1))
    rough = roughness.clamp(MIN_ROUGHNESS, 1.0)
    alpha2 = (rough * rough) ** 2
    k = (rough + 1) ** 2 / 8
    f0 = 0.04 + (base_lin - 0.04) * metallic
    diffuse = base_lin * (1 - metallic)
    n_v = (normal * view).sum(-1, keepdim=True).clamp_min(1e-4)
    g_v = n_v / (n_v * (1 - k) + k)
    radiance = torch.zeros_like(base_lin)
    for i in range(lighting.light_dir.shape[1]):
        l_dir = lighting.light_dir[:, i].view(batch, 1, 1, 3)
        colour = lighting.light_colour[:, i].view(batch, 1, 1, 3)
        n_l = (normal * l_dir).sum(-1, keepdim=True)
        lit = n_l > 0
        n_l = n_l.clamp_min(1e-4)
        half = F.normalize(view + l_dir, dim=-1)
        n_h = (normal * half).sum(-1, keepdim=True).clamp(0, 1)
        v_h = (view * half).sum(-1, keepdim=True).clamp(0, 1)
        d = alpha2 / (math.pi * (n_h * n_h * (alpha2 - 1) + 1) ** 2)
        g = g_v * n_l / (n_l * (1 - k) + k)
        fresnel = f0 + (1 - f0) * (1 - v_h) ** 5
        specular = math.pi * d * g * fresnel / (4 * n_l * n_v)
        radiance = radiance + torch.where(lit, colour * n_l * (diffuse + specular), torch.zeros_like(radiance))
    # Karis, "Physically Based Shading on Mobile" (2014): the split-sum environment BRDF, fitted.
    c0 = torch.tensor([-1.0, -0.0275, -0.572, 0.022], device=base.device)
    c1 = torch.tensor([1.0, 0.0425, 1.04, -0.04], device=base.device)
    r = rough * c0 + c1  # [B,H,W,4]
    a004 = torch.minimum(r[..., 0:1] ** 2, torch.exp2(-9.28 * n_v)) * r[..., 0:1] + r[..., 1:2]
    env_a, env_b = -1.04 * a004 + r[..., 2:3], 1.04 * a004 + r[..., 3:4]
    ambient = lighting.ambient.view(batch, 1, 1, 3)
    radiance = radiance + ambient * (diffuse + f0 * env_a + env_b)
    return linear_to_srgb(radiance)


__all__ = ["MATERIAL_CHANNELS", "MIN_ROUGHNESS", "PBR_CHANNELS", "PBR_NORMAL_CHANNELS", "PbrLighting",
           "as_pbr_lighting", "corner_normals", "face_tangents", "linear_to_srgb", "material_channels", "perturb_normal",
           "random_pbr_lighting", "shade_pbr", "srgb_to_linear", "studio_lighting"]
