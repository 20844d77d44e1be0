"""The wire format: the ``.npz`` the add-on sends as a job's mesh (docs/API.md, ``POST /jobs``).

Arrays: ``positions`` [V, 3] float32 and ``triangles`` [F, 3] int32 (required), ``uvs`` [F, 3, 2]
float32 per-corner UVs and ``world_matrix`` [4, 4] float32 (optional), Blender's axes (Z up).
"""

from __future__ import annotations

import io
import math
import os
import struct
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy_format

from ..errors import MeshError
from ..limits import LIMITS
from .mesh import Mesh, identity4, check_mesh

__all__ = ["read_wire_npz", "wire_header", "write_wire_npz"]

# Members up to this size may inflate as much as they like (a small all-zero UV map is legitimate).
RATIO_EXEMPT_BYTES = 1 << 20


_WIRE_ARRAYS = {
    "positions": "[V, 3] float32 object-space vertex positions",
    "triangles": "[F, 3] int32 vertex indices",
    "uvs": "[F, 3, 2] float32 per-corner UVs (optional)",
    "world_matrix": "[4, 4] float32 object -> world matrix (optional)",
    "face_mask": "[F] bool, re-texture only these triangles (optional)",
}


# The central directory of a wire .npz: at most five entries of a short name, with zip64 extras.
MAX_DIRECTORY_BYTES = 16 * 1024


def _zip_directory(data: bytes) -> tuple[int, int] | None:
    """``(entries, directory bytes)`` from the zip's end-of-central-directory record (zip64's when the
    plain one says so), None if there is none: read before zipfile parses the directory, which it does
    entry by entry up to the size the record claims, whatever the entry count says."""
    at = data.rfind(b"PK\x05\x06", max(0, len(data) - 65_557))
    if at < 0 or at + 22 > len(data):
        return None
    count, size = struct.unpack_from("<H", data, at + 10)[0], struct.unpack_from("<I", data, at + 12)[0]
    if (count == 0xFFFF or size == 0xFFFFFFFF) and at >= 20 and data[at - 20:at - 16] == b"PK\x06\x07":
        offset = struct.unpack_from("<Q", data, at - 20 + 8)[0]
        if offset + 56 <= len(data) and data[offset:offset + 4] == b"PK\x06\x06":
            count, size = struct.unpack_from("<QQ", data, offset + 32)
    return count, size


def wire_header(data: bytes, max_faces: int = LIMITS["max_faces"], max_vertices: int = LIMITS["max_vertices"],
                max_ratio: float = LIMITS["max_compression_ratio"]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Names, shapes and dtypes of a wire ``.npz``'s arrays, from the zip directory and each member's
    ``.npy`` header only: nothing is decompressed past those first bytes, so an archive that would
    inflate to gigabytes is refused at the cost of reading its directory.

    Raises ``MeshError`` for: not a zip, more than four members, an unknown or repeated array name,
    Python objects, a member that inflates more than ``max_ratio`` times (members under 1 MiB are
    exempt), a header that disagrees with the member's size, more than ``max_faces`` triangles or
    ``max_vertices`` vertices, or a missing required array.
    """
    directory = _zip_directory(data)
    if directory is None:
        raise MeshError("wire mesh: not a valid .npz archive (no zip directory)")
    count, directory_bytes = directory
    if directory_bytes > MAX_DIRECTORY_BYTES:
        raise MeshError(f"wire mesh: the archive's directory is {directory_bytes:,} bytes; a wire .npz of at most "
                        f"{len(_WIRE_ARRAYS)} arrays needs under {MAX_DIRECTORY_BYTES:,} (expected np.savez output "
                        f"with {', '.join(_WIRE_ARRAYS)})")
    if count > len(_WIRE_ARRAYS):
        raise MeshError(f"wire mesh: the archive has {count} members; expected at most {len(_WIRE_ARRAYS)} "
                        f"({', '.join(_WIRE_ARRAYS)})")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise MeshError(f"wire mesh: not a valid .npz archive ({type(e).__name__}: {str(e)[:80]})") from e
    found: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    for info in members:
        name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        if name not in _WIRE_ARRAYS:
            raise MeshError(f"wire mesh: unknown array {info.filename[:60]!r}; expected only "
                            + ", ".join(f"'{k}' {v}" for k, v in _WIRE_ARRAYS.items()))
        if name in found:
            raise MeshError(f"wire mesh: array '{name}' appears twice in the archive")
        try:
            with archive.open(info) as f:
                version = npy_format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = npy_format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = npy_format.read_array_header_2_0(f)
                else:
                    raise ValueError(f"unsupported .npy version {version}")
                header_bytes = f.tell()
        except MeshError:
            raise
        except Exception as e:  # a corrupt member, a bad header, zlib errors...
            raise MeshError(f"wire mesh: array '{name}' cannot be read ({type(e).__name__}: {str(e)[:80]})") from e
        if dtype.hasobject:
            raise MeshError("wire mesh: the .npz holds Python objects; only plain numeric arrays are accepted")
        if header_bytes + math.prod(shape) * dtype.itemsize != info.file_size:
            raise MeshError(f"wire mesh: array '{name}' claims shape {list(shape)} of {dtype} but its member holds "
                            f"{info.file_size:,} bytes")
        found[name] = (tuple(shape), dtype)
    for required in ("positions", "triangles"):
        if required not in found:
            raise MeshError(f"wire mesh: missing array '{required}' ({_WIRE_ARRAYS[required]}); found {sorted(found)}")
    n_vertices, n_faces = found["positions"][0][0] if found["positions"][0] else 0, \
        found["triangles"][0][0] if found["triangles"][0] else 0
    if n_faces > max_faces:
        raise MeshError(f"the mesh has {n_faces:,} faces, more than the limit of {max_faces:,}; reduce it in "
                        "Blender (Decimate modifier) or raise the limit (nfsd serve --max-faces)")
    if n_vertices > max_vertices:
        raise MeshError(f"the mesh has {n_vertices:,} vertices, more than the limit of {max_vertices:,}; merge or "
                        "decimate them in Blender or raise the limit (nfsd serve --max-vertices)")
    for info in members:  # after the size limits: those say more about a mesh that is too big
        if info.file_size > RATIO_EXEMPT_BYTES and info.file_size > max_ratio * max(info.compress_size, 1):
            raise MeshError(f"wire mesh: member {info.filename[:60]!r} would inflate "
                            f"{info.file_size / max(info.compress_size, 1):.0f} times ({info.file_size:,} bytes); at "
                            f"most {max_ratio:g} times is accepted")
    # Other arrays are bounded by the mesh's own size (their shapes are checked after reading).
    bounds = {"positions": 3 * max_vertices, "triangles": 3 * max_faces, "uvs": 6 * max_faces, "world_matrix": 16,
              "face_mask": max_faces}
    for name, (shape, _) in found.items():
        if math.prod(shape) > bounds[name]:
            raise MeshError(f"wire mesh: array '{name}' has shape {list(shape)}; expected {_WIRE_ARRAYS[name]} "
                            f"within the limits of {max_faces:,} triangles and {max_vertices:,} vertices")
    return found


def read_wire_npz(source: str | os.PathLike | bytes | BinaryIO, max_faces: int = LIMITS["max_faces"],
                  max_vertices: int = LIMITS["max_vertices"]) -> Mesh:
    """Read the wire ``.npz`` the add-on sends (a path, the raw bytes, or a binary file object).

    Arrays: ``positions`` [V, 3] float32 and ``triangles`` [F, 3] int32 (required), ``uvs`` [F, 3, 2]
    float32 and ``world_matrix`` [4, 4] float32 (optional; identity when absent), ``face_mask`` [F]
    bool (optional: the faces to re-texture, ``Mesh.face_mask``; must select one). float64 and int64
    are accepted and converted; any other dtype, an unknown array name, a wrong shape, NaN/inf or an
    index out of range raises ``MeshError`` naming the array. The sizes are checked from the
    archive's headers before anything is decompressed (:func:`wire_header`), then the mesh is checked
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
    wire_header(data, max_faces, max_vertices)
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
        world_matrix=arrays.get("world_matrix", identity4()),
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
