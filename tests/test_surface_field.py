"""The surface parametrization (nfsd.distill.surface_field): coarse colour in 3D, seamless across UV seams."""

import numpy as np
import pytest
import torch

from nfsd.geometry.builtin_meshes import builtin_mesh
from nfsd.geometry.seams import seam_mismatch
from nfsd.distill.surface_field import SurfaceFieldTexture, default_grid_sizes, texel_points
from nfsd.distill.texture import PyramidTexture, make_texture


def _cube():
    m = builtin_mesh("cube")
    return m, torch.from_numpy(m.positions), torch.from_numpy(m.triangles), torch.from_numpy(m.uvs)


def test_texel_points_are_the_surface_points_under_the_texels():
    # The cube's front (-Y) lies in column 0, row 1 of a 3x2 layout with a 2% margin:
    # u = (0.02 + 0.96 (x + 1) / 2) / 3, v = (1 + 0.02 + 0.96 (z + 1) / 2) / 2.
    m, pos, tri, uvs = _cube()
    size = 96
    points, covered = texel_points(pos, tri, uvs, size)
    c = (np.arange(size) + 0.5) / size
    row, col = np.nonzero((c[None, :] < 1 / 3) & (c[:, None] > 0.5))  # the front's cell (row = v, col = u)
    u, v = c[col], c[row]
    x = (u * 3 - 0.02) / 0.96 * 2 - 1
    z = ((v * 2 - 1) - 0.02) / 0.96 * 2 - 1
    inside = (np.abs(x) < 0.98) & (np.abs(z) < 0.98)
    got = points[row[inside], col[inside]].numpy()
    assert covered[row[inside], col[inside]].all()
    np.testing.assert_allclose(got[:, 0], x[inside], atol=1e-4)
    np.testing.assert_allclose(got[:, 1], -1.0, atol=1e-4)
    np.testing.assert_allclose(got[:, 2], z[inside], atol=1e-4)


def test_random_coarse_levels_are_seamless_on_the_surface_and_not_in_uv_space():
    # Random coarse logits (the two coarsest levels): in 3D grids both sides of the cube's 96 seam
    # edges agree up to the texels' sampling; as the UV pyramid's levels they are unrelated.
    m, pos, tri, uvs = _cube()
    torch.manual_seed(0)
    surface = SurfaceFieldTexture.from_mesh(128, pos, tri, uvs)
    pyramid = PyramidTexture(128)
    with torch.no_grad():
        for level in list(surface.grids)[:2] + list(pyramid.levels)[:2]:
            level.normal_(0.0, 1.5)
    on_surface = seam_mismatch(surface(), m.positions, m.triangles, m.uvs)
    in_uv = seam_mismatch(pyramid(), m.positions, m.triangles, m.uvs)
    assert on_surface["edges"] == 96
    # Measured: 0.030 against 0.54 (what is left is the texels' bilinear sampling of the field).
    assert on_surface["mean"] < 0.05 and in_uv["mean"] > 10 * on_surface["mean"]


def test_make_texture_builds_the_surface_field_from_the_mesh():
    _, pos, tri, uvs = _cube()
    tex = make_texture("surface", 64, surface=(pos, tri, uvs))
    assert isinstance(tex, SurfaceFieldTexture) and tex().shape == (64, 64, 3)
    init = torch.full((64, 64, 3), 0.25)
    assert torch.allclose(make_texture("surface", 64, init, surface=(pos, tri, uvs))(), init, atol=1e-3)
    from nfsd.errors import ConfigError

    with pytest.raises(ConfigError, match="needs the mesh"):
        make_texture("surface", 64)


def test_the_builtin_prior_paints_the_cube_without_seams():
    # nfsd demo's settings, shortened: 30 steps of NFSD on the cube (96 seam edges, every one
    # between two islands). Measured with the shipped prior: 0.011 with the surface field, 0.128 with
    # the UV pyramid (the CPU-trained 64 px prior: 0.012, 0.146; the 32 px prior: 0.011, 0.136).
    # nfsd demo itself (600 steps, the blob, texture 256 and so a 128^3 finest grid): 0.003.
    from nfsd.distill.config import TextureConfig
    from nfsd.distill.engine import texture_mesh

    cube = builtin_mesh("cube")
    config = TextureConfig(prompt="red and white stripes", steps=30, texture_size=128, render_size=64, batch=2,
                           device="cpu", parametrization="surface")
    result = texture_mesh(cube, config)
    assert seam_mismatch(result.texture, cube.positions, cube.triangles, result.uvs)["mean"] < 0.03


def test_the_sparse_finest_grid_is_the_dense_grid_at_the_nodes_texels_read():
    # Texture 256: grids 8..128, the 128^3 one kept only where texels read it (a few percent of the
    # box). Filled from a dense random grid, it gives what grid_sample on that dense grid gives.
    import torch.nn.functional as F

    _, pos, tri, uvs = _cube()
    assert default_grid_sizes(256) == (8, 16, 32, 64, 128) and default_grid_sizes(64) == (8, 16, 32)
    tex = SurfaceFieldTexture.from_mesh(256, pos, tri, uvs)
    finest = tex.grids[-1]
    assert finest.shape[1] == 3 and finest.shape[0] < 0.1 * 128**3
    dense = torch.randn(1, 3, 128, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        finest.copy_(dense.reshape(3, -1).t()[tex._nodes0])
    want = F.grid_sample(dense, tex.points, mode="bilinear", padding_mode="border", align_corners=True)[0, :, 0]
    got = torch.logit(tex().permute(2, 0, 1).clamp(1e-6, 1 - 1e-6))  # the other levels are still zero
    torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-3)
