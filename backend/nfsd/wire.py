"""The wire format: the ``.npz`` the add-on sends as a job's mesh (docs/API.md, ``POST /jobs``).

Arrays: ``positions`` [V, 3] float32 and ``triangles`` [F, 3] int32 (required), ``uvs`` [F, 3, 2]
float32 per-corner UVs and ``world_matrix`` [4, 4] float32 (optional), Blender's axes (Z up).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import MeshError
from .mesh import Mesh, _identity4, check_mesh

__all__ = ["read_wire_npz", "write_wire_npz"]


_WIRE_ARRAYS = {
    "positions": "[V, 3] float32 object-space vertex positions",
    "triangles": "[F, 3] int32 vertex indices",
    "uvs": "[F, 3, 2] float32 per-corner UVs (optional)",
    "world_matrix": "[4, 4] float32 object -> world matrix (optional)",
}


def read_wire_npz(source: str | os.PathLike | bytes | BinaryIO, max_faces: int = 500_000) -> Mesh:
    """Read the wire ``.npz`` the add-on sends (a path, the raw bytes, or a binary file object).

    Arrays: ``positions`` [V, 3] float32 and ``triangles`` [F, 3] int32 (required), ``uvs`` [F, 3, 2]
    float32 and ``world_matrix`` [4, 4] float32 (optional; identity when absent). float64 and int64
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
    return mesh


def write_wire_npz(mesh: Mesh, path_or_file: str | os.PathLike | BinaryIO) -> None:
    """Write ``mesh`` in the wire format (compressed ``.npz``; ``uvs`` only when present)."""
    arrays = {
        "positions": np.asarray(mesh.positions, dtype=np.float32),
        "triangles": np.asarray(mesh.triangles, dtype=np.int32),
        "world_matrix": np.asarray(mesh.world_matrix, dtype=np.float32),
    }
    if mesh.uvs is not None:
        arrays["uvs"] = np.asarray(mesh.uvs, dtype=np.float32)
    if isinstance(path_or_file, (str, os.PathLike)):
        with open(path_or_file, "wb") as f:
            np.savez_compressed(f, **arrays)
    else:
        np.savez_compressed(path_or_file, **arrays)
