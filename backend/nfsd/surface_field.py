"""A texture whose coarse colour lives on the surface in 3D: seamless by construction.

The UV pyramid (``nfsd.texture.PyramidTexture``) keeps its coarse levels in UV space, so the two
sides of a UV seam are separate parameters that only the rendered views tie together: the coarse
bands of a pattern stop at the seam and rarely line up (BENCHMARKS.md, "Seams"). Here the coarse
levels are small 3D grids of logits around the object; every texel takes the grid's value at the
3D surface point it is laid on, so the two texels that show one point from both sides of a seam
read the same coarse colour. Only the finest UV level adds detail per texel, damped:

    image = sigmoid( up(G_8 + up(G_16 + ... G_64))(point(texel)) + detail_scale * L_size(texel) )

Both choices were measured on the demo (BENCHMARKS.md, "Seams"): one UV level rather than two halves
the seam mismatch left on the cube (0.067 -> 0.037 after 30 steps); a free per-texel level still
drew a visible step where a stripe edge ran along the blob's back seam (seed 1), and damping it by
``detail_scale = 0.25`` (a quarter of the learning rate, under Adam) took the mismatch from 0.015 to
0.005 with the same look: the 64^3 grid already carries the middle scales.

The texel -> point map is the mesh rasterized in UV space (``texel_points``); texels just outside
an island extend a neighbouring triangle's map, so bilinear lookups on a seam read the field
continued across it from both sides.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def texel_points(positions: torch.Tensor, triangles: torch.Tensor, uvs: torch.Tensor, size: int,
                 rasterizer=None, rings: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """The 3D surface point each texel centre is laid on.

    Args:
        positions: ``[V, 3]`` float32 vertex positions.
        triangles: ``[F, 3]`` int vertex indices.
        uvs: ``[F, 3, 2]`` float32 per-corner UVs, (0, 0) bottom-left.
        size: texture width and height.
        rasterizer: a ``nfsd.renderer`` rasterizer (default: the pure-PyTorch one on ``uvs.device``).
        rings: texels around each island that get a point too.

    Returns:
        ``(points [size, size, 3] float32, covered [size, size] bool)``, row 0 = v = 0 = bottom.
        A covered texel gets its triangle's point; a texel up to ``rings`` texels outside an island
        borrows a neighbouring texel's triangle and extends its map linearly (barycentrics outside
        [0, 1], clamped to [-1, 2]). A bilinear lookup on a seam reads half a texel beyond the
        border: extended, the field there continues across the seam as the other side's does,
        where a plain average of inner neighbours would pull both sides inwards, apart. Texels
        farther out get the mean point of their neighbours (``nfsd.texture.dilate``).
    """
    from .texture import dilate, uv_faces

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


class SurfaceFieldTexture(torch.nn.Module):
    """Coarse logits on 3D grids sampled at each texel's surface point, fine logits in UV space.

    Args:
        size: texture width and height.
        points: ``[size, size, 3]`` float32 surface point of every texel (``texel_points``), in the
            grid's box ``[-1, 1]^3`` (the engine's render space: the unit bounding sphere).
        grid_sizes: the 3D levels' cells per side, coarse to fine; summed like the pyramid's levels.
        uv_levels: how many of the finest UV pyramid levels (``size``, ``size / 2``, ...) add detail;
            each one adds seam mismatch back at its scale.
        init: optional ``[size, size, 3]`` float in [0, 1] (row 0 bottom), put in the finest UV level.
        detail_scale: the UV levels' weight in the sum; below 1 they move that much slower.
    """

    def __init__(self, size: int, points: torch.Tensor, grid_sizes=(8, 16, 32, 64), uv_levels: int = 1,
                 init: torch.Tensor | None = None, detail_scale: float = 0.25):
        super().__init__()
        from .texture import _logit

        if points.shape != (size, size, 3):
            raise ValueError(f"points must be [{size}, {size}, 3], got {list(points.shape)}")
        self.size = size
        self.detail_scale = float(detail_scale)
        self.grid_sizes = tuple(int(g) for g in grid_sizes)
        self.grids = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(1, 3, g, g, g)) for g in self.grid_sizes])
        uv_sizes = [size]
        while len(uv_sizes) < uv_levels and uv_sizes[0] >= 32:
            uv_sizes.insert(0, uv_sizes[0] // 2)
        self.uv_sizes = uv_sizes
        self.levels = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(1, 3, s, s)) for s in uv_sizes])
        # grid_sample wants (x, y, z) -> (W, H, D) of the grid: a grid [1, 1, size, size, 3] of points.
        self.register_buffer("points", points.float().clamp(-1, 1).reshape(1, 1, size, size, 3), persistent=False)
        if init is not None:
            with torch.no_grad():
                self.levels[-1].copy_(_logit(init.permute(2, 0, 1)[None].float()) / self.detail_scale)

    @classmethod
    def from_mesh(cls, size: int, positions: torch.Tensor, triangles: torch.Tensor, uvs: torch.Tensor,
                  init: torch.Tensor | None = None, **kwargs) -> "SurfaceFieldTexture":
        """Lay the field on a mesh whose ``positions`` ``[V, 3]`` lie in ``[-1, 1]^3``."""
        points, _ = texel_points(positions, triangles, uvs, size)
        return cls(size, points, init=init, **kwargs)

    def forward(self) -> torch.Tensor:
        """Texture ``[size, size, 3]`` float32 in [0, 1], row 0 bottom."""
        # Coarse to fine, one 2x trilinear upsampling per level, then one lookup per texel.
        field = self.grids[0]
        for grid, g in zip(list(self.grids)[1:], self.grid_sizes[1:]):
            field = F.interpolate(field, size=(g, g, g), mode="trilinear", align_corners=True) + grid
        total = F.grid_sample(field, self.points, mode="bilinear", padding_mode="border", align_corners=True)[:, :, 0]
        detail = self.levels[0]
        for level, s in zip(list(self.levels)[1:], self.uv_sizes[1:]):
            detail = F.interpolate(detail, size=(s, s), mode="bilinear", align_corners=False) + level
        return torch.sigmoid(total + self.detail_scale * detail)[0].permute(1, 2, 0)
