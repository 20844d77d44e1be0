"""The parsers of mesh file formats: OBJ, PLY and glTF/GLB bytes on disk -> a ``nfsd.geometry.mesh.Mesh``
in the file's own axes, not yet checked (``nfsd.geometry.mesh_files.load_mesh`` turns the axes, checks
the mesh and puts the file's name in front of every error).

Conventions: vertex order and count are kept as the file has them (duplicate and unreferenced vertices
too); polygons are fan-triangulated, ``(0, k+1, k+2)``; UVs are per corner, ``uvs[F, 3, 2]`` float64
(per-vertex UVs become ``vertex_uv[triangles]``). Each reader raises ``MeshError`` (without the file's
name) for content it can read but not use; a parser failing on garbage raises what it raises.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import MeshError
from .mesh import Mesh


def read_obj(path: Path) -> Mesh:
    """An OBJ file (parsed here: trimesh would split vertices at UV seams or drop the UVs); several objects
    are read as one mesh, with a warning."""
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


def read_ply(path: Path) -> Mesh:
    """A PLY file, ascii or binary: faces or triangle strips; UVs per corner (face ``texcoord``) or per
    vertex (``s t``, ``u v``, ``texture_u texture_v``, ``texture_s texture_t``)."""
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
    strips = raw.get("tristrips", {}).get("data")
    if index_name is not None:
        rows = _ply_list(face, index_name)
        sizes = np.array([len(r) for r in rows])
        if (sizes < 3).any():
            raise MeshError("a face has fewer than 3 vertices")
        corners = np.concatenate([np.asarray(r, dtype=np.int64) for r in rows])
        fan = _fan_triangulation(sizes)
        mesh = Mesh(positions=positions, triangles=corners[fan])
    elif strips is not None and _ply_has(strips, "vertex_indices"):
        mesh = Mesh(positions=positions, triangles=_strip_triangles(_ply_list(strips, "vertex_indices")))
    else:
        raise MeshError(f"{len(positions)} vertices but no faces (no 'face' or 'tristrips' element): a point cloud?")
    if index_name is not None and _ply_has(face, "texcoord"):
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


def _strip_triangles(rows) -> np.ndarray:
    """PLY ``tristrips`` rows (vertex indices, -1 restarts a strip) -> ``[T, 3]`` triangles, counter-clockwise
    like the strip's first one (every second triangle of a strip is flipped back). Triangles that repeat a
    vertex, which strips use only to turn corners, are left out."""
    triangles = []
    for row in rows:
        row = np.asarray(row, dtype=np.int64).reshape(-1)
        for run in np.split(row, np.flatnonzero(row < 0)):
            run = run[run >= 0]
            if len(run) < 3:
                continue
            k = np.arange(len(run) - 2)
            tri = np.stack([run[k], run[k + 1], run[k + 2]], axis=1)
            odd = k % 2 == 1
            tri[odd] = tri[odd][:, [1, 0, 2]]
            triangles.append(tri)
    tri = np.concatenate(triangles) if triangles else np.zeros((0, 3), np.int64)
    keep = (tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2]) & (tri[:, 0] != tri[:, 2])
    if not keep.any():
        raise MeshError("the 'tristrips' element holds no triangle")
    return tri[keep]


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


def read_gltf(path: Path) -> Mesh:
    """A glTF/GLB scene: one mesh keeps its node transform as ``world_matrix``; several are merged in scene
    space (transforms applied), with a warning."""
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
