"""The optimization engine on a tiny random model: what a caller of TextureJob can rely on."""

import numpy as np
import pytest
import torch

from nfsd.distill.engine import TextureJob, texture_mesh
from nfsd.settings import TextureConfig
from nfsd.errors import ConfigError, OutOfMemory
from nfsd.geometry.mesh import Mesh
from nfsd.geometry.builtin_meshes import builtin_mesh
from nfsd.priors.prior import load_prior


def small_mesh() -> Mesh:
    """An octahedron with planar UVs: 6 vertices, 8 faces."""
    pos = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float32)
    tri = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]], np.int32)
    uvs = (pos[tri][:, :, :2] * 0.45 + 0.5).astype(np.float32)
    return Mesh(positions=pos, triangles=tri, uvs=uvs)


def config(model, **kw) -> TextureConfig:
    base = dict(prompt="red and white stripes", model=str(model), steps=4, render_size=32, texture_size=32,
                batch=2, progress_every=1, device="cpu")
    return TextureConfig(**{**base, **kw})


def test_run_changes_texture_and_reports_progress(tiny_model):
    seen = []
    result = texture_mesh(small_mesh(), config(tiny_model), on_progress=seen.append)
    steps = [p.step for p in seen if p.phase == "optimizing"]
    assert steps == [1, 2, 3, 4] and seen[-1].phase == "done"
    assert all(p.eta is not None and p.eta >= 0 for p in seen if p.phase == "optimizing")
    assert result.texture.shape == (32, 32, 3) and result.texture.dtype == np.uint8
    assert result.texture.std() > 0.5  # moved away from the uniform grey start
    assert len(result.losses) == 4 and len(set(result.losses)) > 1
    assert result.offsets is None and not result.cancelled and result.steps_done == 4


def test_same_seed_same_texture_on_cpu(tiny_model):
    a = texture_mesh(small_mesh(), config(tiny_model, seed=3)).texture
    b = texture_mesh(small_mesh(), config(tiny_model, seed=3)).texture
    c = texture_mesh(small_mesh(), config(tiny_model, seed=4)).texture
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_cancel_returns_what_exists_and_snapshot_is_live(tiny_model):
    job = TextureJob(small_mesh(), config(tiny_model, steps=50))
    assert job.snapshot() is None
    snaps = []

    def on_progress(p):
        if p.phase == "optimizing":
            snaps.append(job.snapshot())
            if p.step == 2:
                job.cancel()

    result = job.run(on_progress)
    assert result.cancelled and result.steps_done == 2 and len(result.losses) == 2
    assert snaps[0].shape == (32, 32, 3) and not np.array_equal(snaps[0], snaps[1])


def test_continue_from_an_initial_texture(tiny_model):
    init = np.zeros((16, 16, 3), np.uint8)
    init[:, :, 0] = 200  # red, resized to the 32x32 texture
    result = texture_mesh(small_mesh(), config(tiny_model, lr=0.0, steps=1), init_texture=init)
    assert np.abs(result.texture[..., 0].astype(int) - 200).max() <= 1
    assert result.texture[..., 1].max() <= 1


def test_offsets_are_bounded_smooth_and_in_object_space(tiny_model):
    mesh = builtin_mesh("sphere")
    mesh.world_matrix = np.diag([2.0, 2.0, 2.0, 1.0]).astype(np.float32)  # object scaled x2 in the scene
    result = texture_mesh(mesh, config(tiny_model, offsets=True, offset_strength=0.05, offset_lr=0.5, steps=3))
    assert result.offsets.shape == (mesh.num_vertices, 3) and result.offsets.dtype == np.float32
    radius_object = np.linalg.norm(mesh.positions - mesh.positions.mean(0), axis=1).max()
    lengths = np.linalg.norm(result.offsets, axis=1)
    assert lengths.max() > 0 and lengths.max() <= 0.05 * radius_object * 1.05


def test_bad_settings_are_refused_with_the_field_named():
    with pytest.raises(ConfigError, match="prompt is empty"):
        TextureConfig(prompt="  ").validate()
    with pytest.raises(ConfigError, match="steps=0 is out of range"):
        TextureConfig(prompt="x", steps=0).validate()
    with pytest.raises(ConfigError, match="mode must be one of nfsd, sds, csd, dds, got 'vsd'"):
        TextureConfig(prompt="x", mode="vsd").validate()
    with pytest.raises(ConfigError, match="unknown setting.*colour"):
        TextureConfig.from_dict({"prompt": "x", "colour": 1})


def test_prompt_longer_than_the_text_window_runs_and_is_reported(tiny_model):
    result = texture_mesh(small_mesh(), config(tiny_model, prompt="stripes " * 80, steps=1))
    assert result.steps_done == 1 and result.info["text"]["prompt"] == {"tokens": 80, "chunks": 2}


def test_out_of_memory_names_the_setting_to_lower(tiny_model, monkeypatch):
    prior = load_prior(str(tiny_model))

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(prior, "predict_eps", oom)
    with pytest.raises(OutOfMemory, match="lower batch first, then render_size"):
        texture_mesh(small_mesh(), config(tiny_model), prior=prior)


@pytest.mark.parametrize("mode", ["nfsd", "sds", "csd"])
def test_every_rule_pulls_the_texture_towards_what_the_prior_wants(mode):
    """With an exact prior (every prompt = one flat colour) the rules have a known fixed point."""
    from nfsd.priors.analytic import AnalyticPrior

    cfg = TextureConfig(prompt="solid red", mode=mode, steps=40, render_size=32, texture_size=32, batch=2,
                        device="cpu", lr=0.05)
    result = texture_mesh(small_mesh(), cfg, prior=AnalyticPrior())
    from nfsd.distill.texels import uv_coverage

    covered = uv_coverage(torch.from_numpy(small_mesh().uvs), 32).numpy()
    r, g, b = (result.texture[covered].astype(float) / 255).mean(0)
    assert r > g + 0.25 and r > b + 0.25, (mode, r, g, b)
