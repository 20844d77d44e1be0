"""UV unwrapping of meshes that come without UVs (xatlas)."""

from __future__ import annotations

import dataclasses

import numpy as np

from .errors import MeshError
from .mesh import Mesh


def ensure_uvs(mesh: Mesh) -> Mesh:
    """Return ``mesh`` itself when it has UVs, else a copy unwrapped with xatlas.

    The copy shares ``positions`` and ``triangles`` (untouched, same order) and gets per-corner
    ``uvs`` [F, 3, 2] float32 in [0, 1] in a single atlas, ``uvs_generated=True``. Charts are cut
    in world space so a non-uniformly scaled object gets even texel density where it is rendered.
    Degenerate faces get zero-area UVs. Chart growing is not refined (``max_iterations=0``): about
    twice as fast on large meshes, and seams matter little for an optimized texture.
    """
    if mesh.uvs is not None:
        return mesh
    import xatlas

    atlas = xatlas.Atlas()
    try:
        atlas.add_mesh(
            np.ascontiguousarray(mesh.world_positions(), dtype=np.float32),
            np.ascontiguousarray(mesh.triangles, dtype=np.uint32),
        )
        chart_options = xatlas.ChartOptions()
        chart_options.max_iterations = 0
        pack_options = xatlas.PackOptions()
        pack_options.padding = 2  # texels between charts, so bilinear lookups and mipmaps stay inside
        atlas.generate(chart_options, pack_options)
    except Exception as e:
        raise MeshError(f"UV unwrapping (xatlas) failed: {e}; add a UV map in Blender (Smart UV Project)") from e
    _, indices, uv = atlas[0]
    if atlas.atlas_count != 1 or indices.shape != mesh.triangles.shape:
        raise MeshError("UV unwrapping (xatlas) did not produce a single atlas; add a UV map in Blender (Smart UV Project)")
    uvs = np.clip(uv[indices.astype(np.int64)], 0.0, 1.0).astype(np.float32)
    return dataclasses.replace(mesh, uvs=uvs, uvs_generated=True, warnings=list(mesh.warnings))
