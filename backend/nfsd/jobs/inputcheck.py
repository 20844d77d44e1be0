"""Checks of a job's uploaded files (the wire mesh, the init texture PNG), for the server to run in
a child process: reading untrusted archives and images costs CPU, memory and Python's GIL, and none
of that may stall the server's event loop (or take the server down if it crashes).

Cheap header reads come first (the .npz member headers, the PNG IHDR chunk), so a file that
claims to be huge is refused before anything is decompressed. Light imports only (numpy, PIL):
the child process starts in a fraction of a second.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from ..errors import MeshError
from ..limits import LIMITS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(head: bytes) -> tuple[int, int]:
    """``(width, height)`` from the first 24 bytes of a PNG (its IHDR chunk); ValueError if not a PNG."""
    if not head.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG file (no PNG signature)")
    if len(head) < 24 or head[12:16] != b"IHDR":
        raise ValueError("not a PNG file (no IHDR header)")
    return struct.unpack(">II", head[16:24])


def check_png(path: str | Path, max_side: int = LIMITS["max_init_texture_side"], name: str = "init_texture",
              size: tuple[int, int] | None = None) -> str | None:
    """None when ``path`` is a PNG of at most ``max_side`` pixels a side (exactly ``size`` ``(w, h)`` when
    given) that decodes; else the reason, naming the form field ``name``."""
    from PIL import Image

    with open(path, "rb") as f:
        head = f.read(24)
    try:
        w, h = png_size(head)
    except ValueError as exc:
        return f"{name} must be a PNG image: {exc}"
    if not (1 <= w <= max_side and 1 <= h <= max_side):
        return f"{name} is {w}x{h}; at most {max_side}x{max_side} is accepted (resize it)"
    if size is not None and (w, h) != tuple(size):
        return f"{name} is {w}x{h}; it must be the size of init_texture ({size[0]}x{size[1]})"
    try:
        with Image.open(path, formats=["PNG"]) as img:
            img.load()
    except Exception as exc:  # PIL raises many kinds for corrupt data
        return f"{name} is not a readable PNG image ({type(exc).__name__}: {str(exc)[:80]})"
    return None


def check_mesh(path: str | Path, max_faces: int = LIMITS["max_faces"],
               max_vertices: int = LIMITS["max_vertices"]) -> str | None:
    """None when ``path`` is a wire .npz within the limits that reads as a valid mesh; else the reason."""
    from ..geometry.wire import read_wire_npz

    try:
        read_wire_npz(Path(path).read_bytes(), max_faces=max_faces, max_vertices=max_vertices)
    except MeshError as exc:
        return f"mesh: {str(exc).removeprefix('wire mesh: ')}"
    return None


def check_files(mesh_path: str, init_path: str | None, max_faces: int, max_vertices: int,
                max_side: int, map_paths: dict[str, str] | None = None) -> str | None:
    """The checks, as one call of the server's checker process; the first reason found, or None.
    ``map_paths``: form field (``init_roughness``, ...) -> PNG that must be the size of ``init_path``."""
    problem = check_mesh(mesh_path, max_faces, max_vertices)
    if problem is None and init_path is not None:
        problem = check_png(init_path, max_side)
    for name, path in (map_paths or {}).items():
        if problem is None and init_path is not None:
            with open(init_path, "rb") as f:
                size = png_size(f.read(24))
            problem = check_png(path, max_side, name, size)
    if problem is None and init_path is None and _has_face_mask(mesh_path):
        problem = "face_mask re-textures part of a texture: send the current texture as init_texture"
    return problem


def _has_face_mask(mesh_path: str) -> bool:
    with np.load(mesh_path, allow_pickle=False) as archive:  # a read mesh: the member list is cheap
        return "face_mask" in archive.files


def ready() -> bool:
    """A no-op the server runs once at start, so the checker process is up before the first upload."""
    from ..geometry.wire import read_wire_npz

    return callable(read_wire_npz)
