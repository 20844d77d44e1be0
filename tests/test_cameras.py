"""Cameras follow Blender's axes: Z up, the front of an object faces -Y."""

import math

import pytest
import torch

from nfsd.render.cameras import CameraConfig, look_at, orbit_cameras, perspective, sample_cameras, view_word
from nfsd.errors import ConfigError
from nfsd.render.torch_rasterizer import TorchRasterizer
from nfsd.render.renderer import render_views


def two_coloured_quads():
    """A red quad at y = -0.5 facing -Y (the front) and a blue one at y = +0.5 facing +Y (the back).

    Texture: 2 texels side by side, red at u < 0.5, blue at u > 0.5."""
    s = 0.5
    front = [[-s, -0.5, -s], [s, -0.5, -s], [s, -0.5, s], [-s, -0.5, s]]
    back = [[s, 0.5, -s], [-s, 0.5, -s], [-s, 0.5, s], [s, 0.5, s]]
    positions = torch.tensor(front + back, dtype=torch.float32)
    triangles = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]], dtype=torch.int32)
    uvs = torch.tensor([[0.25, 0.5]] * 6 + [[0.75, 0.5]] * 6).view(4, 3, 2)
    texture = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    return positions, triangles, uvs, texture


def test_front_camera_sees_the_minus_y_side_and_back_camera_the_other():
    positions, triangles, uvs, texture = two_coloured_quads()
    cameras = orbit_cameras([0, 180], [0, 0])
    out = render_views(TorchRasterizer(), positions, triangles, uvs, texture, cameras, 32)
    centre = out.image[:, :, 16, 16]
    assert torch.allclose(centre[0], torch.tensor([1.0, 0.0, 0.0]))  # front: red
    assert torch.allclose(centre[1], torch.tensor([0.0, 0.0, 1.0]))  # back: blue
    assert cameras.view_words == ["front", "back"]


def test_azimuths_put_the_camera_on_blender_axes():
    cameras = orbit_cameras([0, 90, 180, 270], 0.0, fov=40.0)
    r = 1.1 / math.sin(math.radians(20))
    expected = torch.tensor([[0, -r, 0], [r, 0, 0], [0, r, 0], [-r, 0, 0]], dtype=torch.float32)
    assert torch.allclose(cameras.eye, expected, atol=1e-5)
    up = orbit_cameras(0, 90.0).eye[0]
    assert up[2] > 0 and torch.allclose(up[:2], torch.zeros(2), atol=1e-5)


def test_front_view_has_x_to_the_right_and_z_up():
    mvp = orbit_cameras([0], [0]).mvp[0]
    right, up = mvp @ torch.tensor([0.5, 0, 0, 1.0]), mvp @ torch.tensor([0, 0, 0.5, 1.0])
    assert right[0] / right[3] > 0.1 and abs(right[1] / right[3]) < 1e-6
    assert up[1] / up[3] > 0.1 and abs(up[0] / up[3]) < 1e-6


def test_look_at_and_perspective_are_opengl():
    eye, target = torch.tensor([[1.0, -3.0, 2.0]]), torch.tensor([[0.2, 0.1, -0.3]])
    view = look_at(eye, target)
    assert torch.allclose(view[0, :3, :3] @ view[0, :3, :3].T, torch.eye(3), atol=1e-6)
    in_camera = view[0] @ torch.cat([target[0], torch.ones(1)])
    assert torch.allclose(in_camera[:2], torch.zeros(2), atol=1e-6) and in_camera[2] < 0  # looks down -Z
    proj = perspective(torch.tensor([60.0]), near=0.5, far=10.0)[0]
    for depth, ndc_z in [(0.5, -1.0), (10.0, 1.0)]:
        p = proj @ torch.tensor([0.0, 0.0, -depth, 1.0])
        assert (p[2] / p[3]).item() == pytest.approx(ndc_z, abs=1e-5)


@pytest.mark.parametrize(
    "azimuth, elevation, word",
    [(0, 0, "front"), (44.9, 10, "front"), (-30, 0, "front"), (45, 0, "side"), (90, 0, "side"),
     (135.1, 0, "back"), (180, 39.9, "back"), (270, 0, "side"), (200, 40, "overhead")],
)
def test_view_words(azimuth, elevation, word):
    assert view_word(azimuth, elevation) == word


def test_sample_cameras_is_reproducible_and_within_ranges():
    config = CameraConfig(elevation_range=(-5.0, 30.0), fov_range=(35.0, 40.0))
    a = sample_cameras(64, torch.Generator().manual_seed(3), config)
    b = sample_cameras(64, torch.Generator().manual_seed(3), config)
    c = sample_cameras(64, torch.Generator().manual_seed(4), config)
    assert torch.equal(a.mvp, b.mvp) and a.view_words == b.view_words
    assert not torch.equal(a.mvp, c.mvp)
    assert len(a) == 64 and a.mvp.dtype == torch.float32
    assert torch.all((a.azimuth >= 0) & (a.azimuth < 360))
    assert torch.all((a.elevation >= -5) & (a.elevation <= 30))
    assert torch.all((a.fov >= 35) & (a.fov <= 40))
    assert a.view_words == [view_word(az, el) for az, el in zip(a.azimuth.tolist(), a.elevation.tolist())]
    distance = config.distance_margin / torch.sin(torch.deg2rad(a.fov) / 2)
    assert torch.allclose(a.eye.norm(dim=-1), distance)


def test_area_sampling_spreads_views_like_the_surface_they_face():
    """``elevation_sampling="area"``: the share of views above 45 deg is the share of the band's
    sphere area there, (sin 80 - sin 45) / (sin 80 - sin -10) = 0.24, not 35 / 90 = 0.39."""
    config = CameraConfig(elevation_range=(-10.0, 80.0), elevation_sampling="area")
    el = sample_cameras(20000, torch.Generator().manual_seed(0), config).elevation
    assert el.min() >= -10 and el.max() <= 80
    assert (el > 45).float().mean().item() == pytest.approx(0.240, abs=0.01)
    with pytest.raises(ConfigError, match="elevation_sampling"):
        sample_cameras(1, None, CameraConfig(elevation_sampling="cosine"))


def test_unit_sphere_projects_inside_every_sampled_view():
    cameras = sample_cameras(256, torch.Generator().manual_seed(0))
    points = torch.nn.functional.normalize(torch.randn(4000, 3, generator=torch.Generator().manual_seed(1)), dim=-1)
    clip = torch.einsum("bij,vj->bvi", cameras.mvp, torch.cat([points, torch.ones(4000, 1)], dim=-1))
    ndc = clip[..., :3] / clip[..., 3:]
    assert torch.all(clip[..., 3] > 0)
    assert ndc[..., :2].abs().max() < 1.0
    assert ndc[..., :2].abs().amax(dim=(1, 2)).min() > 0.8  # and it fills the view
