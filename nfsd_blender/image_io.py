# SPDX-License-Identifier: GPL-3.0-or-later
"""Texture pixels between Blender images, numpy arrays and PNG bytes.

Arrays here are ``[H, W, 4]`` RGBA with row 0 = the BOTTOM of the image, which is both Blender's
``image.pixels`` order and the backend's texture order. PNG files store row 0 at the TOP: the
flip happens in :func:`encode_png` and :func:`decode_png` and nowhere else. A UDIM result is
``[T, H, W, 4]``, one texture per tile (:func:`new_tiled_image`).
"""

from __future__ import annotations

import os
import struct
import tempfile
import zlib

import numpy as np


def encode_png(rgba: np.ndarray, compress_level: int = 6) -> bytes:
    """Encode ``rgba`` uint8 ``[H, W, 4]`` (row 0 = bottom) as an 8-bit RGBA PNG (row 0 = top).

    Pure numpy + zlib so it may run on a worker thread (bpy may not).
    """
    rgba = np.asarray(rgba)
    if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"encode_png wants uint8 [H, W, 4], got {rgba.dtype} {list(rgba.shape)}")
    height, width = rgba.shape[:2]
    rows = np.ascontiguousarray(rgba[::-1]).reshape(height, width * 4)
    # Filter type 0 (None) on every row: a zero byte in front of each scanline.
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8 bits, RGBA, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, compress_level)) + chunk(b"IEND", b""))


def decode_png(data: bytes) -> np.ndarray:
    """Decode PNG bytes to float32 ``[H, W, 4]`` in 0..1, row 0 = bottom. Main thread only.

    Blender's own image loader does the decoding (any PNG flavour the backend may write); the
    values are the file's 8-bit values / 255, with no colour-space conversion.
    """
    import bpy

    handle, path = tempfile.mkstemp(suffix=".png", prefix="nfsd_")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        image = bpy.data.images.load(path, check_existing=False)
        try:
            width, height = image.size
            if width == 0 or height == 0:
                raise ValueError("the backend sent a PNG that Blender cannot read")
            pixels = np.empty(width * height * image.channels, np.float32)
            image.pixels.foreach_get(pixels)
            pixels = pixels.reshape(height, width, image.channels)
        finally:
            bpy.data.images.remove(image)
    finally:
        os.remove(path)
    if pixels.shape[2] == 4:
        return pixels
    alpha = np.ones((height, width, 1), np.float32)
    return np.concatenate([pixels[..., :3], alpha], axis=2) if pixels.shape[2] >= 3 else \
        np.concatenate([np.repeat(pixels[..., :1], 3, axis=2), alpha], axis=2)


def image_pixels(image) -> np.ndarray:
    """A Blender image's pixels as float32 ``[H, W, 4]`` (row 0 = bottom)."""
    width, height = image.size
    pixels = np.empty(width * height * image.channels, np.float32)
    image.pixels.foreach_get(pixels)
    return pixels.reshape(height, width, image.channels)


def image_rgba8(image) -> np.ndarray:
    """A Blender image's pixels as uint8 RGBA ``[H, W, 4]`` (row 0 = bottom; alpha 255 where it has none):
    what a PNG or the backend's ``init_*`` uploads hold."""
    pixels = image_pixels(image)
    if pixels.shape[2] < 4:
        pixels = np.concatenate([pixels[..., :3], np.ones(pixels.shape[:2] + (1,), np.float32)], axis=2)
    return (np.clip(pixels[..., :4], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def set_image_pixels(image, pixels: np.ndarray) -> None:
    """Write float32 ``[H, W, 4]`` (row 0 = bottom, 0..1) into ``image``, resizing it if needed."""
    height, width = pixels.shape[:2]
    if tuple(image.size) != (width, height):
        image.scale(width, height)
    image.pixels.foreach_set(np.ascontiguousarray(pixels, dtype=np.float32).ravel())
    image.update()


def new_tiled_image(name: str, tiles, textures: np.ndarray):
    """A packed UDIM (tiled) image ``name`` holding tile ``tiles[k]`` (1001, 1002...) filled from
    ``textures[k]``: float32 ``[T, H, W, 4]`` in 0..1, row 0 = bottom.

    Blender's ``image.pixels`` reaches only a tiled image's first tile, so the tiles go through PNG
    files ``<tile>`` in a temporary folder, are read as one tiled image and packed (the files go).
    Main thread only.
    """
    import bpy

    tiles = [int(t) for t in tiles]
    if len(tiles) != len(textures) or not tiles:
        raise ValueError(f"{len(tiles)} tile numbers for {len(textures)} tile textures")
    with tempfile.TemporaryDirectory(prefix="nfsd_udim_") as folder:
        for tile, texture in zip(tiles, textures):
            rgba = (np.clip(np.asarray(texture, np.float32)[..., :4], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
            with open(os.path.join(folder, f"nfsd.{tile}.png"), "wb") as file:
                file.write(encode_png(rgba))
        image = bpy.data.images.load(os.path.join(folder, f"nfsd.{tiles[0]}.png"), check_existing=False)
        image.source = "TILED"
        image.filepath = os.path.join(folder, "nfsd.<UDIM>.png")
        image.reload()
        got = sorted(tile.number for tile in image.tiles)
        if got != sorted(tiles):
            bpy.data.images.remove(image)
            raise ValueError(f"Blender read UDIM tiles {got}, not {sorted(tiles)}")
        image.pack()
    image.name = name
    image.filepath_raw = "//" + bpy.path.clean_name(name) + ".<UDIM>.png"  # where Unpack writes the tiles
    return image
