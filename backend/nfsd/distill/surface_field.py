"""A texture whose coarse colour lives on the surface in 3D: seamless by construction.

The UV pyramid (``nfsd.distill.texture.PyramidTexture``) keeps its coarse levels in UV space, so the two
sides of a UV seam are separate parameters that only the rendered views tie together: the coarse
bands of a pattern stop at the seam and rarely line up (BENCHMARKS.md, "Seams"). Here the coarse
levels are 3D grids of logits around the object; every texel takes the grids' values at the 3D
surface point it is laid on, so the two texels that show one point from both sides of a seam read
the same coarse colour. Only the finest UV level adds detail per texel, damped:

    image = sigmoid( sum_g trilinear(G_g, point(texel)) + detail_scale * L_size(texel) ),  g = 8, 16, ... 128

Grids up to 64^3 are dense (upsampled into one another, sampled once with grid_sample); a finer
grid stores only the nodes some texel reads (128^3: 121k of 2.1M on the demo's blob), so it costs
what the texels cost: a dense 128^3 level took 4x the CPU time of the whole 64^3 field per step,
the sparse one 1.7x (24 -> 40 ms at texture 256, 1 thread; ``python -m nfsd.distill.surface_field``).

Both choices were measured on the demo (BENCHMARKS.md, "Seams"): one UV level rather than two halves
the seam mismatch left on the cube (0.067 -> 0.037 after 30 steps); a free per-texel level still
drew a visible step where a stripe edge ran along the blob's back seam (seed 1), and damping it by
``detail_scale = 0.25`` (a quarter of the learning rate, under Adam) took the mismatch from 0.015 to
0.005 with the same look: the finest grid already carries the middle scales.

The finest grid has half the texture's texels per side, at most 128 (``default_grid_sizes``): on
the demo (texture 256) a 128^3 level over the 64^3 one raised the views' high-frequency energy by
30% (three seeds against two, no overlap) at the same seam mismatch (BENCHMARKS.md, "Seams").

The texel -> point map is the mesh rasterized in UV space (``texel_points``); texels just outside
an island extend a neighbouring triangle's map, so bilinear lookups on a seam read the field
continued across it from both sides.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .texels import dilate, logit, uv_faces


def texel_points(positions: torch.Tensor, triangles: torch.Tensor, uvs: torch.Tensor, size: int,
                 rasterizer=None, rings: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """The 3D surface point each texel centre is laid on.

    Args:
        positions: ``[V, 3]`` float32 vertex positions.
        triangles: ``[F, 3]`` int vertex indices.
        uvs: ``[F, 3, 2]`` float32 per-corner UVs, (0, 0) bottom-left.
        size: texture width and height.
        rasterizer: a ``nfsd.render.renderer`` rasterizer (default: the pure-PyTorch one on ``uvs.device``).
        rings: texels around each island that get a point too.

    Returns:
        ``(points [size, size, 3] float32, covered [size, size] bool)``, row 0 = v = 0 = bottom.
        A covered texel gets its triangle's point; a texel up to ``rings`` texels outside an island
        borrows a neighbouring texel's triangle and extends its map linearly (barycentrics outside
        [0, 1], clamped to [-1, 2]). A bilinear lookup on a seam reads half a texel beyond the
        border: extended, the field there continues across the seam as the other side's does,
        where a plain average of inner neighbours would pull both sides inwards, apart. Texels
        farther out get the mean point of their neighbours (``nfsd.distill.texels.dilate``).
    """
    face = uv_faces(uvs, size, rasterizer)  # float face index, -1 where no triangle covers the texel centre
    covered = face >= 0
    # Ring by ring, an uncovered texel takes a covered neighbour's triangle (any one: all are
    # adjacent in UV, and most share the border the texel lies beyond).
    grown = face[None, None]
    for _ in range(rings):
        grown = torch.where(grown >= 0, grown, F.max_pool2d(grown, 3, stride=1, padding=1))
    face = grown[0, 0].long()
    has = face >= 0
    idx = face[has]
    centre = (torch.arange(size, device=uvs.device, dtype=torch.float32) + 0.5) / size
    v, u = torch.meshgrid(centre, centre, indexing="ij")  # row = v (row 0 bottom), column = u
    p = torch.stack([u[has], v[has]], dim=-1)
    a, b, c = uvs.float()[idx].unbind(1)
    e1, e2, d = b - a, c - a, p - a
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    ok = det.abs() > 1e-12  # zero-area UV triangles have no map to extend
    det = torch.where(ok, det, torch.ones_like(det))
    w1 = ((d[:, 0] * e2[:, 1] - d[:, 1] * e2[:, 0]) / det).clamp(-1, 2)
    w2 = ((e1[:, 0] * d[:, 1] - e1[:, 1] * d[:, 0]) / det).clamp(-1, 2)
    corner_pos = positions.float()[triangles.long()[idx]]  # [N, 3, 3]
    point = corner_pos[:, 0] + w1[:, None] * (corner_pos[:, 1] - corner_pos[:, 0]) + \
        w2[:, None] * (corner_pos[:, 2] - corner_pos[:, 0])
    points = torch.zeros(size, size, 3, device=uvs.device)
    known = torch.zeros(size, size, dtype=torch.bool, device=uvs.device)
    flat = has.nonzero(as_tuple=True)
    points[flat[0][ok], flat[1][ok]] = point[ok]
    known[flat[0][ok], flat[1][ok]] = True
    return dilate(points, known, iterations=4), covered


DENSE_MAX = 64  # grids up to this many nodes per side are dense; finer ones keep the nodes texels read


def default_grid_sizes(size: int, finest: int = 128) -> tuple[int, ...]:
    """The 3D levels for a ``size`` texture: 8, 16, ... up to ``size / 2`` nodes per side, at most ``finest``."""
    top = max(8, min(finest, size // 2))
    sizes = [8]
    while sizes[-1] * 2 <= top:
        sizes.append(sizes[-1] * 2)
    return tuple(sizes)


def _trilinear(points: torch.Tensor, g: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Trilinear lookup of ``points`` ``[N, 3]`` in ``[-1, 1]^3`` on a grid of ``g`` nodes per side
    (node 0 at -1, node g-1 at +1): the 8 surrounding nodes ``[N, 8]`` int64 (``x + g (y + g z)``)
    and their weights ``[N, 8]`` float32 (summing to 1)."""
    x = (points + 1) * (0.5 * (g - 1))
    base = x.floor().clamp(0, g - 2)
    f = (x - base).clamp(0, 1)
    base = base.long()
    nodes, weights = [], []
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                d = torch.tensor([dx, dy, dz], device=points.device)
                corner = base + d
                nodes.append(corner[:, 0] + g * (corner[:, 1] + g * corner[:, 2]))
                weights.append(torch.where(d.bool(), f, 1 - f).prod(1))
    return torch.stack(nodes, 1), torch.stack(weights, 1)


class SurfaceFieldTexture(torch.nn.Module):
    """Coarse logits on 3D grids sampled at each texel's surface point, fine logits in UV space.

    Args:
        size: texture width and height.
        points: ``[size, size, 3]`` float32 surface point of every texel (``texel_points``), in the
            grid's box ``[-1, 1]^3`` (the engine's render space: the unit bounding sphere).
        grid_sizes: the 3D levels' nodes per side (``align_corners=True``), coarse to fine; summed
            like the pyramid's levels (default: ``default_grid_sizes(size)``). ``grids[k]`` is
            ``[1, C, g, g, g]`` for ``g <= DENSE_MAX``, else ``[nodes some texel reads, C]``.
        uv_levels: how many of the finest UV pyramid levels (``size``, ``size / 2``, ...) add detail;
            each one adds seam mismatch back at its scale.
        init: optional ``[size, size, C]`` float in [0, 1] (row 0 bottom), put in the finest UV level.
        detail_scale: the UV levels' weight in the sum; below 1 they move that much slower.
        channels: C without ``init`` (3 colour; a pbr material has more); every grid and level has C.
    """

    def __init__(self, size: int, points: torch.Tensor, grid_sizes=None, uv_levels: int = 1,
                 init: torch.Tensor | None = None, detail_scale: float = 0.25, channels: int = 3):
        super().__init__()
        self.channels = channels = init.shape[-1] if init is not None else channels
        if points.shape != (size, size, 3):
            raise ValueError(f"points must be [{size}, {size}, 3], got {list(points.shape)}")
        self.size = size
        self.detail_scale = float(detail_scale)
        self.grid_sizes = tuple(int(g) for g in (grid_sizes or default_grid_sizes(size)))
        if list(self.grid_sizes) != sorted(self.grid_sizes) or self.grid_sizes[0] > DENSE_MAX:
            raise ValueError(f"grid_sizes must run coarse to fine from at most {DENSE_MAX}, got {self.grid_sizes}")
        flat_points = points.float().clamp(-1, 1).reshape(-1, 3)
        # grid_sample wants (x, y, z) -> (W, H, D) of the grid: a grid [1, 1, size, size, 3] of points.
        self.register_buffer("points", flat_points.reshape(1, 1, size, size, 3), persistent=False)
        grids, self._sparse = [], []
        for g in self.grid_sizes:
            if g <= DENSE_MAX:
                grids.append(torch.nn.Parameter(torch.zeros(1, channels, g, g, g, device=points.device)))
                continue
            nodes, weights = _trilinear(flat_points, g)
            used, rows = torch.unique(nodes, return_inverse=True)
            k = len(self._sparse)
            self.register_buffer(f"_rows{k}", rows.int(), persistent=False)  # [N, 8] rows of the level's parameter
            self.register_buffer(f"_weights{k}", weights, persistent=False)  # [N, 8]
            self.register_buffer(f"_nodes{k}", used, persistent=False)  # [K] node x + g (y + g z) of each row
            self._sparse.append(len(grids))
            grids.append(torch.nn.Parameter(torch.zeros(len(used), channels, device=points.device)))
        self.grids = torch.nn.ParameterList(grids)
        uv_sizes = [size]
        while len(uv_sizes) < uv_levels and uv_sizes[0] >= 32:
            uv_sizes.insert(0, uv_sizes[0] // 2)
        self.uv_sizes = uv_sizes
        self.levels = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(1, channels, s, s)) for s in uv_sizes])
        if init is not None:
            with torch.no_grad():
                self.levels[-1].copy_(logit(init.permute(2, 0, 1)[None].float()) / self.detail_scale)

    @classmethod
    def from_mesh(cls, size: int, positions: torch.Tensor, triangles: torch.Tensor, uvs: torch.Tensor,
                  init: torch.Tensor | None = None, **kwargs) -> "SurfaceFieldTexture":
        """Lay the field on a mesh whose ``positions`` ``[V, 3]`` lie in ``[-1, 1]^3``."""
        points, _ = texel_points(positions, triangles, uvs, size)
        return cls(size, points, init=init, **kwargs)

    def forward(self) -> torch.Tensor:
        """Texture ``[size, size, C]`` float32 in [0, 1], row 0 bottom."""
        dense = [(grid, g) for grid, g in zip(self.grids, self.grid_sizes) if g <= DENSE_MAX]
        field = dense[0][0]
        for grid, g in dense[1:]:  # coarse to fine, one trilinear upsampling per level
            field = F.interpolate(field, size=(g, g, g), mode="trilinear", align_corners=True) + grid
        total = F.grid_sample(field, self.points, mode="bilinear", padding_mode="border", align_corners=True)[:, :, 0]
        for k, index in enumerate(self._sparse):
            rows, weights = getattr(self, f"_rows{k}"), getattr(self, f"_weights{k}")  # int32 rows index as they are
            value = (self.grids[index][rows] * weights.unsqueeze(-1)).sum(1)  # [N, C]
            total = total + value.t().reshape(1, self.channels, self.size, self.size)
        detail = self.levels[0]
        for level, s in zip(list(self.levels)[1:], self.uv_sizes[1:]):
            detail = F.interpolate(detail, size=(s, s), mode="bilinear", align_corners=False) + level
        return torch.sigmoid(total + self.detail_scale * detail)[0].permute(1, 2, 0)


def _bench(size: int = 256, steps: int = 10) -> None:
    """Time a step (forward, backward, Adam) of the field on the demo's blob, finest grid 64 vs 128."""
    import time

    from ..geometry.builtin_meshes import builtin_mesh
    from ..geometry.unwrap import ensure_uvs

    torch.set_num_threads(1)
    mesh = ensure_uvs(builtin_mesh("default"))
    pos, tri, uvs = (torch.from_numpy(a) for a in (mesh.positions, mesh.triangles, mesh.uvs))
    points, _ = texel_points(pos, tri, uvs, size)
    for finest in (64, 128):
        tex = SurfaceFieldTexture(size, points, grid_sizes=default_grid_sizes(size, finest))
        opt = torch.optim.Adam(tex.parameters(), 0.02)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            tex().sum().backward()
            opt.step()
            opt.zero_grad()
            times.append(time.perf_counter() - t0)
        print(f"texture {size}, grids {tex.grid_sizes}: {sorted(times)[steps // 2] * 1000:.0f} ms a step "
              f"(median of {steps}, 1 thread), parameters {sum(p.numel() for p in tex.parameters()):,}")


if __name__ == "__main__":
    _bench()
