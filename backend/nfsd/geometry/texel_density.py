"""Texel density: how many texels a triangle gets, and the texture size a dense mesh needs.

A dense scan (tens of thousands of faces) unwrapped into a small texture gets triangles smaller than
a texel: neighbouring triangles that face different ways share texels, and the result is
salt-and-pepper speckle. The rule used here:

    the texture size is the smallest power of two at which the median triangle covers at least
    ``MIN_TEXELS`` (2) texels, never below the model's default and at most ``MAX_AUTO_SIZE`` (2048).

Before an unwrap the UV areas are not known yet; xatlas packs charts at one world-space texel
density, so a triangle's share of the atlas is about its share of the surface area times the atlas
fill (``PACK_FILL``, measured on dense meshes: the atlas is about half charts, half padding and gaps).
After an unwrap (or for a mesh that came with UVs) the UV areas are measured directly.

    python -m nfsd.geometry.texel_density benchmarks/meshes/suzanne.obj --subdivide 3   # BENCHMARKS.md
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

MIN_TEXELS = 2.0       # texels the median triangle should cover
MAX_AUTO_SIZE = 2048   # the largest size chosen without being asked (memory and time grow with its square)
PACK_FILL = 0.5        # share of an xatlas atlas its charts cover (dense meshes, 2-texel padding)


def triangle_areas(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """``[F]`` areas of triangles of ``points`` (``[V, D]``, D = 2 or 3) indexed by ``triangles`` ``[F, 3]``."""
    p = np.asarray(points, np.float64)[np.asarray(triangles)]
    return _areas(p)


def _areas(corners: np.ndarray) -> np.ndarray:
    """``[F, 3, D]`` corner positions -> ``[F]`` areas."""
    e1, e2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    if corners.shape[-1] == 2:
        return 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    return 0.5 * np.linalg.norm(np.cross(e1, e2), axis=1)


def _pow2_size(median_share: float, min_size: int) -> int:
    """The power-of-two side at which a triangle holding ``median_share`` of the square covers MIN_TEXELS."""
    if not median_share > 0:
        return min_size
    side = 2 ** math.ceil(math.log2(math.sqrt(MIN_TEXELS / median_share)))
    return int(min(MAX_AUTO_SIZE, max(min_size, side)))


def size_for_surface(positions: np.ndarray, triangles: np.ndarray, min_size: int = 16) -> int:
    """The rule's texture size for a mesh about to be unwrapped (from its 3D triangle areas)."""
    areas = triangle_areas(positions, triangles)
    areas = areas[areas > 0]
    if not len(areas):
        return min_size
    return _pow2_size(PACK_FILL * float(np.median(areas)) / float(areas.sum()), min_size)


def size_for_uvs(uvs: np.ndarray, min_size: int = 16) -> int:
    """The rule's texture size for per-corner ``uvs`` ``[F, 3, 2]`` in [0, 1]."""
    areas = _areas(np.asarray(uvs, np.float64))
    areas = areas[areas > 0]
    return _pow2_size(float(np.median(areas)) if len(areas) else 0.0, min_size)


@dataclasses.dataclass(frozen=True)
class Coverage:
    size: int                # texture side in texels
    median_texels: float     # texels the median triangle covers
    under_one: float         # share of triangles covering less than one texel


def coverage(uvs: np.ndarray, size: int) -> Coverage:
    """How many texels the triangles of per-corner ``uvs`` ``[F, 3, 2]`` get in a ``size`` texture."""
    texels = _areas(np.asarray(uvs, np.float64)) * size * size
    return Coverage(int(size), float(np.median(texels)), float((texels < 1.0).mean()))


def advice(mesh, texture_size: int, explicit: bool) -> tuple[int, str | None]:
    """The texture size a job on ``mesh`` should use, and a warning (or None).

    A mesh without UVs whose size was left out (``explicit=False``) gets the rule's size (at least
    ``texture_size``, the model's default): unwrap it with ``resolution`` = that size. Otherwise the
    size stays, and when the rule asks for more the warning names the size to pass.
    """
    if mesh.uvs is None:
        need = size_for_surface(mesh.world_positions(), mesh.triangles, texture_size)
        if not explicit:
            return need, None
        median = need  # estimated; measured below when UVs exist
    else:
        need = size_for_uvs(mesh.uvs, texture_size)
    if need <= texture_size:
        return texture_size, None
    if mesh.uvs is not None:
        median = coverage(mesh.uvs, texture_size).median_texels
        said = f"its median triangle covers {median:.2g} texels of a {texture_size} px texture"
    else:
        said = f"its triangles are small for a {texture_size} px texture"
    return texture_size, (f"this mesh has {mesh.num_faces:,} faces and {said}, so neighbouring faces share texels "
                          f"(speckle); pass --texture-size {need} (the median triangle then covers at least "
                          f"{MIN_TEXELS:g} texels)")


def subdivide(positions: np.ndarray, triangles: np.ndarray, levels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Midpoint subdivision (each triangle into four, edge midpoints shared): ``[V, 3]``, ``[4^levels F, 3]``."""
    pos, tri = np.asarray(positions, np.float64), np.asarray(triangles, np.int64)
    for _ in range(levels):
        edges = np.sort(np.stack([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]], 1).reshape(-1, 2), axis=1)
        unique, inverse = np.unique(edges, axis=0, return_inverse=True)
        mid = len(pos) + inverse.reshape(-1, 3)
        pos = np.concatenate([pos, pos[unique].mean(1)])
        a, b, c = tri.T
        ab, bc, ca = mid.T
        tri = np.concatenate([np.stack(t, 1) for t in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))])
    return pos.astype(np.float32), tri


def main(argv=None) -> int:
    """Share of triangles under one texel on a dense mesh: xatlas's own packing into the default size
    (before) vs the rule's size with the atlas packed for it (after)."""
    import argparse
    import time

    from .mesh_files import load_mesh
    from .unwrap import unwrap_in_child

    p = argparse.ArgumentParser(prog="python -m nfsd.geometry.texel_density", description=main.__doc__)
    p.add_argument("mesh", help="a mesh file (its UVs are ignored: the mesh is unwrapped here)")
    p.add_argument("--subdivide", type=int, default=0, help="midpoint subdivisions first (x4 faces each)")
    p.add_argument("--texture-size", type=int, default=256, help="the size before the rule (the built-in prior's)")
    args = p.parse_args(argv)
    mesh = load_mesh(args.mesh)
    positions, triangles = subdivide(mesh.world_positions(), mesh.triangles, args.subdivide)
    print(f"{args.mesh} subdivided {args.subdivide}x: {len(triangles):,} faces")
    rule = size_for_surface(positions, triangles, args.texture_size)
    print("| case | texture px | xatlas packed for | unwrap s | median texels / triangle | triangles under 1 texel |")
    print("| --- | --- | --- | --- | --- | --- |")
    for case, size, resolution in (("before (default size)", args.texture_size, 0),
                                   ("before, packed for the size", args.texture_size, args.texture_size),
                                   ("after (the rule)", rule, rule)):
        t0 = time.monotonic()
        uvs = unwrap_in_child(positions, triangles, resolution=resolution)
        seconds = time.monotonic() - t0
        c = coverage(uvs, size)
        print(f"| {case} | {size} | {resolution or 'xatlas default'} | {seconds:.1f} | {c.median_texels:.2f} | "
              f"{100 * c.under_one:.1f}% |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
