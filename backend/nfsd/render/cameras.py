"""Cameras around a mesh normalized to the unit sphere, in Blender's world axes.

Conventions (docs/ARCHITECTURE.md): Z up, right-handed, the front of an object faces -Y.
Azimuth 0 puts the camera on -Y looking along +Y (Blender's Front view), azimuth 90 on +X
(Blender's Right view); elevation is positive above the XY plane::

    eye = r * (sin(az) cos(el), -cos(az) cos(el), sin(el))

Matrices follow OpenGL: the camera looks down its -Z axis with +Y up, and
``pos_clip = mvp @ [x, y, z, 1]`` lands in clip space with NDC y up and depth in [-1, 1],
which is what nvdiffrast's ``rasterize`` expects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..errors import ConfigError


@dataclass
class CameraConfig:
    """Ranges for random cameras. Angles in degrees."""

    # From 45 deg below to 80 above, spread by area: the top and the underside of a mesh are seen
    # face-on, not only at grazing angles (at U[-10, 45] the built-in prior left dark specks and stray
    # blobs on the demo's top view; from -10 up, yellow and black blotches underneath), while most
    # views stay near the horizon, where an artist looks from (BENCHMARKS.md "Cameras").
    elevation_range: tuple[float, float] = (-45.0, 80.0)
    # "angle": elevation uniform in degrees; "area": camera directions uniform over that band of the
    # sphere (density ~ cos(elevation)), so views thin out towards the pole as the surface they face does.
    elevation_sampling: str = "area"
    fov_range: tuple[float, float] = (30.0, 45.0)  # vertical field of view
    # Camera distance r = margin / sin(fov / 2): the unit sphere's silhouette then spans
    # 1 / margin of the half-height of the view, whatever the fov.
    distance_margin: float = 1.1
    jitter: float = 0.05  # look-at target offset, uniform in a ball of this radius
    overhead_elevation: float = 40.0
    near: float = 0.05
    far: float = 100.0


@dataclass
class Cameras:
    """A batch of B views. All tensors float32 on the same device."""

    mvp: torch.Tensor  # [B,4,4] world -> OpenGL clip space
    eye: torch.Tensor  # [B,3] world-space camera positions
    azimuth: torch.Tensor  # [B] degrees
    elevation: torch.Tensor  # [B] degrees
    fov: torch.Tensor  # [B] vertical fov, degrees
    view_words: list[str] = field(default_factory=list)  # "front" / "side" / "back" / "overhead"

    def to(self, device) -> "Cameras":
        return Cameras(
            mvp=self.mvp.to(device),
            eye=self.eye.to(device),
            azimuth=self.azimuth.to(device),
            elevation=self.elevation.to(device),
            fov=self.fov.to(device),
            view_words=list(self.view_words),
        )

    def __len__(self) -> int:
        return self.mvp.shape[0]


def look_at(eye: torch.Tensor, target: torch.Tensor, up: Sequence[float] = (0.0, 0.0, 1.0)) -> torch.Tensor:
    """World -> camera matrices, OpenGL style (camera looks down -Z, +Y is up on screen).

    eye, target: [B,3]. up: world up (default Blender's +Z). Returns [B,4,4] float32.
    When the view direction is parallel to ``up`` (looking straight down or up) world +Y is used
    as up instead, which continues the azimuth-0 camera smoothly to elevation 90.
    """
    eye = eye.float()
    target = target.to(eye)
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    up_t = torch.as_tensor(up, dtype=eye.dtype, device=eye.device).expand_as(forward)
    right = torch.linalg.cross(forward, up_t, dim=-1)
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    alt_up = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype, device=eye.device).expand_as(forward)
    right = torch.where(degenerate, torch.linalg.cross(forward, alt_up, dim=-1), right)
    right = torch.nn.functional.normalize(right, dim=-1)
    cam_up = torch.linalg.cross(right, forward, dim=-1)

    rot = torch.stack([right, cam_up, -forward], dim=1)  # rows: camera axes in world space
    view = torch.zeros(eye.shape[0], 4, 4, dtype=eye.dtype, device=eye.device)
    view[:, :3, :3] = rot
    view[:, :3, 3] = -(rot @ eye.unsqueeze(-1)).squeeze(-1)
    view[:, 3, 3] = 1.0
    return view


def perspective(fov_deg: torch.Tensor, aspect: float = 1.0, near: float = 0.05, far: float = 100.0) -> torch.Tensor:
    """OpenGL perspective projection (camera -> clip space), like ``gluPerspective``.

    fov_deg: [B] vertical field of view in degrees; aspect = width / height. Returns [B,4,4].
    """
    fov_deg = torch.as_tensor(fov_deg, dtype=torch.float32).reshape(-1)
    f = 1.0 / torch.tan(torch.deg2rad(fov_deg) / 2)
    proj = torch.zeros(fov_deg.shape[0], 4, 4, dtype=torch.float32, device=fov_deg.device)
    proj[:, 0, 0] = f / aspect
    proj[:, 1, 1] = f
    proj[:, 2, 2] = (far + near) / (near - far)
    proj[:, 2, 3] = 2 * far * near / (near - far)
    proj[:, 3, 2] = -1.0
    return proj


def view_word(azimuth_deg: float, elevation_deg: float, overhead_elevation: float = 40.0) -> str:
    """The view-dependent prompt word for a camera: "front", "side", "back" or "overhead"."""
    if elevation_deg >= overhead_elevation:
        return "overhead"
    az = float(azimuth_deg) % 360.0
    if az < 45.0 or az > 315.0:
        return "front"
    if abs(az - 180.0) < 45.0:
        return "back"
    return "side"


def _eye_position(azimuth: torch.Tensor, elevation: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    az, el = torch.deg2rad(azimuth), torch.deg2rad(elevation)
    return distance[:, None] * torch.stack(
        [torch.sin(az) * torch.cos(el), -torch.cos(az) * torch.cos(el), torch.sin(el)], dim=-1
    )


def _make_cameras(azimuth, elevation, fov, target, config: CameraConfig) -> Cameras:
    distance = config.distance_margin / torch.sin(torch.deg2rad(fov) / 2)
    eye = _eye_position(azimuth, elevation, distance)
    mvp = perspective(fov, 1.0, config.near, config.far) @ look_at(eye, target)
    words = [
        view_word(a, e, config.overhead_elevation) for a, e in zip(azimuth.tolist(), elevation.tolist())
    ]
    return Cameras(mvp=mvp, eye=eye, azimuth=azimuth, elevation=elevation, fov=fov, view_words=words)


def _check_range(name: str, lo_hi: tuple[float, float], lo: float, hi: float) -> None:
    a, b = lo_hi
    if not (lo <= a <= b <= hi):
        raise ConfigError(f"CameraConfig.{name}={lo_hi} must satisfy {lo} <= min <= max <= {hi}")


def sample_cameras(
    batch: int, generator: torch.Generator | None = None, config: CameraConfig = CameraConfig()
) -> Cameras:
    """Random cameras around the unit sphere, sampled on the CPU (reproducible with ``generator``).

    Azimuth ~ U[0, 360), elevation in ``elevation_range`` (see ``elevation_sampling``), fov ~ U[fov_range], look-at target
    uniform in a ball of radius ``jitter`` around the origin. Move them with ``.to(device)``.
    """
    if batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")
    _check_range("elevation_range", config.elevation_range, -89.0, 89.0)
    _check_range("fov_range", config.fov_range, 1.0, 170.0)
    if config.elevation_sampling not in ("angle", "area"):
        raise ConfigError(f"CameraConfig.elevation_sampling={config.elevation_sampling!r} must be 'angle' or 'area'")
    if config.distance_margin < 1.0:
        raise ConfigError(f"CameraConfig.distance_margin={config.distance_margin} must be >= 1 (camera outside the unit sphere)")

    def uniform(lo: float, hi: float, n: int = batch) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    azimuth = uniform(0.0, 360.0)
    if config.elevation_sampling == "area":
        lo, hi = (math.sin(math.radians(e)) for e in config.elevation_range)
        elevation = torch.rad2deg(torch.asin(uniform(lo, hi)))
    else:
        elevation = uniform(*config.elevation_range)
    fov = uniform(*config.fov_range)
    direction = torch.nn.functional.normalize(torch.randn(batch, 3, generator=generator), dim=-1)
    target = config.jitter * uniform(0.0, 1.0).pow(1.0 / 3.0)[:, None] * direction
    return _make_cameras(azimuth, elevation, fov, target, config)


def orbit_cameras(
    azimuths: float | Sequence[float] | torch.Tensor,
    elevations: float | Sequence[float] | torch.Tensor,
    fov: float = 40.0,
    config: CameraConfig = CameraConfig(),
) -> Cameras:
    """Deterministic cameras looking at the origin (no jitter), for fixed view grids and tests.

    ``azimuths`` and ``elevations`` (degrees) broadcast against each other, e.g.
    ``orbit_cameras([0, 90, 180, 270], 15.0)``.
    """
    az, el = torch.broadcast_tensors(
        torch.as_tensor(azimuths, dtype=torch.float32).reshape(-1),
        torch.as_tensor(elevations, dtype=torch.float32).reshape(-1),
    )
    az, el = az.contiguous(), el.contiguous()
    fov_t = torch.full_like(az, float(fov))
    return _make_cameras(az, el, fov_t, torch.zeros(az.shape[0], 3), config)
