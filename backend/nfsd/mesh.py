"""Mesh input: the ``Mesh`` container, file readers, checks, UV unwrapping, normalization.

Conventions (see docs/ARCHITECTURE.md):

- Everything inside the backend uses Blender's axes: right-handed, Z up, the front faces -Y.
- ``positions`` are object-space and stay in the order they came in (Blender's vertex order):
  readers never merge, split, reorder or drop vertices, so per-vertex offsets map 1:1 back.
- ``triangles`` index ``positions``; UVs are per corner ``[F, 3, 2]`` with (0, 0) the bottom-left
  of the texture (OpenGL / nvdiffrast / Blender), so UV seams need no split vertices.
- ``world_matrix`` maps object to world space with column vectors: ``world = M @ [p, 1]``.

File axes (``up_axis="auto"``): OBJ, glTF and GLB are Y-up by convention (Blender's exporters write
Y-up, forward -Z) and are turned to Z-up on read, ``(x, y, z)_file -> (x, -z, y)``; PLY and the wire
``.npz`` are read as Z-up. ``up_axis="Y"`` or ``"Z"`` forces the file's up axis for any format.
"""

from __future__ import annotations

import dataclasses
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import ConfigError, MeshError

__all__ = [
    "BUILTIN_MESHES",
    "Mesh",
    "NormalizeTransform",
    "builtin_mesh",
    "check_mesh",
    "ensure_uvs",
    "load_mesh",
    "read_wire_npz",
    "render_offsets_to_object",
    "save_textured_glb",
    "unit_sphere_transform",
    "write_wire_npz",
]

MESH_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".npz")

# Y-up file axes -> Blender's Z-up: (x, y, z) -> (x, -z, y), a +90 degree turn about X (keeps
# handedness and winding). Its transpose goes back, as glTF wants on write.
_Y_UP_TO_Z_UP = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float64)


def _identity4() -> np.ndarray:
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
    world_matrix: np.ndarray = field(default_factory=_identity4)
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


def check_mesh(mesh: Mesh, max_faces: int = 500_000) -> list[str]:
    """Validate ``mesh`` and collect non-fatal warnings.

    Fatal problems raise ``MeshError``: wrong shapes or dtypes, no vertices or faces, NaN/inf in
    positions, uvs or the world matrix, indices out of range or negative, more than ``max_faces``
    faces, every face degenerate, a world matrix that is not affine or has zero scale.

    Arrays are converted in place to the documented dtypes (float32 / int32) once they pass.

    Warnings (returned, and added to ``mesh.warnings`` without duplicates): degenerate (zero-area)
    faces, non-manifold edges (shared by more than two faces), unreferenced vertices, duplicate
    vertices (same position, different index), UVs outside [0, 1]. Plain numpy does all of these
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
            "reduce it in Blender (Decimate modifier) or raise the face limit"
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
        if outside.any():
            found.append(
                f"{int(outside.sum())} faces have UVs outside [0, 1] (tiles or UDIMs); the texture covers "
                "only the 0-1 square, so re-pack the UVs into it or remove the UV map to let the backend unwrap"
            )
    mesh.warnings.extend(w for w in found if w not in mesh.warnings)
    return found


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
# wire format


_WIRE_ARRAYS = {
    "positions": "[V, 3] float32 object-space vertex positions",
    "triangles": "[F, 3] int32 vertex indices",
    "uvs": "[F, 3, 2] float32 per-corner UVs (optional)",
    "world_matrix": "[4, 4] float32 object -> world matrix (optional)",
    "face_mask": "[F] bool, re-texture only these triangles (optional)",
}


def read_wire_npz(source: str | os.PathLike | bytes | BinaryIO, max_faces: int = 500_000) -> Mesh:
    """Read the wire ``.npz`` the add-on sends (a path, the raw bytes, or a binary file object).

    Arrays: ``positions`` [V, 3] float32 and ``triangles`` [F, 3] int32 (required), ``uvs`` [F, 3, 2]
    float32 and ``world_matrix`` [4, 4] float32 (optional; identity when absent), ``face_mask`` [F]
    bool (optional: the faces to re-texture, ``Mesh.face_mask``; must select one). float64 and int64
    are accepted and converted; any other dtype, an unknown array name, a wrong shape, NaN/inf or an
    index out of range raises ``MeshError`` naming the array. The mesh is checked
    (``check_mesh(mesh, max_faces)``) and its warnings filled.
    """
    if isinstance(source, (str, os.PathLike)):
        try:
            data = Path(source).read_bytes()
        except OSError as e:
            raise MeshError(f"wire mesh: cannot read {source}: {e.strerror or e}") from e
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        data = source.read()
    # np.load would take anything that is not a zip for a pickle; say what it really is.
    if not data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        what = "a single .npy array" if data.startswith(b"\x93NUMPY") else "not a zip archive"
        raise MeshError(f"wire mesh: not a valid .npz archive ({what}); expected np.savez output with named arrays")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            names = list(archive.files)
            unknown = [n for n in names if n not in _WIRE_ARRAYS]
            if unknown:
                raise MeshError(
                    f"wire mesh: unknown array(s) {unknown}; expected only "
                    + ", ".join(f"'{k}' {v}" for k, v in _WIRE_ARRAYS.items())
                )
            for required in ("positions", "triangles"):
                if required not in names:
                    raise MeshError(
                        f"wire mesh: missing array '{required}' ({_WIRE_ARRAYS[required]}); found {names}"
                    )
            arrays = {n: archive[n] for n in names}
    except MeshError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise MeshError("wire mesh: the .npz holds Python objects; only plain numeric arrays are accepted") from e
        raise MeshError(f"wire mesh: not a valid .npz archive ({e})") from e
    except Exception as e:  # zipfile.BadZipFile, OSError, EOFError...
        raise MeshError(f"wire mesh: not a valid .npz archive ({type(e).__name__}: {e})") from e

    mesh = Mesh(
        positions=arrays["positions"],
        triangles=arrays["triangles"],
        uvs=arrays.get("uvs"),
        world_matrix=arrays.get("world_matrix", _identity4()),
    )
    try:
        check_mesh(mesh, max_faces)
    except MeshError as e:
        raise MeshError(f"wire mesh: {e}") from e
    if "face_mask" in arrays:
        mesh.face_mask = _checked_face_mask(arrays["face_mask"], mesh.num_faces)
    return mesh


def _checked_face_mask(mask: np.ndarray, num_faces: int) -> np.ndarray:
    if mask.dtype != np.bool_:
        raise MeshError(f"wire mesh: 'face_mask' must be bool (one per triangle), got dtype {mask.dtype}")
    if mask.shape != (num_faces,):
        raise MeshError(f"wire mesh: 'face_mask' must have shape ({num_faces},) (one per triangle), got {mask.shape}")
    if not mask.any():
        raise MeshError("wire mesh: 'face_mask' selects no triangle; select the faces to re-texture or leave it out")
    return mask


def write_wire_npz(mesh: Mesh, path_or_file: str | os.PathLike | BinaryIO) -> None:
    """Write ``mesh`` in the wire format (compressed ``.npz``; ``uvs`` only when present)."""
    arrays = {
        "positions": np.asarray(mesh.positions, dtype=np.float32),
        "triangles": np.asarray(mesh.triangles, dtype=np.int32),
        "world_matrix": np.asarray(mesh.world_matrix, dtype=np.float32),
    }
    if mesh.uvs is not None:
        arrays["uvs"] = np.asarray(mesh.uvs, dtype=np.float32)
    if mesh.face_mask is not None:
        arrays["face_mask"] = np.asarray(mesh.face_mask, dtype=bool)
    if isinstance(path_or_file, (str, os.PathLike)):
        with open(path_or_file, "wb") as f:
            np.savez_compressed(f, **arrays)
    else:
        np.savez_compressed(path_or_file, **arrays)


# --------------------------------------------------------------------------------------------
# files


def load_mesh(path: str | os.PathLike, up_axis: str = "auto", max_faces: int = 500_000) -> Mesh:
    """Read a mesh file (.obj .ply .glb .gltf, or the wire .npz), check it and return it.

    ``up_axis``: "auto" (OBJ/glTF/GLB are Y-up, PLY and .npz Z-up), "Y" or "Z" to force the file's
    up axis. Y-up files are turned to Blender's Z-up with ``(x, y, z) -> (x, -z, y)``.

    Vertex order and count are kept for every format (duplicate and unreferenced vertices too):
    OBJ is parsed here because trimesh either splits vertices at UV seams or drops the UVs; PLY
    arrays come from trimesh's raw element data for the same reason. Per-vertex UVs (PLY, glTF)
    become per-corner ``uvs[f, k] = vertex_uv[triangles[f, k]]``. Polygons are fan-triangulated.
    A glTF scene with one mesh keeps its node transform as ``world_matrix``; several meshes are
    concatenated in scene space (transforms applied) with a warning.

    Raises ``MeshError`` (message starts with the file name) when the file is missing, of an
    unsupported type, unreadable, or fails ``check_mesh(mesh, max_faces)``.
    """
    path = Path(path)
    axis = str(up_axis).strip().upper()
    if axis not in ("AUTO", "Y", "Z"):
        raise ConfigError(f"up_axis must be 'auto', 'Y' or 'Z', got {up_axis!r}")
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise MeshError(f"{path}: unsupported mesh file type '{suffix}'; use one of {', '.join(MESH_SUFFIXES)}")
    if not path.is_file():
        raise MeshError(f"{path}: file not found")

    if suffix == ".npz":
        try:
            mesh = read_wire_npz(path, max_faces)
        except MeshError as e:
            raise MeshError(f"{path}: {e}") from e
        if axis == "Y":
            _y_up_to_z_up(mesh)
            check_mesh(mesh, max_faces)
        return mesh

    readers = {".obj": _read_obj, ".ply": _read_ply, ".glb": _read_gltf, ".gltf": _read_gltf}
    try:
        mesh = readers[suffix](path)
    except MeshError as e:
        raise MeshError(f"{path}: {e}") from e
    except Exception as e:  # a parser failing on garbage: say which file and why
        raise MeshError(f"{path}: could not read it as {suffix[1:].upper()} ({type(e).__name__}: {e})") from e
    y_up = axis == "Y" or (axis == "AUTO" and suffix in (".obj", ".glb", ".gltf"))
    if y_up:
        _y_up_to_z_up(mesh)
    try:
        check_mesh(mesh, max_faces)
    except MeshError as e:
        raise MeshError(f"{path}: {e}") from e
    return mesh


def _y_up_to_z_up(mesh: Mesh) -> None:
    c = _Y_UP_TO_Z_UP
    mesh.positions = (np.asarray(mesh.positions, np.float64) @ c.T).astype(np.float32)
    c4 = np.eye(4)
    c4[:3, :3] = c
    # Positions were turned by C, so the world matrix becomes C M C^-1 (world space turned too).
    mesh.world_matrix = (c4 @ np.asarray(mesh.world_matrix, np.float64) @ c4.T).astype(np.float32)


def _read_obj(path: Path) -> Mesh:
    text = path.read_bytes().decode("utf-8", errors="replace").replace("\\\n", " ")
    verts: list[list[str]] = []
    texcoords: list[list[str]] = []
    corner_v: list[int] = []
    corner_vt: list[int] = []
    polygon_sizes: list[int] = []
    n_objects = 0
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        key = parts[0]
        if key == "v":
            verts.append(parts[1:4])
        elif key == "vt":
            texcoords.append((parts[1:3] + ["0"])[:2])
        elif key == "f":
            corners = parts[1:]
            if len(corners) < 3:
                continue
            for corner in corners:
                refs = corner.split("/")
                vi = int(refs[0])
                corner_v.append(vi - 1 if vi > 0 else len(verts) + vi)
                if len(refs) > 1 and refs[1]:
                    ti = int(refs[1])
                    corner_vt.append(ti - 1 if ti > 0 else len(texcoords) + ti)
                else:
                    corner_vt.append(-1)
            polygon_sizes.append(len(corners))
        elif key == "o":
            n_objects += 1
    if not verts:
        raise MeshError("no vertices ('v' lines) found: is this an OBJ file?")
    if any(len(v) != 3 for v in verts):
        raise MeshError("a 'v' line has fewer than 3 coordinates")
    positions = np.array(verts, dtype=np.float64)
    if not polygon_sizes:
        raise MeshError(f"{len(verts)} vertices but no faces ('f' lines): a point cloud or only edges?")
    corners_v = np.array(corner_v, dtype=np.int64)
    corners_vt = np.array(corner_vt, dtype=np.int64)
    fan = _fan_triangulation(np.array(polygon_sizes))
    triangles = corners_v[fan]
    mesh = Mesh(positions=positions, triangles=triangles)
    has_vt = corners_vt >= 0
    if texcoords and has_vt.all():
        if corners_vt.max() >= len(texcoords):
            raise MeshError(f"a face refers to texture coordinate {corners_vt.max() + 1} but there are only {len(texcoords)} 'vt' lines")
        uv_table = np.array(texcoords, dtype=np.float64)
        mesh.uvs = uv_table[corners_vt[fan]]
    elif has_vt.any():
        mesh.warnings.append("only some faces have texture coordinates; the UV map was ignored")
    if n_objects > 1:
        mesh.warnings.append(f"the OBJ holds {n_objects} objects; they were read as one mesh")
    return mesh


def _fan_triangulation(sizes: np.ndarray) -> np.ndarray:
    """``[T, 3]`` indices into the flat corner list that fan-triangulate polygons of ``sizes``."""
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    n_tris = sizes - 2
    first = np.repeat(starts, n_tris)
    # k-th triangle of a polygon: corners (0, k+1, k+2)
    k = np.arange(n_tris.sum()) - np.repeat(np.cumsum(n_tris) - n_tris, n_tris)
    return np.stack([first, first + k + 1, first + k + 2], axis=1)


_PLY_UV_NAMES = (("s", "t"), ("u", "v"), ("texture_u", "texture_v"), ("texture_s", "texture_t"))


def _read_ply(path: Path) -> Mesh:
    import trimesh

    # trimesh parses the format (ascii / binary, any property layout) but welds, drops unreferenced
    # vertices or splits at UV seams when it builds its mesh, so take its raw element data instead.
    loaded = trimesh.load(str(path), file_type="ply", process=False, fix_texture=False)
    raw = getattr(loaded, "metadata", {}).get("_ply_raw")
    if raw is None or "vertex" not in raw:
        raise MeshError("no 'vertex' element found: is this a PLY mesh?")
    vertex = raw["vertex"]["data"]
    positions = np.stack([_ply_scalar(vertex, a) for a in "xyz"], axis=1).astype(np.float64)
    face = raw.get("face", {}).get("data")
    index_name = next((n for n in ("vertex_indices", "vertex_index") if face is not None and _ply_has(face, n)), None)
    if index_name is None:
        raise MeshError(f"{len(positions)} vertices but no faces: a point cloud?")
    rows = _ply_list(face, index_name)
    sizes = np.array([len(r) for r in rows])
    if (sizes < 3).any():
        raise MeshError("a face has fewer than 3 vertices")
    corners = np.concatenate([np.asarray(r, dtype=np.int64) for r in rows])
    fan = _fan_triangulation(sizes)
    mesh = Mesh(positions=positions, triangles=corners[fan])
    if _ply_has(face, "texcoord"):
        coords = _ply_list(face, "texcoord")
        if any(len(c) != 2 * s for c, s in zip(coords, sizes)):
            raise MeshError("face 'texcoord' lists do not hold two numbers per face corner")
        corner_uv = np.concatenate([np.asarray(c, dtype=np.float64) for c in coords]).reshape(-1, 2)
        mesh.uvs = corner_uv[fan]
    else:
        for u_name, v_name in _PLY_UV_NAMES:
            if _ply_has(vertex, u_name) and _ply_has(vertex, v_name):
                vertex_uv = np.stack([_ply_scalar(vertex, u_name), _ply_scalar(vertex, v_name)], axis=1)
                mesh.uvs = vertex_uv.astype(np.float64)[mesh.triangles]
                break
    return mesh


def _ply_has(data, name: str) -> bool:
    names = data.dtype.names if isinstance(data, np.ndarray) else data.keys()
    return name in (names or ())


def _ply_scalar(data, name: str) -> np.ndarray:
    return np.asarray(data[name]).reshape(-1)


def _ply_list(data, name: str) -> list | np.ndarray:
    """Rows of a PLY list property, whichever layout trimesh returned it in."""
    col = np.asarray(data[name])
    if col.dtype.names:  # binary with a fixed count: structured (count, list)
        col = col[col.dtype.names[-1]]
    if col.dtype == object:
        return [np.asarray(r).reshape(-1) for r in col]
    return col.reshape(len(col), -1)


def _read_gltf(path: Path) -> Mesh:
    import trimesh

    scene = trimesh.load_scene(str(path), process=False)
    parts = []
    skipped = 0
    for node in scene.graph.nodes_geometry:
        transform, geometry_name = scene.graph[node]
        geometry = scene.geometry[geometry_name]
        if not isinstance(geometry, trimesh.Trimesh) or len(geometry.faces) == 0:
            skipped += 1
            continue
        uv = getattr(geometry.visual, "uv", None)
        if uv is not None and len(uv) != len(geometry.vertices):
            uv = None
        parts.append((np.asarray(transform, np.float64), geometry, uv))
    if not parts:
        raise MeshError("the file holds no triangle mesh")
    warnings = []
    if skipped:
        warnings.append(f"{skipped} non-triangle geometries (points, lines) were ignored")
    if len(parts) == 1:
        transform, geometry, uv = parts[0]
        mesh = Mesh(
            positions=np.asarray(geometry.vertices, np.float64),
            triangles=np.asarray(geometry.faces, np.int64),
            world_matrix=transform.astype(np.float32),
        )
        if uv is not None:
            mesh.uvs = np.asarray(uv, np.float64)[mesh.triangles]
    else:
        positions, triangles, uvs = [], [], []
        offset = 0
        for transform, geometry, uv in parts:
            v = np.asarray(geometry.vertices, np.float64)
            positions.append(v @ transform[:3, :3].T + transform[:3, 3])
            faces = np.asarray(geometry.faces, np.int64)
            triangles.append(faces + offset)
            uvs.append(None if uv is None else np.asarray(uv, np.float64)[faces])
            offset += len(v)
        mesh = Mesh(positions=np.concatenate(positions), triangles=np.concatenate(triangles))
        if all(u is not None for u in uvs):
            mesh.uvs = np.concatenate(uvs)
        elif any(u is not None for u in uvs):
            warnings.append("only some meshes have UVs; the UV maps were ignored")
        warnings.append(
            f"the file holds {len(parts)} meshes; they were merged into one in scene space "
            "(their transforms applied), so offsets refer to the merged vertices"
        )
    mesh.warnings.extend(warnings)
    return mesh


# --------------------------------------------------------------------------------------------
# UVs


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


# --------------------------------------------------------------------------------------------
# export


def save_textured_glb(mesh: Mesh, texture: np.ndarray, path: str | os.PathLike, offsets: np.ndarray | None = None) -> None:
    """Write ``mesh`` with ``texture`` as a binary glTF (GLB) for any viewer.

    Args:
        mesh: a mesh with ``uvs`` (call ``ensure_uvs`` first).
        texture: ``[H, W, 3]`` (or RGBA ``[H, W, 4]``) uint8 sRGB albedo, row 0 = BOTTOM (v = 0).
        path: output file.
        offsets: optional ``[V, 3]`` object-space vertex offsets added before the world matrix.

    Positions are written in world space turned to glTF's Y-up (``(x, y, z) -> (x, z, -y)``).
    Vertices are split where corners differ in UV or normal (glTF has one UV per vertex). Normals
    are smooth per Blender vertex, except at corners more than 40 degrees off that smooth normal
    (a cube's edges), which take their face's normal. The material is unlit-looking PBR albedo
    (metallic 0, roughness 1).
    """
    import trimesh
    from PIL import Image

    if mesh.uvs is None:
        raise MeshError("the mesh has no UVs to lay the texture on; call ensure_uvs first")
    tex = np.asarray(texture)
    if tex.dtype != np.uint8 or tex.ndim != 3 or tex.shape[2] not in (3, 4):
        raise MeshError(f"texture must be uint8 [H, W, 3] (or [H, W, 4]); got {tex.dtype} {list(tex.shape)}")
    local = np.asarray(mesh.positions, np.float64)
    if offsets is not None:
        off = np.asarray(offsets, np.float64)
        if off.shape != local.shape:
            raise MeshError(f"offsets have shape {list(off.shape)}; expected {list(local.shape)}")
        local = local + off
    m = np.asarray(mesh.world_matrix, np.float64)
    world = (local @ m[:3, :3].T + m[:3, 3]) @ _Y_UP_TO_Z_UP  # row vectors: p @ C == C^T p, Z-up -> Y-up
    tri = np.asarray(mesh.triangles, np.int64)

    face_n = np.cross(world[tri[:, 1]] - world[tri[:, 0]], world[tri[:, 2]] - world[tri[:, 0]])
    vert_n = np.zeros_like(world)
    for k in range(3):
        np.add.at(vert_n, tri[:, k], face_n)  # area-weighted
    face_n = _normalized(face_n)
    corner_n = _normalized(vert_n)[tri]  # [F, 3, 3]
    sharp = np.einsum("fkc,fc->fk", corner_n, face_n) < np.cos(np.radians(40.0))
    corner_n = np.where(sharp[..., None], face_n[:, None, :], corner_n)

    corner_uv = np.asarray(mesh.uvs, np.float64)
    keys = np.concatenate([tri.reshape(-1, 1), corner_uv.reshape(-1, 2), np.round(corner_n.reshape(-1, 3), 6)], axis=1)
    unique_keys, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    vertex_of = unique_keys[:, 0].astype(np.int64)
    out_normals = corner_n.reshape(-1, 3)[first]

    image = Image.fromarray(np.ascontiguousarray(tex[::-1]))  # PNG inside the GLB stores row 0 at the top
    material = trimesh.visual.material.PBRMaterial(
        baseColorTexture=image, metallicFactor=0.0, roughnessFactor=1.0, doubleSided=False
    )
    out = trimesh.Trimesh(
        vertices=world[vertex_of],
        faces=inverse.reshape(-1, 3),
        visual=trimesh.visual.TextureVisuals(uv=unique_keys[:, 1:3], material=material),
        process=False,
    )
    out.vertex_normals = out_normals
    # trimesh writes glTF's top-left UV origin itself (v -> 1 - v).
    data = out.export(file_type="glb", include_normals=True)
    Path(path).write_bytes(data)


def _normalized(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(n > 0, n, 1.0)


# --------------------------------------------------------------------------------------------
# built-in meshes

BUILTIN_MESHES: tuple[str, ...] = ("default", "blob", "sphere", "cube")


def builtin_mesh(name: str = "default") -> Mesh:
    """A small generated mesh with UVs, in Blender's axes, about 2 units across.

    - ``"blob"`` (also ``"default"``): a rounded head with a nose on -Y (its front) and two ears on
      top, 3968 faces, latitude-longitude UVs with the seam at the back (+Y).
    - ``"sphere"``: a UV sphere of radius 1, 2208 faces, the same UV layout.
    - ``"cube"``: the cube [-1, 1]^3, each side an 8x8 grid of quads (768 faces), vertices shared
      across edges like Blender's cube, each side in its own cell of a 3x2 UV layout.
    """
    key = str(name).strip().lower()
    if key in ("default", "blob"):
        return _latlong_mesh(64, 32, _blob_radius)
    if key == "sphere":
        return _latlong_mesh(48, 24, lambda d: np.ones(len(d)))
    if key == "cube":
        return _cube_mesh(8)
    raise MeshError(f"unknown built-in mesh {name!r}; choose one of {', '.join(BUILTIN_MESHES)}")


def _blob_radius(d: np.ndarray) -> np.ndarray:
    def bump(axis, amplitude, width):
        axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
        angle = np.arccos(np.clip(d @ axis, -1.0, 1.0))
        return amplitude * np.exp(-0.5 * (angle / width) ** 2)

    return (
        1.0
        + bump([0.0, -1.0, -0.1], 0.45, 0.22)  # nose, the front
        + bump([0.55, 0.05, 0.85], 0.3, 0.16)  # ears
        + bump([-0.55, 0.05, 0.85], 0.3, 0.16)
        - 0.12 * np.clip(-d[:, 2], 0.0, 1.0) ** 2  # a slightly flatter chin
    )


def _latlong_mesh(n_lon: int, n_lat: int, radius) -> Mesh:
    """Latitude-longitude sphere, poles as single vertices; ``radius(dirs [N,3]) -> [N]``.

    u runs around Z with u = 0.5 at the front (-Y) and the seam at the back; it grows to the right
    seen from outside, v grows with height, so the texture is not mirrored.
    """
    theta = np.pi * np.arange(1, n_lat) / n_lat  # polar angle of the rings, from +Z
    phi = 2 * np.pi * np.arange(n_lon) / n_lon
    st, ct = np.sin(theta)[:, None], np.cos(theta)[:, None]
    ring = np.stack([-st * np.sin(phi), st * np.cos(phi), np.broadcast_to(ct, (n_lat - 1, n_lon))], axis=-1)
    dirs = np.concatenate([[[0.0, 0.0, 1.0]], ring.reshape(-1, 3), [[0.0, 0.0, -1.0]]])
    positions = dirs * radius(dirs)[:, None]
    north, south = 0, len(dirs) - 1

    def vid(i, j):  # ring i (0-based, from the top), column j (wraps)
        return 1 + i * n_lon + (j % n_lon)

    tris, uvs = [], []
    for i in range(n_lat):
        v_top, v_bot = 1 - i / n_lat, 1 - (i + 1) / n_lat
        for j in range(n_lon):
            u0, u1 = j / n_lon, (j + 1) / n_lon
            if i == 0:
                tris.append((vid(0, j), vid(0, j + 1), north))
                uvs.append(((u0, v_bot), (u1, v_bot), ((u0 + u1) / 2, 1.0)))
            elif i == n_lat - 1:
                tris.append((south, vid(i - 1, j + 1), vid(i - 1, j)))
                uvs.append((((u0 + u1) / 2, 0.0), (u1, v_top), (u0, v_top)))
            else:
                a, b, c, d = vid(i - 1, j), vid(i - 1, j + 1), vid(i, j + 1), vid(i, j)
                tris += [(d, c, b), (d, b, a)]
                uvs += [((u0, v_bot), (u1, v_bot), (u1, v_top)), ((u0, v_bot), (u1, v_top), (u0, v_top))]
    return Mesh(
        positions=positions.astype(np.float32),
        triangles=np.array(tris, np.int32),
        uvs=np.array(uvs, np.float32),
    )


def _cube_mesh(n: int) -> Mesh:
    # (origin, right, up) in grid units with right x up = outward, and the side's (column, row) in
    # a 3x2 UV layout; right/up map to +u/+v so every side reads unmirrored from outside.
    X, Y, Z = np.eye(3, dtype=np.int64)
    sides = [
        ((0, 0, 0), X, Z, (0, 1)),  # front  -Y
        ((n, 0, 0), Y, Z, (1, 1)),  # right  +X
        ((n, n, 0), -X, Z, (2, 1)),  # back   +Y
        ((0, n, 0), -Y, Z, (0, 0)),  # left   -X
        ((0, 0, n), X, Y, (1, 0)),  # top    +Z
        ((0, n, 0), X, -Y, (2, 0)),  # bottom -Z
    ]
    margin = 0.02
    a, b = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    grid_points, tris, uvs = [], [], []
    for origin, right, up, (col, row) in sides:
        pts = np.asarray(origin) + a[..., None] * right + b[..., None] * up  # [n+1, n+1, 3] ints
        uv = np.stack([(col + margin + (1 - 2 * margin) * a / n) / 3, (row + margin + (1 - 2 * margin) * b / n) / 2], -1)
        base = len(grid_points) * (n + 1) ** 2
        grid_points.append(pts.reshape(-1, 3))
        for i in range(n):
            for j in range(n):
                c00, c10, c11, c01 = (i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1)
                for t in ((c00, c10, c11), (c00, c11, c01)):
                    tris.append([base + p * (n + 1) + q for p, q in t])
                    uvs.append([uv[p, q] for p, q in t])
    all_points = np.concatenate(grid_points)
    unique, inverse = np.unique(all_points, axis=0, return_inverse=True)  # weld shared edges exactly
    return Mesh(
        positions=(unique / n * 2.0 - 1.0).astype(np.float32),
        triangles=inverse.reshape(-1)[np.array(tris)].astype(np.int32),
        uvs=np.array(uvs, np.float32),
    )
