"""Small, smooth vertex offsets: bounded displacement along the normals and its regularizers.

Offsets live in render space (the mesh normalized to the unit bounding sphere); ``nfsd.geometry.mesh``
maps them back to object space, one per Blender vertex.
"""

from __future__ import annotations

import torch


def face_normals(positions: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """``positions [V, 3]``, ``triangles [F, 3]`` int -> unnormalized face normals ``[F, 3]`` (|n| = 2 * area)."""
    tri = triangles.long()
    v0, v1, v2 = positions[tri[:, 0]], positions[tri[:, 1]], positions[tri[:, 2]]
    return torch.linalg.cross(v1 - v0, v2 - v0)


def vertex_normals(positions: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals ``[V, 3]``; unreferenced vertices get (0, 0, 0)."""
    fn = face_normals(positions, triangles)
    n = torch.zeros_like(positions)
    tri = triangles.long()
    for k in range(3):
        n.index_add_(0, tri[:, k], fn)
    return torch.nn.functional.normalize(n, dim=1, eps=1e-12)


def edges(triangles: torch.Tensor) -> torch.Tensor:
    """Unique undirected edges ``[E, 2]`` long (i < j) of a triangle list."""
    tri = triangles.long()
    e = torch.cat([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
    e = torch.sort(e, dim=1).values
    return torch.unique(e, dim=0)


def face_pairs(triangles: torch.Tensor) -> torch.Tensor:
    """Pairs of faces ``[P, 2]`` long that share an edge (manifold edges only)."""
    tri = triangles.long()
    n = tri.shape[0]
    e = torch.cat([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
    e = torch.sort(e, dim=1).values
    face = torch.arange(n, device=tri.device).repeat(3)
    key = e[:, 0] * (int(tri.max()) + 1) + e[:, 1]
    order = torch.argsort(key)
    key, face = key[order], face[order]
    same = key[1:] == key[:-1]
    return torch.stack([face[:-1][same], face[1:][same]], dim=1)


class NormalOffsets(torch.nn.Module):
    """Per-vertex displacement ``d_i = strength * tanh(s_i) * n_i`` along the base mesh's normals.

    ``|d_i| <= strength`` always (strength is a fraction of the unit bounding sphere's radius),
    and the parameter starts at zero, so the shape is untouched until the prior pulls on it.
    Vertices at the same position (a mesh split along seams or sharp edges) share one parameter
    and one normal: they move together, so the surface never cracks open.

    Args:
        positions: ``[V, 3]`` float32 base positions (render space).
        triangles: ``[F, 3]`` int.
        strength: the bound, e.g. 0.1 = 10 % of the radius.
        movable: optional vertex indices (long) that may move; the others stay put (re-shaping
            only the selected faces). A position shared with a movable vertex moves too.
    """

    def __init__(self, positions: torch.Tensor, triangles: torch.Tensor, strength: float,
                 movable: torch.Tensor | None = None):
        super().__init__()
        positions = positions.float()
        _, group = torch.unique(positions, dim=0, return_inverse=True)  # coincident vertices -> one group
        n_groups = int(group.max()) + 1
        welded = group[triangles.long()]
        centres = torch.zeros(n_groups, 3, device=positions.device).index_copy_(0, group, positions)
        gate = torch.ones(n_groups, 1, device=positions.device)
        if movable is not None:
            gate = torch.zeros(n_groups, 1, device=positions.device)
            gate[group[movable.long().to(positions.device)]] = 1.0
        self.register_buffer("group", group)
        self.register_buffer("normals", vertex_normals(centres, welded))
        self.register_buffer("gate", gate)
        self.register_buffer("edge_index", edges(welded))
        self.register_buffer("pairs", face_pairs(triangles))
        self.strength = float(strength)
        self.scalar = torch.nn.Parameter(torch.zeros(n_groups, 1, device=positions.device))

    def _group_offsets(self) -> torch.Tensor:
        return self.strength * torch.tanh(self.scalar) * self.gate * self.normals

    def forward(self) -> torch.Tensor:
        """Displacements ``[V, 3]`` float32 in render space."""
        return self._group_offsets()[self.group]

    def laplacian_loss(self) -> torch.Tensor:
        """Mean squared difference of displacement along edges, relative to ``strength^2``: smooth offsets."""
        if self.edge_index.numel() == 0:
            return self.scalar.new_zeros(())
        d = self._group_offsets()
        i, j = self.edge_index[:, 0], self.edge_index[:, 1]
        return ((d[i] - d[j]) ** 2).sum(dim=1).mean() / max(self.strength**2, 1e-12)

    def normal_consistency_loss(self, base: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
        """How much the dihedral cosines between neighbouring faces changed from the base mesh (0 = unchanged)."""
        if self.pairs.numel() == 0:
            return base.new_zeros(())
        n0 = torch.nn.functional.normalize(face_normals(base, triangles), dim=1, eps=1e-12)
        n1 = torch.nn.functional.normalize(face_normals(base + self.forward(), triangles), dim=1, eps=1e-12)
        a, b = self.pairs[:, 0], self.pairs[:, 1]
        cos0 = (n0[a] * n0[b]).sum(dim=1)
        cos1 = (n1[a] * n1[b]).sum(dim=1)
        return (cos0 - cos1).clamp(min=0).mean()
