"""TorchRasterizer against hand computations, and render_views' image conventions."""

import math

import pytest
import torch

from nfsd.render import renderer
from nfsd.render.cameras import orbit_cameras
from nfsd.errors import RendererError
from nfsd.render.renderer import Lighting, get_rasterizer, render_views
from nfsd.render.torch_rasterizer import TorchRasterizer
from nfsd.render.rasterizer import mip_levels, uv_pixel_derivatives
from nfsd.render.torch_rasterizer import mip_pyramid

R = TorchRasterizer()


def clip(points):
    """[V,4] list -> [1,V,4] float32 clip-space positions."""
    return torch.tensor(points, dtype=torch.float32).unsqueeze(0)


def pixel_centres(height, width):
    """NDC (x, y) of every pixel centre, [H,W] each, row 0 at the bottom."""
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return (2 * x + 1) / width - 1, (2 * y + 1) / height - 1


def test_coverage_of_a_triangle_matches_its_half_planes():
    pos = clip([[-0.6, -0.6, 0, 1], [0.6, -0.6, 0, 1], [-0.6, 0.7, 0, 1]])
    rast = R.rasterize(pos, torch.tensor([[0, 1, 2]], dtype=torch.int32), (8, 8))
    x, y = pixel_centres(8, 8)
    # Inside: right of x = -0.6, above y = -0.6, below the line through (0.6,-0.6) and (-0.6,0.7).
    inside = (x >= -0.6) & (y >= -0.6) & (1.3 * (x - 0.6) + 1.2 * (y + 0.6) <= 0)
    assert torch.equal(rast[0, ..., 3] == 1, inside)
    assert torch.all(rast[0, ..., 3][~inside] == 0)
    # Row 0 is the bottom: the right angle sits at the bottom-left.
    assert rast[0, 2, 2, 3] == 1 and rast[0, 5, 5, 3] == 0


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_nearer_triangle_wins_whatever_the_order(order):
    near = [[-1, -1, -0.5, 1], [3, -1, -0.5, 1], [-1, 3, -0.5, 1]]
    far = [[-1, -1, 0.5, 1], [3, -1, 0.5, 1], [-1, 3, 0.5, 1]]
    pos = clip(near + far)
    tris = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32)[list(order)]
    rast = R.rasterize(pos, tris, (4, 4))
    near_id = order.index(0) + 1
    assert torch.all(rast[0, ..., 3] == near_id)
    assert torch.allclose(rast[0, ..., 2], torch.full((4, 4), -0.5))


def test_barycentrics_are_perspective_correct():
    # Screen triangle (-1,-1), (1,-1), (-1,1) with w = 1, 2, 3 and z/w = 0.1, 0.2, 0.3.
    pos = clip([[-1, -1, 0.1, 1], [2, -2, 0.4, 2], [-3, 3, 0.9, 3]])
    rast = R.rasterize(pos, torch.tensor([[0, 1, 2]], dtype=torch.int32), (4, 4))
    # Pixel (1, 1), centre (-0.25, -0.25): screen barycentrics (1/4, 3/8, 3/8); dividing by w
    # and renormalizing gives (4/9, 3/9, 2/9). Depth z/w is affine on screen: 0.2125.
    u, v, zw, tid = rast[0, 1, 1].tolist()
    assert u == pytest.approx(4 / 9, abs=1e-6)
    assert v == pytest.approx(1 / 3, abs=1e-6)
    assert zw == pytest.approx(0.2125, abs=1e-6)
    assert tid == 1


def test_interpolate_constant_and_linear_attributes():
    pos = clip([[-1, -1, 0.1, 1], [2, -2, 0.4, 2], [-3, 3, 0.9, 3]])
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    rast = R.rasterize(pos, tri, (16, 16))
    covered = rast[0, ..., 3] > 0
    const = R.interpolate(torch.full((3, 1), 7.0), rast, tri)[0, ..., 0]
    assert covered.sum() > 50
    assert torch.allclose(const[covered], torch.tensor(7.0)) and torch.all(const[~covered] == 0)
    # Clip x and w are linear on the 3D triangle: their interpolated ratio is the pixel's NDC x.
    xw = R.interpolate(pos[0][:, [0, 3]], rast, tri)[0]
    x, _ = pixel_centres(16, 16)
    assert torch.allclose((xw[..., 0] / xw[..., 1])[covered], x[covered], atol=1e-5)


def test_position_gradient_of_interior_pixels_matches_finite_differences():
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    base = clip([[-0.7, -0.8, 0.1, 1.0], [1.3, -1.1, 0.3, 1.5], [-0.9, 1.6, 0.2, 2.0]])
    attr = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    weights = torch.randn(1, 16, 16, 2, generator=torch.Generator().manual_seed(0))
    interior = (R.rasterize(base, tri, (16, 16))[..., 3:] > 0).float()

    def loss(pos):
        rast = R.rasterize(pos, tri, (16, 16))
        return (R.interpolate(attr, rast, tri) * weights * interior).sum()

    pos = base.clone().requires_grad_()
    loss(pos).backward()
    eps = 1e-3
    for vertex, axis in [(0, 0), (1, 1), (2, 3), (2, 0)]:
        step = torch.zeros_like(base)
        step[0, vertex, axis] = eps
        numeric = (loss(base + step) - loss(base - step)) / (2 * eps)
        assert pos.grad[0, vertex, axis].item() == pytest.approx(numeric.item(), rel=2e-2, abs=1e-2)


def quad(right_edge):
    """A quad from x = -0.9 to x = right_edge over the full height, as two triangles."""
    e = right_edge
    pos = torch.stack(
        [
            torch.stack([torch.tensor(-0.9), torch.tensor(-2.0)]),
            torch.stack([e, torch.tensor(-2.0)]),
            torch.stack([e, torch.tensor(2.0)]),
            torch.stack([torch.tensor(-0.9), torch.tensor(2.0)]),
        ]
    )
    pos = torch.cat([pos, torch.zeros(4, 1), torch.ones(4, 1)], dim=-1).unsqueeze(0)
    return pos, torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32)


def antialiased_coverage(right_edge, size=16):
    pos, tri = quad(right_edge)
    rast = R.rasterize(pos, tri, (size, size))
    covered = (rast[..., 3:] > 0).float()
    return R.antialias(covered, rast, pos, tri).sum()


def test_antialiased_coverage_is_the_exact_area_and_its_gradient():
    # Columns are 0.125 NDC wide at 16 px; the edges at x = -0.9 and x = 0.3 cut pixels at
    # 20% and 40%. The diagonal between the two triangles is interior and must not blend.
    edge = torch.tensor(0.3, requires_grad=True)
    total = antialiased_coverage(edge)
    assert total.item() == pytest.approx(16 * 1.2 * 8, abs=1e-4)
    total.backward()
    assert edge.grad.item() == pytest.approx(16 * 8, rel=1e-4)  # rows * pixels per NDC unit
    eps = 0.01
    numeric = (antialiased_coverage(torch.tensor(0.3 + eps)) - antialiased_coverage(torch.tensor(0.3 - eps))) / (2 * eps)
    assert numeric.item() == pytest.approx(16 * 8, rel=1e-3)


def test_antialias_is_continuous_when_a_pixel_centre_changes_hands():
    # Pixel centres at x = 0.3125: just left and right of it the coverage differs by 2 * eps.
    left = antialiased_coverage(torch.tensor(0.3125 - 1e-4)).item()
    right = antialiased_coverage(torch.tensor(0.3125 + 1e-4)).item()
    assert right - left == pytest.approx(16 * 8 * 2e-4, abs=1e-3)


def test_antialiased_disc_has_the_area_and_perimeter_of_a_disc():
    # A 96-gon of radius r in NDC at 64 px: coverage ~ pi r^2 (W/2)(H/2), d/dr ~ 2 pi r (W/2)(H/2).
    # Edges of every slope: each is blended by the neighbours across it, counted once.
    angles = torch.linspace(0, 2 * math.pi, 97)[:-1]
    radius = torch.tensor(0.61, requires_grad=True)
    rim = torch.stack([radius * torch.cos(angles), radius * torch.sin(angles)], dim=-1)
    xy = torch.cat([torch.zeros(1, 2), rim])
    pos = torch.cat([xy, torch.zeros(97, 1), torch.ones(97, 1)], dim=-1).unsqueeze(0)
    tri = torch.tensor([[0, 1 + i, 1 + (i + 1) % 96] for i in range(96)], dtype=torch.int32)
    rast = R.rasterize(pos, tri, (64, 64))
    coverage = R.antialias((rast[..., 3:] > 0).float(), rast, pos, tri).sum()
    coverage.backward()
    assert coverage.item() == pytest.approx(math.pi * 0.61**2 * 32 * 32, rel=0.005)
    assert radius.grad.item() == pytest.approx(2 * math.pi * 0.61 * 32 * 32, rel=0.05)


def test_silhouette_gradient_of_a_growing_sphere_matches_finite_differences():
    # Near a smooth silhouette the silhouette triangles are seen edge-on: the gradient must still
    # come through (the mask is constant inside, so all of it comes from antialias).
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=3)
    positions = torch.tensor(sphere.vertices, dtype=torch.float32)
    triangles = torch.tensor(sphere.faces, dtype=torch.int32)
    uvs, texture = torch.zeros(len(triangles), 3, 2), torch.ones(2, 2, 3)
    cameras = orbit_cameras([0, 33], [0, 20])

    def coverage(scale):
        return render_views(R, positions * scale, triangles, uvs, texture, cameras, 64).mask.sum()

    scale = torch.tensor(0.8, requires_grad=True)
    coverage(scale).backward()
    eps = 0.03
    numeric = (coverage(torch.tensor(0.8 + eps)) - coverage(torch.tensor(0.8 - eps))) / (2 * eps)
    assert scale.grad.item() == pytest.approx(numeric.item(), rel=0.05)


def test_texture_gradients_pass_gradcheck():
    gen = torch.Generator().manual_seed(0)
    tex = torch.rand(1, 4, 5, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    uv = (0.05 + 0.9 * torch.rand(2, 3, 3, 2, generator=gen, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda t, u: R.texture(t, u), (tex, uv))


def test_texture_row_zero_is_v_zero_and_borders_clamp():
    tex = torch.tensor([[[0.0], [1.0]], [[2.0], [3.0]]]).unsqueeze(0)  # row 0 = v in [0, 1/2)
    uv = torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [-3.0, 9.0]]).view(1, 1, 4, 2)
    assert R.texture(tex, uv).flatten().tolist() == pytest.approx([0.0, 1.0, 2.0, 2.0])


def test_mipmap_level_follows_the_pixel_footprint():
    tex = torch.rand(1, 8, 8, 3, generator=torch.Generator().manual_seed(1))
    uv = torch.tensor([0.4, 0.6]).view(1, 1, 1, 2)
    four_texels = torch.tensor([0.5, 0.0, 0.0, 0.5]).view(1, 1, 1, 4)  # 4 texels per pixel
    level2 = torch.nn.functional.avg_pool2d(tex.permute(0, 3, 1, 2), 4).permute(0, 2, 3, 1)
    trilinear = R.texture(tex, uv, "linear-mipmap-linear", uv_da=four_texels)
    assert torch.allclose(trilinear, R.texture(level2, uv), atol=1e-6)


@pytest.mark.parametrize("height, width, levels", [
    (1024, 1024, 10), (768, 768, 8), (1536, 1536, 9), (3072, 3072, 10), (1024, 768, 8), (8, 2, 3), (6, 1, 1),
    (3, 3, 0), (1, 1, 0),
])
def test_mip_levels_halve_while_every_side_above_one_is_even(height, width, levels):
    assert mip_levels(height, width) == levels


@pytest.mark.parametrize("size", [768, 1536])
def test_torch_mip_stack_at_a_non_power_of_two_size_stops_at_three_texels(size):
    tex = torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(2))
    pyramid = mip_pyramid(tex.permute(0, 3, 1, 2))
    assert len(pyramid) == mip_levels(size, size) + 1 and pyramid[-1].shape[-2:] == (3, 3)
    # A footprint wider than the texture clamps to that last level, as nvdiffrast's max level does.
    uv = torch.tensor([[0.3, 0.6], [0.5, 0.5]]).view(1, 1, 2, 2)
    huge = torch.tensor([4.0, 0.0, 0.0, 4.0]).expand(1, 1, 2, 4)
    coarsest = torch.nn.functional.avg_pool2d(tex.permute(0, 3, 1, 2), size // 3).permute(0, 2, 3, 1)
    assert torch.allclose(R.texture(tex, uv, "linear-mipmap-linear", uv_da=huge), R.texture(coarsest, uv), atol=1e-5)


def test_render_views_with_a_768_texture():
    positions, triangles, uvs = front_plane()
    colour = torch.tensor([0.2, 0.5, 0.8])
    out = render_views(R, positions, triangles, uvs, colour.expand(768, 768, 3), orbit_cameras([0], [0]), 16)
    interior = out.mask[0, 0] > 0.999
    assert interior.sum() > 16 and torch.allclose(out.albedo[0][:, interior].T, colour.expand(int(interior.sum()), 3))


def test_uv_pixel_derivatives_of_a_screen_aligned_quad():
    pos = clip([[-1, -1, 0, 1], [1, -1, 0, 1], [1, 1, 0, 1], [-1, 1, 0, 1]])
    tri = torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32)
    uv = (pos[0, :, :2] + 1) / 2  # u spans the 8 columns, v the 4 rows
    rast = R.rasterize(pos, tri, (4, 8))
    da = uv_pixel_derivatives(uv, tri, rast, pos, tri)
    expected = torch.tensor([1 / 8, 0.0, 0.0, 1 / 4]).expand(1, 4, 8, 4)
    assert torch.allclose(da, expected, atol=1e-6)


def front_plane(size=0.5):
    """A square in the XZ plane facing -Y; uv (0,0) at (min x, min z), (1,1) at (max x, max z)."""
    s = size
    positions = torch.tensor([[-s, 0, -s], [s, 0, -s], [s, 0, s], [-s, 0, s]], dtype=torch.float32)
    triangles = torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32)
    corner_uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    return positions, triangles, corner_uv[triangles.long()]


def test_bottom_left_texel_shows_at_the_bottom_left_of_the_front_view():
    positions, triangles, uvs = front_plane()
    texture = torch.ones(4, 4, 3)
    texture[0, 0] = torch.tensor([1.0, 0.0, 0.0])  # row 0 = bottom, col 0 = left
    out = render_views(R, positions, triangles, uvs, texture, orbit_cameras([0], [0]), 48)
    red = out.image[0, 0] - out.image[0, 1] > 0.5
    rows, cols = red.nonzero(as_tuple=True)
    covered_rows, covered_cols = (out.mask[0, 0] > 0.5).nonzero(as_tuple=True)
    assert len(rows) > 0
    # Row 0 of the returned image is the TOP: the red texel covers the bottom-left quarter of the
    # plane (largest rows, smallest columns), fading out bilinearly.
    top, bottom = covered_rows.min(), covered_rows.max()
    left, right = covered_cols.min(), covered_cols.max()
    assert torch.all((rows - top) / (bottom - top) > 0.7)
    assert torch.all((cols - left) / (right - left) < 0.3)


def test_two_sided_shading_lights_the_back_of_a_plane():
    positions, triangles, uvs = front_plane()
    texture = torch.full((4, 4, 3), 0.8)
    cameras = orbit_cameras([0, 180], [0, 0])
    towards_camera = torch.nn.functional.normalize(cameras.eye, dim=-1)
    lighting = Lighting(background=torch.zeros(2, 3), light_dir=towards_camera, ambient=torch.zeros(2))
    out = render_views(R, positions, triangles, uvs, texture, cameras, 16, lighting)
    centre = out.image[:, :, 8, 8]
    assert torch.allclose(centre, torch.full((2, 3), 0.8), atol=1e-5)  # n . l = 1 from both sides
    side_light = Lighting(torch.zeros(2, 3), torch.tensor([[1.0, 0, 0]] * 2), torch.full((2,), 0.5))
    dim = render_views(R, positions, triangles, uvs, texture, cameras, 16, side_light).image[:, :, 8, 8]
    assert torch.allclose(dim, torch.full((2, 3), 0.4), atol=1e-5)  # ambient only


def test_render_views_gradients_reach_texture_and_positions():
    positions, triangles, uvs = front_plane()
    positions.requires_grad_()
    texture = torch.rand(8, 8, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out = render_views(R, positions, triangles, uvs, texture, orbit_cameras([20], [10]), 32)
    (out.image * torch.linspace(0, 1, 32)).sum().backward()
    assert texture.grad.abs().sum() > 0 and positions.grad.abs().sum() > 0
    assert out.image.shape == (1, 3, 32, 32) and out.mask.shape == (1, 1, 32, 32)


def test_auto_on_cpu_gives_the_torch_rasterizer():
    assert get_rasterizer("auto", "cpu").name == "torch"
    assert get_rasterizer("torch").name == "torch"


def test_forcing_nvdiffrast_without_it_says_how_to_install(monkeypatch):
    monkeypatch.setattr(renderer, "nvdiffrast_available", lambda: False)
    with pytest.raises(RendererError, match="pip install diffrp-nvdiffrast"):
        get_rasterizer("nvdiffrast", "cuda")
    with pytest.raises(RendererError, match="unknown renderer"):
        get_rasterizer("opengl")


def test_auto_falls_back_to_torch_when_nvdiffrast_cannot_start(monkeypatch):
    def fail(device):
        raise RendererError("no nvcc")

    monkeypatch.setattr(renderer, "nvdiffrast_available", lambda: True)
    monkeypatch.setattr(renderer, "NvdiffrastRasterizer", fail)
    with pytest.warns(RuntimeWarning, match="no nvcc"):
        assert get_rasterizer("auto", "cuda").name == "torch"
