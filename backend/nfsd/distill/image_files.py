"""Textures as files and bytes: uint8 conversions, PNG encoding, atomic writes, contact sheets.

In memory a texture is ``[H, W, C]`` with row 0 = v = 0 = the BOTTOM (nvdiffrast's and Blender's
order). PNG files store the top row first: ``encode_png`` / ``decode_png`` (and so ``save_png`` /
``load_png``) flip, and nothing else does.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, NfsdError


def to_uint8(texture: torch.Tensor) -> np.ndarray:
    """``[H, W, C]`` float in [0, 1] -> uint8 numpy (row order unchanged)."""
    return (texture.detach().float().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


def from_uint8(image: np.ndarray, size: int | None = None) -> torch.Tensor:
    """uint8 ``[H, W, C>=3]`` -> float32 ``[size, size, 3]`` in [0, 1] (resized bilinearly if needed)."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise ConfigError(f"an initial texture must be an RGB(A) image, got an array of shape {arr.shape}")
    t = torch.from_numpy(arr[:, :, :3].astype(np.float32) / 255.0)
    if size is not None and (t.shape[0] != size or t.shape[1] != size):
        t = F.interpolate(t.permute(2, 0, 1)[None], size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True)[0].permute(1, 2, 0)
    return t.clamp(0, 1)


def encode_png(texture: np.ndarray, compress_level: int = 6) -> bytes:
    """uint8 ``[H, W, C]`` with row 0 at the BOTTOM -> PNG bytes (PNG stores the top row first).

    ``compress_level`` 1 is several times faster for previews that are polled, not kept."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.asarray(texture)[::-1])).save(buf, format="PNG",
                                                                          compress_level=compress_level)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> uint8 ``[H, W, 3]`` with row 0 at the BOTTOM. Raises ``ConfigError`` on non-PNG data."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ConfigError(f"the texture is not a readable image ({exc}); send a PNG") from exc
    return np.ascontiguousarray(np.asarray(img.convert("RGB"))[::-1])


def _current_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; done once, at import
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: Path, data: bytes, durable: bool = False) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename: readers never see half a file.
    ``durable`` also fsyncs the data before the rename (survives a power cut, costs a disk flush).

    A full disk or a read-only folder raises ``NfsdError`` naming the folder; the old file, if any,
    stays intact.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            if hasattr(os, "fchmod"):  # mkstemp makes 0600; a written file follows the umask like any other
                os.fchmod(fd, 0o666 & ~_UMASK)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError as exc:
        raise NfsdError(f"could not write {path}: {exc.strerror or exc}; free disk space or choose another folder") from exc


def save_png(texture: np.ndarray, path) -> None:
    """Save uint8 ``[H, W, C]`` (row 0 bottom) as a PNG file, atomically."""
    atomic_write_bytes(Path(path), encode_png(texture))


def load_png(path) -> np.ndarray:
    """Read an image file -> uint8 ``[H, W, 3]`` with row 0 at the bottom."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read texture {path}: {exc.strerror or exc}") from exc
    return decode_png(data)


def grid(images: list[np.ndarray], columns: int) -> np.ndarray:
    """Tile equally sized uint8 ``[H, W, 3]`` images (row 0 top) into one image, row-major."""
    h, w, c = images[0].shape
    rows = math.ceil(len(images) / columns)
    out = np.full((rows * h, columns * w, c), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, columns)
        out[r * h:(r + 1) * h, col * w:(col + 1) * w] = img
    return out
