"""Small generated meshes with UVs for the demo, tests and benchmarks (no file needed)."""

from __future__ import annotations

import numpy as np

from ..errors import MeshError
from .mesh import Mesh

BUILTIN_MESHES: tuple[str, ...] = ("default", "blob", "sphere", "cube")


def builtin_mesh(name: str = "default") -> Mesh:
    """A small generated mesh with UVs, in Blender's axes, about 2 units across.

    - ``"blob"`` (also ``"default"``): a rounded head with a nose on -Y (its front) and two ears on
      top, 3968 faces, latitude-longitude UVs with the seam at the back (+Y).
    - ``"sphere"``: a UV sphere of radius 1, 2208 faces, the same UV layout.
    - ``"cube"``: the cube [-1, 1]^3, each side an 8x8 grid of quads (768 faces), vertices shared
      across edges like Blender's cube, each side in its own cell of a 3x2 UV layout.
    """
    key = str(name).strip().lower()
    if key in ("default", "blob"):
        return latlong_mesh(64, 32, _blob_radius)
    if key == "sphere":
        return latlong_mesh(48, 24, lambda d: np.ones(len(d)))
    if key == "cube":
        return _cube_mesh(8)
    raise MeshError(f"unknown built-in mesh {name!r}; choose one of {', '.join(BUILTIN_MESHES)}")


def _blob_radius(d: np.ndarray) -> np.ndarray:
    def bump(axis, amplitude, width):
        axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
        angle = np.arccos(np.clip(d @ axis, -1.0, 1.0))
        return amplitude * np.exp(-0.5 * (angle / width) ** 2)

    return (
        1.0
        + bump([0.0, -1.0, -0.1], 0.45, 0.22)  # nose, the front
        + bump([0.55, 0.05, 0.85], 0.3, 0.16)  # ears
        + bump([-0.55, 0.05, 0.85], 0.3, 0.16)
        - 0.12 * np.clip(-d[:, 2], 0.0, 1.0) ** 2  # a slightly flatter chin
    )


def latlong_mesh(n_lon: int, n_lat: int, radius) -> Mesh:
    """Latitude-longitude sphere, poles as single vertices; ``radius(dirs [N,3]) -> [N]``.

    u runs around Z with u = 0.5 at the front (-Y) and the seam at the back; it grows to the right
    seen from outside, v grows with height, so the texture is not mirrored.
    """
    theta = np.pi * np.arange(1, n_lat) / n_lat  # polar angle of the rings, from +Z
    phi = 2 * np.pi * np.arange(n_lon) / n_lon
    st, ct = np.sin(theta)[:, None], np.cos(theta)[:, None]
    ring = np.stack([-st * np.sin(phi), st * np.cos(phi), np.broadcast_to(ct, (n_lat - 1, n_lon))], axis=-1)
    dirs = np.concatenate([[[0.0, 0.0, 1.0]], ring.reshape(-1, 3), [[0.0, 0.0, -1.0]]])
    positions = dirs * radius(dirs)[:, None]
    north, south = 0, len(dirs) - 1

    def vid(i, j):  # ring i (0-based, from the top), column j (wraps)
        return 1 + i * n_lon + (j % n_lon)

    # The layout is inset by a 1% margin: a seam on the texture's border is looked up with clamped
    # addressing, half a texel inside on each side, and shows as a step where a stripe crosses it;
    # inset, the texels beyond the seam are painted (dilation, nfsd.distill.surface_field) and both sides meet.
    margin = 0.01

    def inset(x):
        return margin + (1 - 2 * margin) * x

    tris, uvs = [], []
    for i in range(n_lat):
        v_top, v_bot = inset(1 - i / n_lat), inset(1 - (i + 1) / n_lat)
        for j in range(n_lon):
            u0, u1 = inset(j / n_lon), inset((j + 1) / n_lon)
            if i == 0:
                tris.append((vid(0, j), vid(0, j + 1), north))
                uvs.append(((u0, v_bot), (u1, v_bot), ((u0 + u1) / 2, inset(1.0))))
            elif i == n_lat - 1:
                tris.append((south, vid(i - 1, j + 1), vid(i - 1, j)))
                uvs.append((((u0 + u1) / 2, inset(0.0)), (u1, v_top), (u0, v_top)))
            else:
                a, b, c, d = vid(i - 1, j), vid(i - 1, j + 1), vid(i, j + 1), vid(i, j)
                tris += [(d, c, b), (d, b, a)]
                uvs += [((u0, v_bot), (u1, v_bot), (u1, v_top)), ((u0, v_bot), (u1, v_top), (u0, v_top))]
    return Mesh(
        positions=positions.astype(np.float32),
        triangles=np.array(tris, np.int32),
        uvs=np.array(uvs, np.float32),
    )


def _cube_mesh(n: int) -> Mesh:
    # (origin, right, up) in grid units with right x up = outward, and the side's (column, row) in
    # a 3x2 UV layout; right/up map to +u/+v so every side reads unmirrored from outside.
    X, Y, Z = np.eye(3, dtype=np.int64)
    sides = [
        ((0, 0, 0), X, Z, (0, 1)),  # front  -Y
        ((n, 0, 0), Y, Z, (1, 1)),  # right  +X
        ((n, n, 0), -X, Z, (2, 1)),  # back   +Y
        ((0, n, 0), -Y, Z, (0, 0)),  # left   -X
        ((0, 0, n), X, Y, (1, 0)),  # top    +Z
        ((0, n, 0), X, -Y, (2, 0)),  # bottom -Z
    ]
    margin = 0.02
    a, b = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    grid_points, tris, uvs = [], [], []
    for origin, right, up, (col, row) in sides:
        pts = np.asarray(origin) + a[..., None] * right + b[..., None] * up  # [n+1, n+1, 3] ints
        uv = np.stack([(col + margin + (1 - 2 * margin) * a / n) / 3, (row + margin + (1 - 2 * margin) * b / n) / 2], -1)
        base = len(grid_points) * (n + 1) ** 2
        grid_points.append(pts.reshape(-1, 3))
        for i in range(n):
            for j in range(n):
                c00, c10, c11, c01 = (i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1)
                for t in ((c00, c10, c11), (c00, c11, c01)):
                    tris.append([base + p * (n + 1) + q for p, q in t])
                    uvs.append([uv[p, q] for p, q in t])
    all_points = np.concatenate(grid_points)
    unique, inverse = np.unique(all_points, axis=0, return_inverse=True)  # weld shared edges exactly
    return Mesh(
        positions=(unique / n * 2.0 - 1.0).astype(np.float32),
        triangles=inverse.reshape(-1)[np.array(tris)].astype(np.int32),
        uvs=np.array(uvs, np.float32),
    )
