"""The ``Mesh`` container, its checks, and normalization to render space.

File readers are in ``nfsd.geometry.mesh_files`` (and its parsers in ``mesh_readers``), the GLB writer
in ``nfsd.geometry.glb_export``, the UV unwrap in ``nfsd.geometry.unwrap``, the generated meshes in
``nfsd.geometry.builtin_meshes``, the add-on's wire .npz in ``nfsd.geometry.wire``.

Conventions (see docs/ARCHITECTURE.md):

- Everything inside the backend uses Blender's axes: right-handed, Z up, the front faces -Y.
- ``positions`` are object-space and stay in the order they came in (Blender's vertex order):
  readers never merge, split, reorder or drop vertices, so per-vertex offsets map 1:1 back.
- ``triangles`` index ``positions``; UVs are per corner ``[F, 3, 2]`` with (0, 0) the bottom-left
  of the texture (OpenGL / nvdiffrast / Blender), so UV seams need no split vertices.
- ``world_matrix`` maps object to world space with column vectors: ``world = M @ [p, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import MeshError
from ..limits import LIMITS
from .udim import udim_tiles

__all__ = [
    "Mesh",
    "NormalizeTransform",
    "check_mesh",
    "framing_transform",
    "render_offsets_to_object",
    "unit_sphere_transform",
]

DEFAULT_MAX_FACES = int(LIMITS["max_faces"])  # triangles; nfsd texture/serve --max-faces default


def identity4() -> np.ndarray:
    return np.eye(4, dtype=np.float32)


@dataclass
class Mesh:
    """A triangle mesh as the backend uses it.

    Attributes:
        positions: ``[V, 3]`` float32 object-space vertex positions, Blender's order (never merged).
        triangles: ``[F, 3]`` int32 indices into ``positions``, counter-clockwise seen from outside.
        uvs: ``[F, 3, 2]`` float32 per-corner UVs, (0, 0) = bottom-left of the texture; or None.
        world_matrix: ``[4, 4]`` float32 object -> world, column vectors (``world = M @ [p, 1]``).
        uvs_generated: True when ``ensure_uvs`` unwrapped the mesh (the add-on then stores the UVs
            as a new UV map "NFSD_UV" instead of overwriting the active one).
        warnings: non-fatal problems found by ``check_mesh`` or the reader, one sentence each.
        face_mask: ``[F]`` bool, the faces to re-texture (the wire's optional ``face_mask``); None = all.
    """

    positions: np.ndarray
    triangles: np.ndarray
    uvs: np.ndarray | None = None
    world_matrix: np.ndarray = field(default_factory=identity4)
    uvs_generated: bool = False
    warnings: list[str] = field(default_factory=list)
    face_mask: np.ndarray | None = None

    @property
    def num_vertices(self) -> int:
        return int(self.positions.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.triangles.shape[0])

    def world_positions(self) -> np.ndarray:
        """``[V, 3]`` float32 world-space positions (``world_matrix`` applied)."""
        m = np.asarray(self.world_matrix, dtype=np.float64)
        p = np.asarray(self.positions, dtype=np.float64)
        return (p @ m[:3, :3].T + m[:3, 3]).astype(np.float32)


# --------------------------------------------------------------------------------------------
# checks


def check_mesh(mesh: Mesh, max_faces: int = DEFAULT_MAX_FACES) -> list[str]:
    """Validate ``mesh`` and collect non-fatal warnings.

    Fatal problems raise ``MeshError``: wrong shapes or dtypes, no vertices or faces, NaN/inf in
    positions, uvs or the world matrix, indices out of range or negative, more than ``max_faces``
    faces, every face degenerate, a world matrix that is not affine or has zero scale.

    Arrays are converted in place to the documented dtypes (float32 / int32) once they pass.

    Warnings (returned, and added to ``mesh.warnings`` without duplicates): degenerate (zero-area)
    faces, non-manifold edges (shared by more than two faces), unreferenced vertices, duplicate
    vertices (same position, different index), UVs outside [0, 1] unless they are a UDIM layout
    (``nfsd.geometry.udim.udim_tiles``). Plain numpy does all of these
    exactly on the untouched index buffer, so no mesh library (which would weld or reorder) is
    involved.
    """
    pos = _checked_array(mesh.positions, "positions", "f", (None, 3), "[V, 3] float32")
    tri = _checked_array(mesh.triangles, "triangles", "i", (None, 3), "[F, 3] int32")
    if pos.shape[0] == 0:
        raise MeshError("the mesh is empty: 'positions' has no vertices")
    if tri.shape[0] == 0:
        raise MeshError("the mesh has no faces: 'triangles' is empty (is it a point cloud or only edges?)")
    if tri.shape[0] > max_faces:
        raise MeshError(
            f"the mesh has {tri.shape[0]:,} faces, more than the limit of {max_faces:,}; "
            "reduce it in Blender (Decimate modifier) or raise the limit with --max-faces"
        )
    bad = ~np.isfinite(pos).all(axis=1)
    if bad.any():
        raise MeshError(
            f"'positions' has {int(bad.sum())} vertices with NaN or infinite coordinates "
            f"(first: vertex {int(np.argmax(bad))})"
        )
    lo, hi = int(tri.min()), int(tri.max())
    if lo < 0:
        raise MeshError(f"'triangles' has a negative vertex index ({lo}); indices must be 0..{pos.shape[0] - 1}")
    if hi >= pos.shape[0]:
        raise MeshError(
            f"'triangles' index {hi} is out of range: the mesh has {pos.shape[0]} vertices "
            f"(indices must be 0..{pos.shape[0] - 1})"
        )
    uvs = mesh.uvs
    if uvs is not None:
        uvs = _checked_array(uvs, "uvs", "f", (tri.shape[0], 3, 2), f"[F, 3, 2] float32 with F = {tri.shape[0]}")
        if not np.isfinite(uvs).all():
            raise MeshError("'uvs' contains NaN or infinite values; fix the UV map or remove it to let the backend unwrap")
    wm = _checked_array(mesh.world_matrix, "world_matrix", "f", (4, 4), "[4, 4] float32")
    if not np.isfinite(wm).all():
        raise MeshError("'world_matrix' contains NaN or infinite values")
    if not np.allclose(wm[3], [0, 0, 0, 1], atol=1e-6):
        raise MeshError(
            f"'world_matrix' is not an affine transform: its bottom row is {wm[3].tolist()}, expected "
            "[0, 0, 0, 1] (was it sent transposed? the translation belongs in the last column)"
        )
    if abs(np.linalg.det(wm[:3, :3].astype(np.float64))) < 1e-12:
        raise MeshError("'world_matrix' has zero scale on some axis; apply or fix the object's scale in Blender")

    mesh.positions = pos.astype(np.float32, copy=False)
    mesh.triangles = tri.astype(np.int32, copy=False)
    mesh.uvs = None if uvs is None else uvs.astype(np.float32, copy=False)
    mesh.world_matrix = wm.astype(np.float32, copy=False)

    found: list[str] = []
    p = mesh.positions.astype(np.float64)
    t = mesh.triangles
    diag = float(np.linalg.norm(p.max(axis=0) - p.min(axis=0)))
    area2 = np.linalg.norm(np.cross(p[t[:, 1]] - p[t[:, 0]], p[t[:, 2]] - p[t[:, 0]]), axis=1)
    degenerate = area2 <= 1e-12 * diag * diag
    if degenerate.all():
        raise MeshError("every face of the mesh is degenerate (zero area): there is no surface to texture")
    if degenerate.any():
        found.append(
            f"{int(degenerate.sum())} degenerate (zero-area) faces, e.g. face {int(np.argmax(degenerate))}; "
            "they get no texture (Mesh > Clean Up > Delete Loose / Degenerate Dissolve removes them)"
        )
    proper = t[(t[:, 0] != t[:, 1]) & (t[:, 1] != t[:, 2]) & (t[:, 0] != t[:, 2])]
    edges = np.sort(proper[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    _, edge_count = np.unique(edges, axis=0, return_counts=True)
    n_nonmanifold = int((edge_count > 2).sum())
    if n_nonmanifold:
        found.append(
            f"{n_nonmanifold} non-manifold edges (shared by more than two faces); texturing works, "
            "vertex offsets may pull those faces apart"
        )
    used = np.zeros(len(p), dtype=bool)
    used[t.reshape(-1)] = True
    if not used.all():
        found.append(
            f"{int((~used).sum())} unreferenced vertices (used by no face); they are kept so offsets "
            "still match Blender's vertices, but get no texture"
        )
    _, inverse, counts = np.unique(mesh.positions, axis=0, return_inverse=True, return_counts=True)
    n_dup = int((counts[inverse.reshape(-1)] > 1).sum() - (counts > 1).sum())
    if n_dup:
        found.append(
            f"{n_dup} duplicate vertices (same position as another vertex); offsets can tear the "
            "surface open there (Mesh > Clean Up > Merge by Distance welds them)"
        )
    if mesh.uvs is not None:
        outside = ((mesh.uvs < 0) | (mesh.uvs > 1)).any(axis=(1, 2))
        if outside.any() and udim_tiles(mesh.uvs) is None:  # UDIM tiles get a texture each (geometry.udim)
            found.append(outside_uvs_warning(int(outside.sum())))
    mesh.warnings.extend(w for w in found if w not in mesh.warnings)
    return found


def outside_uvs_warning(faces: int) -> str:
    """The warning for ``faces`` faces with UVs outside [0, 1] that are no UDIM layout."""
    return (f"{faces} faces have UVs outside [0, 1] and are not laid out in UDIM tiles; the texture covers only "
            "the 0-1 square, so re-pack the UVs into it, pass --uvs unwrap (API: \"uvs\": \"unwrap\") to unwrap "
            "it, or lay it out in UDIM tiles (every face inside one tile, 1001 and up)")


def _checked_array(value, name: str, kind: str, shape: tuple, expected: str) -> np.ndarray:
    """``value`` as an ndarray of float (kind "f") or integer (kind "i") dtype and the given shape."""
    if value is None:
        raise MeshError(f"'{name}' is missing; expected {expected}")
    arr = np.asarray(value)
    if kind == "f" and arr.dtype not in (np.float32, np.float64):
        raise MeshError(f"'{name}' has dtype {arr.dtype}; expected {expected} (float64 is converted)")
    if kind == "i" and arr.dtype not in (np.int32, np.int64):
        raise MeshError(f"'{name}' has dtype {arr.dtype}; expected {expected} (int64 is converted)")
    if arr.ndim != len(shape) or any(want is not None and got != want for got, want in zip(arr.shape, shape)):
        raise MeshError(f"'{name}' has shape {list(arr.shape)}; expected {expected}")
    return arr


# --------------------------------------------------------------------------------------------
# normalization


@dataclass
class NormalizeTransform:
    """World -> render space: ``render = (world - center) * scale`` (axes kept: Z up, front -Y).

    Attributes:
        center: ``[3]`` float64 world-space point that goes to the origin.
        scale: world units -> render units.
    """

    center: np.ndarray
    scale: float

    def apply(self, world_points: np.ndarray) -> np.ndarray:
        """``[..., 3]`` world points -> float32 render-space points."""
        return ((np.asarray(world_points, np.float64) - self.center) * self.scale).astype(np.float32)

    def invert(self, render_points: np.ndarray) -> np.ndarray:
        """``[..., 3]`` render-space points -> float32 world points."""
        return (np.asarray(render_points, np.float64) / self.scale + self.center).astype(np.float32)


def unit_sphere_transform(world_positions: np.ndarray) -> NormalizeTransform:
    """Fit ``[V, 3]`` points into the unit sphere: bounding-box centre to the origin, farthest point
    at radius 1. Pass only referenced vertices if loose ones should not count."""
    p = np.asarray(world_positions, np.float64).reshape(-1, 3)
    if len(p) == 0 or not np.isfinite(p).all():
        raise MeshError("cannot normalize: no vertices, or NaN/infinite positions")
    center = 0.5 * (p.min(axis=0) + p.max(axis=0))
    radius = float(np.linalg.norm(p - center, axis=1).max())
    if radius <= 0.0:
        raise MeshError("cannot normalize: all vertices are at the same point")
    return NormalizeTransform(center=center, scale=1.0 / radius)


def framing_transform(mesh: Mesh) -> NormalizeTransform:
    """``unit_sphere_transform`` of the world positions of the vertices some face uses: a loose vertex
    (kept for Blender's vertex order, drawn by nothing) must not shrink the mesh in every view."""
    world = mesh.world_positions()
    used = np.zeros(len(world), dtype=bool)
    used[np.asarray(mesh.triangles).reshape(-1)] = True
    return unit_sphere_transform(world[used] if used.any() else world)


def render_offsets_to_object(mesh: Mesh, transform: NormalizeTransform, offsets_render) -> np.ndarray:
    """``[V, 3]`` vertex offsets in render space -> ``[V, 3]`` float32 offsets in object space.

    Undoes the normalization scale, then the world matrix's linear part (``inv(M[:3, :3])``);
    translations do not apply to offsets. Adding the result to ``mesh.positions`` moves the world
    positions by exactly ``offsets_render / transform.scale``.
    """
    d = np.asarray(offsets_render, np.float64)
    if d.shape != (mesh.num_vertices, 3):
        raise MeshError(f"offsets have shape {list(d.shape)}; expected [V, 3] with V = {mesh.num_vertices}")
    linear = np.asarray(mesh.world_matrix, np.float64)[:3, :3]
    world = d / transform.scale
    return np.linalg.solve(linear, world.T).T.astype(np.float32)


