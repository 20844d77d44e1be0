"""UDIM tiles: detect a UDIM layout, lay its tiles side by side in one atlas, split the atlas back.

The UDIM convention (Mari, Blender, Substance): a UV ``(u, v)`` with ``floor(u) = i`` in 0..9 and
``floor(v) = j >= 0`` lies in tile ``1001 + i + 10 j``; each tile is its own texture of the same
size, sampled with the UV's fractional part. Seams between tiles are UV seams like any other.

The engine optimizes one square texture, so a UDIM mesh runs on an atlas: the T tiles used, in
tile order, fill the slots of a square grid of ``n x n`` slots (``n = ceil(sqrt(T))``), left to right
then bottom to top; slot ``k`` sits at column ``k % n``, row ``k // n`` (row 0 at the bottom, as
textures in memory are: row 0 = v = 0). With a per-tile texture size S the atlas is ``n S x n S``.

    layout = udim_tiles(mesh.uvs)                  # None: not a UDIM layout
    atlas_uvs = to_atlas(mesh.uvs, layout)         # [F, 3, 2] in [0, 1]
    ... optimize a texture of side layout.cols * S on atlas_uvs ...
    tiles = split_atlas(texture, layout)           # {1001: [S, S, C], 1002: ...}

Pure numpy; nothing here knows the engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["UdimLayout", "face_tiles", "join_tiles", "split_atlas", "to_atlas", "udim_tiles"]

FIRST_TILE = 1001
# A corner on a tile's edge (u = 2.0 for a face of tile 1002) belongs to the face's tile: each corner
# must lie within the face's tile up to this slack.
_EDGE = 1e-4


@dataclass(frozen=True)
class UdimLayout:
    """The tiles a mesh uses and their slots in the atlas.

    Attributes:
        tiles: the UDIM tile numbers used, ascending (1001, 1002, 1011...); at least two.
        cols: slots per atlas row; the grid is square (``rows == cols``).
        rows: slot rows of the atlas.
    """

    tiles: tuple[int, ...]
    cols: int
    rows: int

    def slot(self, tile: int) -> tuple[int, int]:
        """``(column, row)`` of ``tile``'s slot in the atlas, row 0 at the bottom."""
        k = self.tiles.index(int(tile))
        return k % self.cols, k // self.cols

    def atlas_side(self, tile_size: int) -> int:
        """The atlas's width and height in pixels for tiles of ``tile_size`` pixels."""
        return max(self.cols, self.rows) * int(tile_size)


def face_tiles(uvs: np.ndarray) -> np.ndarray | None:
    """``[F]`` int64 UDIM tile number of each face of per-corner ``uvs`` ``[F, 3, 2]`` (from its
    corners), or None when a face straddles tiles or lies outside tiles 1001..(1010 + 10 j), j >= 0."""
    uvs = np.asarray(uvs, np.float64)
    # (i, j) of each face: its largest corner's cell, a corner on the upper edge counting as inside
    # (u = 1.0 is tile 1001's), its smallest corner's for a face flat on a lower edge (u = 0.0 everywhere).
    cell = np.maximum(np.floor(uvs.max(axis=1) - _EDGE), np.floor(uvs.min(axis=1)))   # [F, 2]
    inside = ((uvs >= cell[:, None] - _EDGE) & (uvs <= cell[:, None] + 1 + _EDGE)).all(axis=(1, 2))
    i, j = cell[:, 0], cell[:, 1]
    if not inside.all() or (i < 0).any() or (i > 9).any() or (j < 0).any():
        return None
    return (FIRST_TILE + i + 10 * j).astype(np.int64)


def udim_tiles(uvs: np.ndarray | None) -> UdimLayout | None:
    """The UDIM layout of per-corner ``uvs`` ``[F, 3, 2]``, or None when they are not one.

    A UDIM layout: every triangle inside one tile (corners on the tile's edges count as inside),
    ``floor(u)`` in 0..9, ``floor(v) >= 0``, and more than one tile used. A layout inside the unit
    square (one tile), a triangle straddling tiles, or negative / out-of-range tiles: None.
    """
    if uvs is None or len(uvs) == 0:
        return None
    tiles = face_tiles(uvs)
    if tiles is None:
        return None
    used = tuple(int(t) for t in np.unique(tiles))
    if len(used) < 2:
        return None
    n = math.ceil(math.sqrt(len(used)))
    return UdimLayout(tiles=used, cols=n, rows=n)


def to_atlas(uvs: np.ndarray, layout: UdimLayout) -> np.ndarray:
    """UDIM ``uvs`` ``[F, 3, 2]`` -> float32 ``[F, 3, 2]`` in [0, 1]: each face's UVs, relative to
    its tile, moved into the tile's slot of the atlas (``UdimLayout.slot``) and scaled by 1/n."""
    uvs = np.asarray(uvs, np.float64)
    tiles = face_tiles(uvs)
    if tiles is None or not set(np.unique(tiles).tolist()) <= set(layout.tiles):
        raise ValueError("these UVs are not the UDIM layout given")
    index = np.searchsorted(np.asarray(layout.tiles), tiles)
    tile_origin = np.stack([(tiles - FIRST_TILE) % 10, (tiles - FIRST_TILE) // 10], axis=1).astype(np.float64)
    slot = np.stack([index % layout.cols, index // layout.cols], axis=1).astype(np.float64)
    local = np.clip(uvs - tile_origin[:, None], 0.0, 1.0)
    scale = np.array([layout.cols, layout.rows], np.float64)
    return ((slot[:, None] + local) / scale).astype(np.float32)


def split_atlas(texture: np.ndarray, layout: UdimLayout) -> dict[int, np.ndarray]:
    """An atlas ``[n S, n S, C]`` (row 0 = bottom) -> ``{tile: [S, S, C]}`` in tile order (copies)."""
    texture = np.asarray(texture)
    height, width = texture.shape[:2]
    if height % layout.rows or width % layout.cols or height // layout.rows != width // layout.cols:
        raise ValueError(f"an atlas of {width}x{height} does not split into {layout.cols}x{layout.rows} square tiles")
    size = width // layout.cols
    out = {}
    for tile in layout.tiles:
        col, row = layout.slot(tile)
        out[tile] = np.ascontiguousarray(texture[row * size:(row + 1) * size, col * size:(col + 1) * size])
    return out


def join_tiles(tiles: dict[int, np.ndarray], layout: UdimLayout) -> np.ndarray:
    """The inverse of ``split_atlas``: ``{tile: [S, S, C]}`` -> the atlas ``[n S, n S, C]`` (empty slots 0)."""
    first = np.asarray(tiles[layout.tiles[0]])
    size = first.shape[0]
    atlas = np.zeros((layout.rows * size, layout.cols * size) + first.shape[2:], first.dtype)
    for tile in layout.tiles:
        col, row = layout.slot(tile)
        atlas[row * size:(row + 1) * size, col * size:(col + 1) * size] = tiles[tile]
    return atlas
