"""Meshes as they come, before and after the engine: the ``uvs`` setting and UDIM tiles.

The engine (``TextureJob``) optimizes one square texture on UVs in [0, 1]. Around it:

- ``uvs: unwrap`` drops the file's UVs, so the mesh is unwrapped (xatlas) as one without UVs;
- a mesh laid out in UDIM tiles (``nfsd.geometry.udim``) runs on an atlas of its tiles: the faces'
  UVs move into their tile's slot, the texture is ``n S x n S`` for ``texture_size`` S (the per-tile
  size, as the settings and the report say), and the result is split back into one texture per tile
  (``TextureResult.udim``). ``texture``, ``uvs`` and ``mesh`` of that result stay the atlas's, so
  renders and textured.glb (glTF has no UDIM) use the atlas.

    job = make_job(mesh, config)          # a TextureJob, or a UdimJob around one
    result = job.run(on_progress)         # result.udim: None, or the tiles
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import ConfigError
from ..geometry.texel_density import advice
from ..geometry.udim import UdimLayout, split_atlas, to_atlas, udim_tiles
from ..geometry.unwrap import ensure_uvs, without_uvs
from ..settings import BY_NAME


@dataclass
class UdimTextures:
    """A UDIM run's textures (``TextureResult.udim``).

    Attributes:
        layout: the tiles and their atlas slots.
        textures: tile number -> uint8 ``[S, S, 3]``, row 0 bottom (the atlas's slot).
        uvs: float32 ``[F, 3, 2]`` the mesh's own UDIM UVs (the atlas UVs are ``TextureResult.uvs``).
    """

    layout: UdimLayout
    textures: dict
    uvs: np.ndarray

    @property
    def tiles(self) -> list[int]:
        return list(self.layout.tiles)


def prepare_mesh(mesh, config, on_progress: Callable[[str, float], None] | None = None,
                 cancelled: Callable[[], bool] | None = None, texture_size_given: bool = True):
    """``(mesh, config)`` as the engine gets them: the mesh without its UVs for ``config.uvs == "unwrap"``,
    the texture size of the texel-density rule (``nfsd.geometry.texel_density``: a mesh to unwrap whose
    size was left out gets the size at which its median triangle covers enough texels, and xatlas
    packs for it; a too-small given size adds a warning to ``mesh.warnings`` naming the size to pass),
    then ``ensure_uvs`` (unwrapped in a child process when it has no UVs; ``nfsd.geometry.unwrap``)."""
    if getattr(config, "uvs", "keep") == "unwrap":
        mesh = without_uvs(mesh)
    size, warning = advice(mesh, config.texture_size, texture_size_given)
    if warning:
        mesh = dataclasses.replace(mesh, warnings=[*mesh.warnings, warning])
    resolution = 0  # xatlas's own packing, as before, unless the rule raised the size: pack for that size
    if size != config.texture_size:
        config, resolution = dataclasses.replace(config, texture_size=size), size
        config.validate()
    return ensure_uvs(mesh, on_progress=on_progress, cancelled=cancelled, resolution=resolution), config


def atlas_plan(mesh, config, init_texture=None):
    """``(mesh, config, layout)`` for the engine: for a UDIM mesh a copy laid out on the atlas, the
    config with ``texture_size`` the atlas side, and its layout; else ``mesh, config, None``.

    Raises:
        ConfigError: the atlas would be larger than the largest texture_size (naming the tile count
            and the texture_size to pass), or an initial texture was given (not supported with UDIM yet).
    """
    layout = udim_tiles(mesh.uvs) if mesh.uvs is not None and not mesh.uvs_generated else None
    if layout is None:
        return mesh, config, None
    lo, hi = BY_NAME["texture_size"].range
    step = BY_NAME["texture_size"].multiple_of or 1
    side = layout.atlas_side(config.texture_size)
    count, n = len(layout.tiles), layout.cols
    if side > hi:
        fits = (hi // n) // step * step
        if fits < lo:
            raise ConfigError(f"the mesh uses {count} UDIM tiles, laid out {n}x{n} in one atlas; even at the "
                              f"smallest texture_size ({lo}) that is more than {hi} px: use fewer tiles")
        raise ConfigError(f"the mesh uses {count} UDIM tiles, laid out {n}x{n} in one atlas of {side} px at "
                          f"texture_size {config.texture_size}, above the largest texture ({hi} px); pass "
                          f"--texture-size {fits} (API: \"texture_size\": {fits}) or less")
    if init_texture is not None:
        raise ConfigError(f"the mesh uses {count} UDIM tiles; an initial texture (mode dds, or re-texturing "
                          "selected faces) is not supported with UDIM tiles yet: run without one, or lay the UVs "
                          "out in the 0-1 square")
    atlas_mesh = dataclasses.replace(mesh, uvs=to_atlas(mesh.uvs, layout), warnings=list(mesh.warnings))
    return atlas_mesh, dataclasses.replace(config, texture_size=side), layout


def split_result(result, mesh, config, layout: UdimLayout):
    """The engine's atlas ``result`` of a UDIM ``mesh`` -> the same result with ``udim`` (the tiles and
    the mesh's own UVs), ``config`` the caller's (``texture_size`` per tile) and the layout in ``info``."""
    textures = split_atlas(result.texture, layout)
    info = dict(result.info, udim={"tiles": list(layout.tiles), "atlas": f"{layout.cols}x{layout.rows}",
                                   "tile_size": int(config.texture_size),
                                   "atlas_size": int(result.texture.shape[0])})
    udim = UdimTextures(layout=layout, textures=textures, uvs=np.asarray(mesh.uvs, np.float32))
    return dataclasses.replace(result, config=config, udim=udim, info=info)


class UdimJob:
    """A ``TextureJob`` on a UDIM mesh's atlas whose ``run`` returns the result split per tile.

    ``mesh`` and ``config`` are the caller's (the mesh's own UDIM UVs, texture_size per tile);
    everything else (``cancel``, ``cancelled``, ``snapshot``: the atlas) is the inner job's.
    """

    def __init__(self, job, mesh, config, layout: UdimLayout):
        self.job, self.mesh, self.config, self.layout = job, mesh, config, layout

    def run(self, on_progress=None):
        return split_result(self.job.run(on_progress), self.mesh, self.config, self.layout)

    def __getattr__(self, name):
        return getattr(self.job, name)


def make_job(mesh, config, init_texture=None, on_progress: Callable[[str, float], None] | None = None,
             cancelled: Callable[[], bool] | None = None, texture_size_given: bool = True, init_maps=None):
    """The job for ``mesh`` as it came: ``prepare_mesh``, then a ``TextureJob``, on the atlas of a UDIM
    mesh (a ``UdimJob``). ``on_progress``/``cancelled``: the unwrap's (``ensure_uvs``);
    ``texture_size_given=False``: the texel-density rule may choose the size (``prepare_mesh``)."""
    from .engine import TextureJob

    config.validate()  # before a long unwrap, not after it
    mesh, config = prepare_mesh(mesh, config, on_progress, cancelled, texture_size_given)
    engine_mesh, engine_config, layout = atlas_plan(mesh, config, init_texture)
    job = TextureJob(engine_mesh, engine_config, init_texture=init_texture, init_maps=init_maps)
    return job if layout is None else UdimJob(job, mesh, config, layout)
