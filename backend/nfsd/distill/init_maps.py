"""A pbr run's initial maps: the roughness, metallic (and normal) images to continue from, beside the initial
texture (the base colour), e.g. a previous pbr run's ``TextureResult.maps``.

Maps are uint8 with row 0 at the BOTTOM (as the engine holds textures; ``decode_png`` flips PNG files), the
size ``[H, W]`` of the initial texture: ``roughness`` and ``metallic`` ``[H, W]`` (linear 0..255; a
``[H, W, C]`` grey image is read from its first channel), ``normal`` ``[H, W, 3]`` tangent space, OpenGL
convention, each component as (n + 1) / 2 in 0..255 (the run optimizes x and y; outside a face mask the
given bytes are kept, z included).
A map left out starts from ``nfsd.distill.material``'s constants, as without initial maps.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError

MAP_NAMES = ("roughness", "metallic", "normal")


def checked_init_maps(maps: dict | None, init_texture, material: str, normal_map: bool) -> dict | None:
    """``maps`` (name -> uint8 array) as the engine uses them: the map's own channels, uint8, each the size
    of ``init_texture``. ``ConfigError`` naming the map when it cannot be used; None for no maps."""
    if not maps:
        return None
    unknown = sorted(set(maps) - set(MAP_NAMES))
    if unknown:
        raise ConfigError(f"unknown initial map(s) {unknown}; give roughness, metallic or normal")
    if init_texture is None:
        raise ConfigError(f"initial maps ({', '.join(sorted(maps))}) continue a pbr texture: give its base colour "
                          "as the initial texture too")
    if material != "pbr":
        raise ConfigError(f"initial maps ({', '.join(sorted(maps))}) are maps of the pbr material: run with "
                          "material 'pbr' or leave them out")
    if "normal" in maps and not normal_map:
        raise ConfigError("an initial normal map needs normal_map on (or leave the normal map out)")
    size = np.asarray(init_texture).shape[:2]
    out = {}
    for name, image in maps.items():
        arr = np.asarray(image)
        if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or arr.shape[:2] != size:
            raise ConfigError(f"initial {name} map: expected uint8 {size[1]}x{size[0]} (the initial texture's size), "
                              f"got {arr.dtype} {arr.shape}")
        if name == "normal":
            if arr.ndim != 3 or arr.shape[2] < 3:
                raise ConfigError(f"initial normal map: expected an RGB image, got shape {arr.shape}")
            out[name] = np.ascontiguousarray(arr[..., :3])
        else:
            out[name] = np.ascontiguousarray(arr if arr.ndim == 2 else arr[..., 0])
    return out


def start_channels(maps: dict | None, size: int) -> dict:
    """The maps as the material texture's channels (``MATERIAL_CHANNELS`` names): float32 ``[size, size, k]`` in
    [0, 1] (k = 1 for roughness and metallic, 2 for the normal's x, y), resized bilinearly like the initial
    texture (``from_uint8``) when ``size`` differs. ``maps``: ``checked_init_maps``' output."""
    out = {}
    for name, arr in (maps or {}).items():
        t = torch.from_numpy(arr.astype(np.float32) / 255.0)
        t = t[..., None] if t.ndim == 2 else t[..., :2]  # the normal's x, y
        if t.shape[0] != size or t.shape[1] != size:
            t = F.interpolate(t.permute(2, 0, 1)[None], size=(size, size), mode="bilinear", align_corners=False,
                              antialias=True)[0].permute(1, 2, 0)
        out[name] = t.clamp(0, 1)
    return out


def keep_outside(maps: dict, init_maps: dict | None, keep: np.ndarray) -> dict:
    """A face-masked pbr result's ``maps`` (``split_maps``) with the texels where ``keep`` (``[S, S]`` bool) set
    to the initial maps' own bytes (``checked_init_maps``' output, the same size); returns ``maps``."""
    for name, arr in (init_maps or {}).items():
        if name in maps:
            maps[name][keep] = arr[keep]
    return maps


__all__ = ["MAP_NAMES", "checked_init_maps", "keep_outside", "start_channels"]
