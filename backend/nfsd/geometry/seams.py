"""UV seams: where they are on a mesh, and how much a texture's colour jumps across them.

A UV seam edge is an edge of the surface shared by two triangles whose per-corner UVs differ at
the shared vertices: the same 3D points are stored at two places of the texture. A texture is
seamless when both places hold the same colour. ``seam_mismatch`` samples the texture at several
points along every seam edge, once through each triangle's UVs, and reports the colour difference
weighted by the edge's 3D length (a long seam counts more than a sliver).

Conventions (docs/ARCHITECTURE.md): textures ``[H, W, C]`` with row 0 = v = 0 = the BOTTOM, UVs
``[F, 3, 2]`` per corner with (0, 0) at the bottom-left, bilinear lookups with texel centres at
``(i + 0.5) / size`` and clamped borders, exactly as the renderer samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class SeamEdges:
    """The seam edges of a mesh, each seen from its two triangles.

    Attributes:
        uv_a: ``[E, 2, 2]`` float32, the edge's two endpoints (p, q) in the first triangle's UVs.
        uv_b: ``[E, 2, 2]`` float32, the same endpoints (p, q) in the second triangle's UVs.
        length: ``[E]`` float32 3D edge lengths (in the positions' units).
    """

    uv_a: np.ndarray
    uv_b: np.ndarray
    length: np.ndarray

    def __len__(self) -> int:
        return int(self.length.shape[0])


def find_seam_edges(positions: np.ndarray, triangles: np.ndarray, uvs: np.ndarray, tol: float = 1e-6) -> SeamEdges:
    """Edges shared by two triangles whose UVs differ at a shared endpoint by more than ``tol``.

    Vertices at exactly the same position count as one (files often split vertices along UV seams,
    which would otherwise hide the seam as two open borders). Edges with one triangle (open
    borders) or more than two (non-manifold) are not seams and are skipped.

    Args:
        positions: ``[V, 3]`` float vertex positions.
        triangles: ``[F, 3]`` int vertex indices.
        uvs: ``[F, 3, 2]`` float per-corner UVs.
    """
    positions = np.asarray(positions, np.float64)
    triangles = np.asarray(triangles, np.int64)
    uvs = np.asarray(uvs, np.float64)
    _, weld = np.unique(positions, axis=0, return_inverse=True)
    welded = weld.reshape(-1)[triangles]  # [F, 3]
    n_faces = len(triangles)
    # Every corner-to-next-corner half edge: (face, corner i, corner j).
    ci = np.array([0, 1, 2])
    cj = np.array([1, 2, 0])
    face = np.repeat(np.arange(n_faces), 3)
    i, j = np.tile(ci, n_faces), np.tile(cj, n_faces)
    vi, vj = welded[face, i], welded[face, j]
    keep = vi != vj  # degenerate edges
    face, i, j, vi, vj = face[keep], i[keep], j[keep], vi[keep], vj[keep]
    lo, hi = np.minimum(vi, vj), np.maximum(vi, vj)
    # Orient every half edge from its lower to its higher welded vertex, so both sides agree on p, q.
    flip = vi > vj
    cp, cq = np.where(flip, j, i), np.where(flip, i, j)
    key = lo * (int(weld.max()) + 1) + hi
    order = np.argsort(key, kind="stable")
    key, face, cp, cq = key[order], face[order], cp[order], cq[order]
    uniq, start, count = np.unique(key, return_index=True, return_counts=True)
    pair = start[count == 2]
    fa, fb = face[pair], face[pair + 1]
    uv_a = np.stack([uvs[fa, cp[pair]], uvs[fa, cq[pair]]], axis=1)
    uv_b = np.stack([uvs[fb, cp[pair + 1]], uvs[fb, cq[pair + 1]]], axis=1)
    seam = np.abs(uv_a - uv_b).max(axis=(1, 2)) > tol
    p = positions[triangles[fa, cp[pair]]]
    q = positions[triangles[fa, cq[pair]]]
    length = np.linalg.norm(q - p, axis=1)
    return SeamEdges(uv_a[seam].astype(np.float32), uv_b[seam].astype(np.float32), length[seam].astype(np.float32))


def sample_texture(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear lookups: ``texture`` ``[H, W, C]`` (row 0 bottom), ``uv`` ``[N, 2]`` -> ``[N, C]``."""
    image = texture.permute(2, 0, 1)[None].float()
    # grid_sample's y = -1 is row 0, which is v = 0: no flip.
    grid = (uv.float() * 2 - 1).view(1, 1, -1, 2)
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0].T


def seam_mismatch(texture, positions, triangles, uvs, samples: int = 8, edges: SeamEdges | None = None) -> dict:
    """How much the colour jumps across the UV seams of a mesh.

    Args:
        texture: ``[H, W, C]`` float in [0, 1] (torch or numpy) or uint8 numpy, row 0 bottom.
        positions, triangles, uvs: the mesh (``[V, 3]``, ``[F, 3]``, ``[F, 3, 2]``).
        samples: points per edge, at ``(k + 0.5) / samples`` along it.
        edges: precomputed ``find_seam_edges`` (the same mesh measured many times).

    Returns:
        ``{"mean", "p95", "max", "edges", "seam_length"}``: the colour difference is the Euclidean
        RGB distance in [0, 1] units between the two lookups of the same 3D point (0 = seamless,
        1 = e.g. red against yellow); ``mean`` and ``p95`` are weighted by 3D edge length. A mesh
        without seams gives zeros.
    """
    if edges is None:
        edges = find_seam_edges(positions, triangles, uvs)
    if isinstance(texture, np.ndarray):
        texture = torch.from_numpy(texture.astype(np.float32) / 255.0 if texture.dtype == np.uint8 else texture)
    texture = texture.detach()[..., :3]
    if len(edges) == 0:
        return {"mean": 0.0, "p95": 0.0, "max": 0.0, "edges": 0, "seam_length": 0.0}
    t = torch.tensor((np.arange(samples) + 0.5) / samples, dtype=torch.float32).view(1, -1, 1)

    def points(uv):  # [E, 2, 2] -> [E * samples, 2]
        uv = torch.from_numpy(uv)
        return (uv[:, None, 0] * (1 - t) + uv[:, None, 1] * t).reshape(-1, 2)

    diff = (sample_texture(texture, points(edges.uv_a)) - sample_texture(texture, points(edges.uv_b))).norm(dim=1)
    diff = diff.double().numpy()
    weight = np.repeat(edges.length.astype(np.float64) / samples, samples)
    return {"mean": float((diff * weight).sum() / weight.sum()), "p95": weighted_quantile(diff, weight, 0.95),
            "max": float(diff.max()), "edges": len(edges), "seam_length": float(edges.length.sum())}


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The smallest value below which a share ``q`` of the total weight lies."""
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, q * cumulative[-1])])
