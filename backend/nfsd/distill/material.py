"""The pbr ``material`` in the engine: the material texture's start, its regularizers, and its maps.

A pbr run optimizes one texture of ``nfsd.render.shading.material_channels(normal_map)`` channels
(base colour, roughness, metallic[, normal x, y]; layout ``nfsd.render.shading.MATERIAL_CHANNELS``)
through the run's own parametrization, so pyramid, pixels and the surface field, face masks and
initial textures work for it as for a colour texture. Textures ``[S, S, C]`` float in [0, 1], row 0 = bottom.
"""

from __future__ import annotations

import numpy as np
import torch

from ..render.shading import MATERIAL_CHANNELS, material_channels

# Where roughness and metallic start. Metallic starts undecided, leaning dielectric (most surfaces are), and
# ``metallic_binary`` (ramped in over the run) settles it late: started at 0.05 the toy's metal half still had
# a metallic error of 0.75 after 100 steps (0.27 from 0.2), from 0.35 it had 0.05 (`nfsd bench materials`).
START_ROUGHNESS = 0.5
START_METALLIC = 0.35
# With a normal map metallic starts where it starts without one. The normals start flat, so a tilted surface's
# highlights land elsewhere than the target's; a misplaced highlight is best removed by a dimmer, diffuse material
# (metallic down, roughness up), and a weak specular leaves the normals only the diffuse error to learn from, which
# is metallic's error, not theirs: on the toy with its metal half's normals tilted 30 degrees, from 0.35 the normals
# took ~140 steps to arrive and the ramped metallic_binary had settled the metal half at 0 by then (error 0.89-0.95
# at 150 steps). A higher start recovers the toy but makes real prompts metal, as the 0/1 push carries whatever
# the prior leaves alone to the side it starts on (built-in prior, "red and white stripes", 300 steps on the demo
# mesh / 200 on Suzanne): from 0.65 the toy's metal error was 0.10 and Suzanne came out 81% metallic (chrome); from
# 0.5, 0.30 and 25% of the demo mesh; from 0.4, 0.75 and 1%. Plastic that turns chrome harms every run; a metal
# region with strong normal detail read as dielectric harms few, and the artist can paint metallic in Blender.
START_METALLIC_NORMAL_MAP = START_METALLIC


def initial_material(colour: torch.Tensor | None, size: int, normal_map: bool, maps: dict | None = None) -> torch.Tensor:
    """The texture a pbr run starts from: ``colour`` ``[size, size, 3]`` (the initial texture, sRGB; None:
    mid-grey, as an albedo run starts), roughness ``START_ROUGHNESS``, metallic ``START_METALLIC`` (with
    ``normal_map``: ``START_METALLIC_NORMAL_MAP``), a flat normal; ``maps``
    (``nfsd.distill.init_maps.start_channels``: channel name -> ``[size, size, k]``) replace those it names.
    Returns ``[size, size, C]`` float32 in [0, 1], on ``colour``'s device."""
    device = colour.device if colour is not None else None
    out = torch.full((size, size, material_channels(normal_map)), 0.5, device=device)
    if colour is not None:
        out[..., MATERIAL_CHANNELS["base_color"]] = colour.float()
    out[..., MATERIAL_CHANNELS["roughness"]] = START_ROUGHNESS
    out[..., MATERIAL_CHANNELS["metallic"]] = START_METALLIC_NORMAL_MAP if normal_map else START_METALLIC
    for name, channels in (maps or {}).items():  # a continued run: the maps it had
        out[..., MATERIAL_CHANNELS[name]] = channels.to(out.device)
    return out


def regularization(texture: torch.Tensor, covered: torch.Tensor, smoothness: float, binary: float,
                   pixels: int = 1, normal_smoothness: float = 0.0) -> torch.Tensor:
    """The material's priors on itself, a scalar: ``pixels`` x (``smoothness`` x total variation of roughness and
    metallic (mean absolute difference of UV neighbours, both covered) + ``binary`` x mean ``m (1 - m)`` of
    metallic: real surfaces are metal or not + ``normal_smoothness`` x total variation of the normal map's x, y,
    when the texture has one). texture ``[S, S, C]``, covered ``[S, S]`` bool (``uv_coverage``).

    ``pixels``: the pixels a step renders (batch x render_size^2). The distillation loss is a sum over the
    rendered image, so a texel's share of it grows with the pixels that see it; scaled so, the weights act the
    same at any texture and render size."""
    total = texture.new_zeros(())
    if smoothness > 0:
        total = total + smoothness * total_variation(texture[..., 3:5], covered)  # roughness, metallic
    if normal_smoothness > 0 and texture.shape[-1] > 5:
        total = total + normal_smoothness * total_variation(texture[..., MATERIAL_CHANNELS["normal"]], covered)
    if binary > 0:
        m = texture[..., MATERIAL_CHANNELS["metallic"]][..., 0]
        total = total + binary * (m * (1 - m))[covered].mean()
    return total * pixels


def total_variation(maps: torch.Tensor, covered: torch.Tensor) -> torch.Tensor:
    """Mean over covered texels of the absolute differences to their right and upper neighbours (both
    covered), summed over channels: maps ``[S, S, K]``, covered ``[S, S]`` bool -> a scalar."""
    c = covered.float()
    dx = (maps[:, 1:] - maps[:, :-1]).abs().sum(-1) * (c[:, 1:] * c[:, :-1])
    dy = (maps[1:] - maps[:-1]).abs().sum(-1) * (c[1:] * c[:-1])
    return (dx.sum() + dy.sum()) / c.sum().clamp_min(1)


def split_maps(material: np.ndarray) -> tuple[np.ndarray, dict]:
    """A pbr texture as uint8 ``[S, S, C]`` -> ``(base colour [S, S, 3], maps)``: ``TextureResult.texture`` and
    ``.maps`` (``roughness``, ``metallic`` ``[S, S]``; with a normal map ``normal`` ``[S, S, 3]``, the stored x, y
    and z = sqrt(1 - x^2 - y^2), each as (n + 1) / 2 in 0..255). Row order unchanged."""
    material = np.asarray(material, np.uint8)
    base = np.ascontiguousarray(material[..., MATERIAL_CHANNELS["base_color"]])
    maps = {"roughness": np.ascontiguousarray(material[..., 3]), "metallic": np.ascontiguousarray(material[..., 4])}
    if material.shape[-1] > 5:
        xy = material[..., 5:7].astype(np.float32) / 255 * 2 - 1
        z = np.sqrt(np.clip(1 - (xy ** 2).sum(-1, keepdims=True), 0, 1))
        n = np.concatenate([xy, z], -1)
        maps["normal"] = np.clip(np.round((n + 1) / 2 * 255), 0, 255).astype(np.uint8)
    return base, maps


def material_texture(base: np.ndarray, maps: dict) -> torch.Tensor:
    """The inverse of ``split_maps``, to render a result: uint8 base ``[S, S, 3]`` and maps -> float32
    ``[S, S, C]`` in [0, 1] (row order unchanged)."""
    parts = [np.asarray(base)[..., :3], np.asarray(maps["roughness"])[..., None], np.asarray(maps["metallic"])[..., None]]
    if "normal" in maps:
        parts.append(np.asarray(maps["normal"])[..., :2])
    return torch.from_numpy(np.concatenate(parts, -1).astype(np.float32) / 255.0)


__all__ = ["START_METALLIC", "START_METALLIC_NORMAL_MAP", "START_ROUGHNESS", "initial_material", "material_texture",
           "regularization", "split_maps", "total_variation"]
