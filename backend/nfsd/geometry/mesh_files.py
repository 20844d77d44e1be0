"""Mesh files: reading OBJ, PLY, glTF/GLB (and the wire .npz) into a checked ``nfsd.geometry.mesh.Mesh``
(``load_mesh``: the path's checks, the file's axes, errors that name the file; the format parsers are in
``nfsd.geometry.mesh_readers``). The textured result is written by ``nfsd.geometry.glb_export``.

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
from .mesh_readers import read_gltf, read_obj, read_ply

MESH_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".npz")

# Y-up file axes -> Blender's Z-up: (x, y, z) -> (x, -z, y), a +90 degree turn about X (keeps
# handedness and winding). Its transpose goes back, as glTF wants on write (nfsd.geometry.glb_export).
Y_UP_TO_Z_UP = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float64)


def load_mesh(path: str | os.PathLike, up_axis: str = "auto", max_faces: int = DEFAULT_MAX_FACES) -> Mesh:
    """Read a mesh file (.obj .ply .glb .gltf, or the wire .npz), check it and return it.

    ``up_axis``: "auto" (OBJ/glTF/GLB are Y-up, PLY and .npz Z-up), "Y" or "Z" to force the file's
    up axis. Y-up files are turned to Blender's Z-up with ``(x, y, z) -> (x, -z, y)``.

    Vertex order and count are kept for every format (duplicate and unreferenced vertices too):
    OBJ is parsed by hand (``nfsd.geometry.mesh_readers``) because trimesh either splits vertices at UV
    seams or drops the UVs; PLY arrays come from trimesh's raw element data for the same reason. Per-vertex UVs (PLY, glTF)
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

    readers = {".obj": read_obj, ".ply": read_ply, ".glb": read_gltf, ".gltf": read_gltf}
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
    c = Y_UP_TO_Z_UP
    mesh.positions = (np.asarray(mesh.positions, np.float64) @ c.T).astype(np.float32)
    c4 = np.eye(4)
    c4[:3, :3] = c
    # Positions were turned by C, so the world matrix becomes C M C^-1 (world space turned too).
    mesh.world_matrix = (c4 @ np.asarray(mesh.world_matrix, np.float64) @ c4.T).astype(np.float32)
