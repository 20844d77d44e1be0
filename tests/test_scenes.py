"""Training views for the built-in prior: generated meshes, baked G-buffers, textures laid on them."""

import numpy as np
import pytest
import torch

from nfsd.builtin import vocabulary as vocab
from nfsd.builtin.training import dataset as ds
from nfsd.builtin.training import scenes
from nfsd.geometry.builtin_meshes import builtin_mesh


def _components(mesh) -> int:
    """Connected parts of a mesh (triangles sharing vertices)."""
    parent = np.arange(mesh.num_vertices)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b, c in mesh.triangles:
        for x, y in ((a, b), (b, c)):
            parent[find(x)] = find(y)
    return len({find(i) for i in range(mesh.num_vertices)})


def test_a_creature_has_legs_a_head_and_one_uv_island_per_part():
    mesh = scenes.creature(np.random.default_rng(3))
    parts = _components(mesh)
    assert parts >= 6  # body, head, four legs (and ears or horns, a tail)
    assert mesh.uvs.shape == (mesh.num_faces, 3, 2) and mesh.uvs.min() >= 0 and mesh.uvs.max() <= 1
    # Each part's UVs lie in its own atlas cell: as many occupied cells as parts.
    cells = int(np.ceil(np.sqrt(parts)))
    occupied = {tuple(c) for c in np.floor(mesh.uvs.mean(axis=1) * cells).astype(int)}
    assert len(occupied) == parts


def test_training_meshes_are_framed_like_the_engine_frames_them_and_seeded():
    a = scenes.training_meshes(6, seed=1, xatlas_share=0.0)
    b = scenes.training_meshes(6, seed=1, xatlas_share=0.0)
    assert len(a) == 6 and all(np.array_equal(m.positions, n.positions) for m, n in zip(a, b))
    for mesh in a:
        radius = np.linalg.norm(mesh.positions, axis=1).max()
        assert radius == pytest.approx(1.0, abs=1e-5)
        assert mesh.uvs is not None and mesh.uvs.shape == (mesh.num_faces, 3, 2)


@pytest.fixture(scope="module")
def sphere_bank():
    sphere = scenes.normalized(builtin_mesh("sphere"))
    return scenes.bake_views([sphere], 6, 32, seed=0)


def test_baked_uvs_and_positions_describe_the_same_surface_point(sphere_bank):
    buffers = sphere_bank.buffers.float()
    assert buffers.shape == (6, scenes.GBUFFER_CHANNELS, 32, 32) and sphere_bank.buffers.dtype == torch.float16
    inside = buffers[:, 6] > 0.999
    position = buffers[:, 2:5].permute(0, 2, 3, 1)[inside]
    v = buffers[:, 1][inside]
    # Points on the unit sphere; the built-in sphere's v runs with latitude (inset by 1%).
    assert torch.allclose(position.norm(dim=-1), torch.ones(len(position)), atol=0.03)
    theta = torch.arccos(position[:, 2].clamp(-1, 1))
    expected_v = 0.01 + 0.98 * (1 - theta / torch.pi)
    assert (v - expected_v).abs().max() < 0.03
    # Shading lies between the engine's ambient floor and 1 where covered; nothing off the object.
    shade = buffers[:, 5][inside]
    assert shade.min() >= 0.35 and shade.max() <= 1.0
    assert buffers[:, 5][buffers[:, 6] == 0].abs().max() == 0


def test_stripes_laid_on_a_baked_view_show_both_colours_over_a_plain_background(sphere_bank):
    spec = vocab.parse_prompt("red and white stripes")
    n = len(sphere_bank)
    red, white = (torch.tensor(vocab.COLOURS[c]).view(1, 3, 1, 1).expand(n, 3, 1, 1) for c in ("red", "white"))
    images = scenes.scene_images(sphere_bank.buffers, torch.full((n,), vocab.PATTERNS.index(spec.pattern)), red, white,
                                 torch.Generator().manual_seed(0))
    assert images.shape == (n, 3, 32, 32) and 0 <= images.min() and images.max() <= 1
    cover = sphere_bank.buffers[:, 6].float()
    for image, covered in zip(images, cover):
        outside = image[:, covered == 0]
        assert (outside - outside[:, :1]).abs().max() < 1e-6  # one background colour
        lit = image[:, covered > 0.999] / sphere_bank.buffers[0, 5].float().max()
        greenish = lit[1]  # red has almost no green, white a lot
        assert (greenish < 0.3).any() and (greenish > 0.5).any()


def test_the_dataset_mixes_baked_views_in_deterministically(sphere_bank):
    specs = vocab.SPECS[::20]
    config = ds.DatasetConfig(size=32, scene_fraction=1.0)
    a, mask = ds.sample_batch(specs, torch.Generator().manual_seed(5), config, return_mask=True, scenes=sphere_bank)
    b = ds.sample_batch(specs, torch.Generator().manual_seed(5), config, scenes=sphere_bank)
    assert torch.equal(a, b)
    # Every image is a baked view: its coverage is one of the bank's.
    bank_masks = sphere_bank.buffers[:, 6:7].float()
    for m in mask:
        assert min((m - bm).abs().max().item() for bm in bank_masks) == 0
    with pytest.raises(ValueError, match="view bank is 32 px, the dataset 64 px"):
        ds.sample_batch(specs, torch.Generator().manual_seed(5), ds.DatasetConfig(size=64), scenes=sphere_bank)
