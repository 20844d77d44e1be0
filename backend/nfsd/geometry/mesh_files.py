"""Mesh files: reading OBJ, PLY, glTF/GLB (and the wire .npz) into a ``nfsd.geometry.mesh.Mesh``, and writing
the textured result as a GLB.

File axes (``up_axis="auto"``): OBJ, glTF and GLB are Y-up by convention (Blender's exporters write
Y-up, forward -Z) and are turned to Z-up on read, ``(x, y, z)_file -> (x, -z, y)``; PLY and the wire
``.npz`` are read as Z-up. ``up_axis="Y"`` or ``"Z"`` forces the file's up axis for any format.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ConfigError, MeshError
from .mesh import DEFAULT_MAX_FACES, Mesh, check_mesh

MESH_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".npz")

# Y-up file axes -> Blender's Z-up: (x, y, z) -> (x, -z, y), a +90 degree turn about X (keeps
# handedness and winding). Its transpose goes back, as glTF wants on write.
_Y_UP_TO_Z_UP = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float64)


def load_mesh(path: str | os.PathLike, up_axis: str = "auto", max_faces: int = DEFAULT_MAX_FACES) -> Mesh:
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
    shown = shown_path(path)
    axis = str(up_axis).strip().upper()
    if axis not in ("AUTO", "Y", "Z"):
        raise ConfigError(f"up_axis must be 'auto', 'Y' or 'Z', got {up_axis!r}")
    if path.is_dir():
        raise MeshError(f"{shown}: is a directory, not a mesh file; name a file ({', '.join(MESH_SUFFIXES)})")
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise MeshError(f"{shown}: unsupported mesh file type {_printable(suffix)!r}; use one of {', '.join(MESH_SUFFIXES)}")
    if not path.exists():
        raise MeshError(f"{shown}: file not found")
    if not path.is_file():
        raise MeshError(f"{shown}: not a regular file (a FIFO, device or socket?); name a mesh file")

    if suffix == ".npz":
        from .wire import read_wire_npz

        try:
            mesh = read_wire_npz(path, max_faces)
        except MeshError as e:
            raise MeshError(f"{shown}: {e}") from e
        if axis == "Y":
            _y_up_to_z_up(mesh)
            check_mesh(mesh, max_faces)
        return mesh

    readers = {".obj": _read_obj, ".ply": _read_ply, ".glb": _read_gltf, ".gltf": _read_gltf}
    try:
        mesh = readers[suffix](path)
    except MeshError as e:
        raise MeshError(f"{shown}: {e}") from e
    except Exception as e:  # a parser failing on garbage: say which file, never what it holds
        raise MeshError(f"{shown}: could not read it as {suffix[1:].upper()} ({_reason(e, suffix[1:].upper())})") from e
    y_up = axis == "Y" or (axis == "AUTO" and suffix in (".obj", ".glb", ".gltf"))
    if y_up:
        _y_up_to_z_up(mesh)
    try:
        check_mesh(mesh, max_faces)
    except MeshError as e:
        raise MeshError(f"{shown}: {e}") from e
    return mesh


def _printable(text: str, limit: int = 120) -> str:
    """``text`` with every non-printable or non-ASCII character escaped, cut to ``limit``: a message
    can never carry terminal escapes."""
    out = "".join(c if (c.isprintable() and c.isascii()) else c.encode("unicode_escape").decode("ascii")
                  for c in text[: limit * 2])
    return out if len(out) <= limit else out[:limit] + "..."


def shown_path(path) -> str:
    """A path as an error message shows it: as is when plain, else quoted with escapes."""
    text = str(path)
    return text if _printable(text, 10_000) == text else f"'{_printable(text, 300)}'"


# Parser errors that quote the file's content (float('<bytes>'), decoding errors): named, never echoed.
_CONTENT_ERRORS = (ValueError, UnicodeError, IndexError, KeyError, TypeError)


def _reason(exc: Exception, kind: str) -> str:
    if isinstance(exc, _CONTENT_ERRORS):
        return f"{type(exc).__name__}: this is not valid {kind} content; is it a {kind} mesh file?"
    return f"{type(exc).__name__}: {_printable(str(exc))}"


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


def save_textured_glb(mesh: Mesh, texture: np.ndarray, path: str | os.PathLike, offsets: np.ndarray | None = None,
                      maps: dict | None = None) -> None:
    """Write ``mesh`` with ``texture`` as a binary glTF (GLB) for any viewer.

    Args:
        mesh: a mesh with ``uvs`` (call ``ensure_uvs`` first).
        texture: ``[H, W, 3]`` (or RGBA ``[H, W, 4]``) uint8 sRGB albedo, row 0 = BOTTOM (v = 0).
        path: output file.
        offsets: optional ``[V, 3]`` object-space vertex offsets added before the world matrix.
        maps: a pbr result's maps (``TextureResult.maps``: ``roughness``, ``metallic`` uint8 ``[H, W]``, optional
            ``normal`` uint8 ``[H, W, 3]``, row 0 bottom): written as the material's metallicRoughness texture
            (glTF's ORM packing: R occlusion 255, G roughness, B metallic; factors 1) and normal texture
            (tangent space, +Y up; viewers derive the tangents, glTF's MikkTSpace rule).

    Positions are written in world space turned to glTF's Y-up (``(x, y, z) -> (x, z, -y)``).
    Vertices are split where corners differ in UV or normal (glTF has one UV per vertex). Normals
    are smooth per Blender vertex, except at corners more than 40 degrees off that smooth normal
    (a cube's edges), which take their face's normal. Without ``maps`` the material is unlit-looking PBR
    albedo (metallic 0, roughness 1).
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
    if maps:
        extra = {"metallicRoughnessTexture": Image.fromarray(np.ascontiguousarray(orm_image(maps)[::-1])),
                 "metallicFactor": 1.0, "roughnessFactor": 1.0}
        if "normal" in maps:
            extra["normalTexture"] = Image.fromarray(np.ascontiguousarray(np.asarray(maps["normal"], np.uint8)[::-1]))
    else:
        extra = {"metallicFactor": 0.0, "roughnessFactor": 1.0}
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=image, doubleSided=False, **extra)
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


def orm_image(maps: dict) -> np.ndarray:
    """glTF's packing of a pbr result's maps: uint8 ``[H, W, 3]`` = (occlusion 255, roughness, metallic),
    from ``maps["roughness"]``, ``maps["metallic"]`` uint8 ``[H, W]`` (row order unchanged)."""
    rough = np.asarray(maps["roughness"], np.uint8)
    return np.stack([np.full_like(rough, 255), rough, np.asarray(maps["metallic"], np.uint8)], axis=-1)


def _normalized(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(n > 0, n, 1.0)
