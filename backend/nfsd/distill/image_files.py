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


def _rgb8(img) -> np.ndarray:
    """uint8 ``[H, W, 3]`` of a decoded image. 16-bit and 32-bit greyscale (modes ``I;16*``, ``I``, ``F``)
    are scaled to 8 bits: Pillow's ``convert("RGB")`` clips them, so 61% grey came out white."""
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode == "F":
            scaled = arr * 255.0 if arr.size and np.nanmax(arr) <= 1.0 else arr
        else:  # 16-bit samples (a 16-bit PNG opens as I;16 or I)
            scaled = arr / 257.0
        grey = np.clip(np.nan_to_num(scaled) + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(img.convert("RGB"))


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> uint8 ``[H, W, 3]`` with row 0 at the BOTTOM. Raises ``ConfigError`` on non-PNG data."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError):
        raise ConfigError("the texture is not a PNG or other image file; send a PNG") from None
    try:
        img.load()
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data
        reason = str(exc).split(" <", 1)[0][:80]  # never an object's repr (<_io.BytesIO object at 0x...>)
        raise ConfigError(f"the texture is a damaged image ({type(exc).__name__}: {reason}); send a PNG") from None
    return np.ascontiguousarray(_rgb8(img)[::-1])


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
    from ..geometry.mesh_files import shown_path

    if Path(path).is_dir():
        raise ConfigError(f"texture {shown_path(path)} is a directory; name a PNG file")
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read texture {shown_path(path)}: {exc.strerror or exc}") from exc
    try:
        return decode_png(data)
    except ConfigError as exc:
        raise ConfigError(f"{shown_path(path)}: {str(exc).replace('the texture', 'this')}") from None


def grid(images: list[np.ndarray], columns: int) -> np.ndarray:
    """Tile equally sized uint8 ``[H, W, 3]`` images (row 0 top) into one image, row-major."""
    h, w, c = images[0].shape
    rows = math.ceil(len(images) / columns)
    out = np.full((rows * h, columns * w, c), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, columns)
        out[r * h:(r + 1) * h, col * w:(col + 1) * w] = img
    return out
