"""Procedural textures on real shapes: training views for the built-in prior, rendered by the engine.

Distillation shows the prior renders of meshes (legs, horns, ears, thin parts, several UV islands)
from the engine's own cameras, lit the engine's way. This module makes such views cheaply:

1. :func:`training_meshes` builds varied meshes with UVs: creatures made of ellipsoid parts (a
   body, a head, legs, ears or horns, a tail), each part its own UV island in an atlas; the same
   creatures unwrapped by xatlas (chart layouts like a scan's); the built-in blob, sphere and cube;
   tori. None of them is a benchmark mesh (``benchmarks/meshes``).
2. :func:`bake_views` renders each mesh once per camera with :func:`nfsd.render.renderer.render_views`
   (the engine's cameras, random lighting) into a *G-buffer* per view: per-pixel UV, position,
   shading and coverage.
3. :func:`scene_images` textures any batch of G-buffers with fresh procedural patterns (the
   dataset's :func:`~nfsd.builtin.training.patterns.pattern_mask`), laid on the UVs or projected in 3D,
   over a random background: each training step sees new textures on the baked shapes.

G-buffer channels (``ViewBank.buffers``, float16 ``[N, 7, S, S]``, row 0 = top):
``0:2`` UV in [0, 1] (row 0 of the texture = bottom), ``2:5`` position in the unit sphere,
``5`` shading (ambient + diffuse, times coverage), ``6`` coverage (antialiased).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ...render.cameras import CameraConfig, sample_cameras
from ...geometry.mesh import Mesh
from ...geometry.builtin_meshes import latlong_mesh, builtin_mesh
from ...render.renderer import flat_lighting, get_rasterizer, random_lighting, render_views
from .patterns import pattern_mask

GBUFFER_CHANNELS = 7


# ----------------------------------------------------------------------------------------------
# Meshes
# ----------------------------------------------------------------------------------------------


def _ellipsoid(center, radii, rotation: np.ndarray, n_lon: int = 20, n_lat: int = 10) -> Mesh:
    part = latlong_mesh(n_lon, n_lat, lambda d: np.ones(len(d)))
    positions = (part.positions * np.asarray(radii, np.float32)) @ rotation.T + np.asarray(center, np.float32)
    return Mesh(positions=positions.astype(np.float32), triangles=part.triangles, uvs=part.uvs)


def _rotation(axis: str, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], np.float32)
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], np.float32)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float32)


def _atlas(parts: list[Mesh], rng: np.random.Generator) -> Mesh:
    """One mesh from ``parts``, each part's UVs scaled into its own cell of a grid atlas."""
    cells = math.ceil(math.sqrt(len(parts)))
    order = rng.permutation(len(parts))
    positions, triangles, uvs, offset = [], [], [], 0
    for slot, index in enumerate(order):
        part = parts[index]
        row, col = divmod(slot, cells)
        uv = (part.uvs * 0.94 + 0.03 + np.array([col, row], np.float32)) / cells
        positions.append(part.positions)
        triangles.append(part.triangles + offset)
        uvs.append(uv)
        offset += part.num_vertices
    return Mesh(positions=np.concatenate(positions), triangles=np.concatenate(triangles).astype(np.int32),
                uvs=np.concatenate(uvs).astype(np.float32))


def creature(rng: np.random.Generator) -> Mesh:
    """A four-legged creature of ellipsoid parts (body, head, legs, ears or horns, maybe a tail),
    each part a UV island; about 2 units long, facing -Y."""
    length, width, height = rng.uniform(0.8, 1.3), rng.uniform(0.35, 0.6), rng.uniform(0.3, 0.5)
    leg_length = rng.uniform(0.35, 0.8)
    body_z = leg_length + height * 0.6
    identity = np.eye(3, dtype=np.float32)
    parts = [_ellipsoid((0, 0, body_z), (width, length, height), identity)]
    head_r = rng.uniform(0.25, 0.42)
    neck = rng.uniform(0.0, 0.35)
    head = (0.0, -length - head_r * 0.4, body_z + neck)
    parts.append(_ellipsoid(head, (head_r * 0.85, head_r * rng.uniform(1.0, 1.6), head_r), identity))
    leg_r = rng.uniform(0.07, 0.14)
    for sx in (-1, 1):
        for sy in (-1, 1):
            center = (sx * width * 0.6, sy * length * 0.6, leg_length / 2 + 0.05)
            parts.append(_ellipsoid(center, (leg_r, leg_r, leg_length / 2 + 0.1), identity, 12, 8))
    kind = rng.integers(3)  # 0 ears, 1 horns, 2 neither
    if kind < 2:
        for sx in (-1, 1):
            tilt = _rotation("y", sx * rng.uniform(0.2, 0.7))
            size = (0.05, 0.12, 0.2) if kind == 0 else (0.04, 0.04, rng.uniform(0.2, 0.35))
            top = (head[0] + sx * head_r * 0.5, head[1] + 0.05, head[2] + head_r * 0.9)
            parts.append(_ellipsoid(top, size, tilt, 12, 8))
    if rng.random() < 0.6:
        tail = _rotation("x", rng.uniform(0.3, 1.2))
        parts.append(_ellipsoid((0, length + 0.15, body_z + 0.1), (0.05, 0.05, rng.uniform(0.25, 0.45)), tail, 12, 8))
    return _atlas(parts, rng)


def torus(rng: np.random.Generator, n_u: int = 48, n_v: int = 16) -> Mesh:
    """A torus with one rectangular UV island (u around the ring, v around the tube)."""
    major, minor = 1.0, rng.uniform(0.2, 0.5)
    u, v = np.meshgrid(np.arange(n_u + 1) / n_u, np.arange(n_v + 1) / n_v, indexing="ij")
    a, b = 2 * np.pi * u, 2 * np.pi * v
    positions = np.stack([(major + minor * np.cos(b)) * np.cos(a), (major + minor * np.cos(b)) * np.sin(a),
                          minor * np.sin(b)], -1).reshape(-1, 3)
    uv = np.stack([u, v], -1).reshape(-1, 2) * 0.98 + 0.01
    idx = np.arange((n_u + 1) * (n_v + 1)).reshape(n_u + 1, n_v + 1)
    quads = np.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]], -1).reshape(-1, 4)
    triangles = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]]).astype(np.int32)
    return Mesh(positions=positions.astype(np.float32), triangles=triangles, uvs=uv[triangles].astype(np.float32))


def normalized(mesh: Mesh, rng: np.random.Generator | None = None) -> Mesh:
    """``mesh`` centred and scaled into the unit sphere (as the engine frames it), turned by a
    random angle about Z when ``rng`` is given."""
    p = mesh.positions.astype(np.float64)
    p = p - (p.min(0) + p.max(0)) / 2
    p = p / np.linalg.norm(p, axis=1).max()
    if rng is not None:
        p = p @ _rotation("z", rng.uniform(0, 2 * np.pi)).T
    return Mesh(positions=p.astype(np.float32), triangles=mesh.triangles, uvs=mesh.uvs)


def training_meshes(count: int = 24, seed: int = 0, xatlas_share: float = 0.3) -> list[Mesh]:
    """``count`` normalized meshes with UVs: mostly creatures (a ``xatlas_share`` of them unwrapped
    by xatlas instead of their part atlas), the built-in blob, sphere and cube, and tori."""
    from ...geometry.unwrap import unwrap

    rng = np.random.default_rng(seed)
    meshes = [builtin_mesh(name) for name in ("blob", "sphere", "cube")]
    while len(meshes) < count:
        if len(meshes) % 6 == 5:
            meshes.append(torus(rng))
            continue
        mesh = creature(rng)
        if rng.random() < xatlas_share:
            mesh = Mesh(positions=mesh.positions, triangles=mesh.triangles,
                        uvs=unwrap(mesh.positions, mesh.triangles))
        meshes.append(mesh)
    return [normalized(mesh, rng) for mesh in meshes[:count]]


# ----------------------------------------------------------------------------------------------
# G-buffers
# ----------------------------------------------------------------------------------------------


@dataclass
class ViewBank:
    """Baked views: ``buffers`` float16 ``[N, 7, S, S]`` (module doc), ``mesh_index`` int64 ``[N]``."""

    buffers: torch.Tensor
    mesh_index: torch.Tensor

    def __len__(self) -> int:
        return int(self.buffers.shape[0])

    @property
    def size(self) -> int:
        return int(self.buffers.shape[-1])

    def save(self, path) -> None:
        torch.save({"buffers": self.buffers, "mesh_index": self.mesh_index}, path)

    @classmethod
    def load(cls, path) -> "ViewBank":
        data = torch.load(path, weights_only=True)
        return cls(data["buffers"], data["mesh_index"])


def _ramp(size: int = 512) -> torch.Tensor:
    """``[size, size, 3]`` texture whose bilinear lookup returns the UV itself: (u, v, 0)."""
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    v, u = torch.meshgrid(c, c, indexing="ij")  # row 0 = bottom = v near 0
    return torch.stack([u, v, torch.zeros_like(u)], -1)


def bake_views(meshes: list[Mesh], views_per_mesh: int, size: int = 64, seed: int = 0,
               cameras: CameraConfig = CameraConfig()) -> ViewBank:
    """Render every mesh from ``views_per_mesh`` random engine cameras at ``size`` px.

    Four passes through :func:`render_views` (the PyTorch rasterizer, bilinear lookups): the UVs
    and the positions (as lookups into a ramp texture) and a white texture under
    :func:`random_lighting` (the shading and the coverage)."""
    g = torch.Generator().manual_seed(seed)
    rasterizer = get_rasterizer("torch")
    ramp = _ramp()
    buffers, owner = [], []
    for index, mesh in enumerate(meshes):
        positions = torch.from_numpy(mesh.positions)
        triangles = torch.from_numpy(mesh.triangles)
        cams = sample_cameras(views_per_mesh, g, cameras)
        flat = flat_lighting(views_per_mesh, (0.0, 0.0, 0.0))

        def lookup(corner_values: np.ndarray) -> torch.Tensor:
            out = render_views(rasterizer, positions, triangles, torch.from_numpy(corner_values.astype(np.float32)),
                               ramp, cams, size, flat, filter_mode="linear")
            return out.albedo[:, :2]

        corners = (mesh.positions[mesh.triangles] + 1) / 2  # [F, 3, 3] in [0, 1]
        uv = lookup(mesh.uvs)
        xy = lookup(corners[..., :2])
        z = lookup(np.stack([corners[..., 2], np.zeros_like(corners[..., 2])], -1))[:, :1]
        light = random_lighting(views_per_mesh, g, eye=cams.eye)
        light.background.zero_()
        lit = render_views(rasterizer, positions, triangles, torch.from_numpy(mesh.uvs), torch.ones(4, 4, 3), cams,
                           size, light, filter_mode="linear")
        position = torch.cat([xy, z], 1) * 2 - 1
        buffers.append(torch.cat([uv, position, lit.image[:, :1], lit.mask], 1).half())
        owner.append(torch.full((views_per_mesh,), index, dtype=torch.int64))
    return ViewBank(torch.cat(buffers), torch.cat(owner))


# ----------------------------------------------------------------------------------------------
# Texturing baked views
# ----------------------------------------------------------------------------------------------


def pattern_coordinates(buffers: torch.Tensor, g: torch.Generator, projected_share: float = 0.5) -> torch.Tensor:
    """``[N, 2, S, S]`` pattern coordinates for G-buffers ``buffers``: the UVs (scaled by 1-2.5 and
    shifted: a texture painted on the UV layout, cut at its seams) or, for a ``projected_share``,
    the positions projected on two random orthogonal axes (a pattern painted on the object in 3D,
    continuous across seams)."""
    n = buffers.shape[0]
    uv = buffers[:, 0:2].float()
    scale = (1.0 + 1.5 * torch.rand(n, 1, 1, 1, generator=g))
    from_uv = uv * scale + torch.rand(n, 2, 1, 1, generator=g)
    axes = torch.linalg.qr(torch.randn(n, 3, 3, generator=g)).Q[:, :, :2]  # [N, 3, 2] orthonormal columns
    position = buffers[:, 2:5].float()
    projected = torch.einsum("nchw,ncd->ndhw", position, axes) * 0.5 + 0.5
    use_projected = (torch.rand(n, generator=g) < projected_share).view(n, 1, 1, 1)
    return torch.where(use_projected, projected, from_uv)


def scene_images(buffers: torch.Tensor, pattern_ids: torch.Tensor, colour_a: torch.Tensor, colour_b: torch.Tensor,
                 g: torch.Generator, period_range=(0.16, 0.42), projected_share: float = 0.5) -> torch.Tensor:
    """Textured renders ``[N, 3, S, S]`` in [0, 1] (row 0 = top) of G-buffers ``buffers``.

    ``pattern_ids`` int ``[N]`` (indices into ``dataset.PATTERNS``), ``colour_a``/``colour_b``
    float ``[N, 3, 1, 1]`` the pattern's two colours; the background is a random solid colour."""
    n, size = buffers.shape[0], buffers.shape[-1]
    xy = pattern_coordinates(buffers, g, projected_share)
    m = pattern_mask(pattern_ids, xy[:, 0], xy[:, 1], g, period_range, pixel=1.0 / size).unsqueeze(1)
    albedo = colour_a * (1 - m) + colour_b * m
    shade, cover = buffers[:, 5:6].float(), buffers[:, 6:7].float()
    background = torch.rand(n, 3, 1, 1, generator=g)
    return (albedo * shade + background * (1 - cover)).clamp(0, 1)
