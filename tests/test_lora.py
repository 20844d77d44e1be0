"""LoRAs on the tiny model: they change what the model predicts, and leave no trace once taken off."""

import pytest
import torch

from nfsd.errors import ConfigError, ModelError
from nfsd.priors.lora import apply_loras, normalize_loras, parse_lora_arg
from nfsd.priors.prior import load_prior
from nfsd.priors.tiny import build_random_lora


@pytest.fixture(scope="module")
def prior(tiny_model):
    return load_prior(str(tiny_model), "cpu", torch.float32)


@pytest.fixture(scope="module")
def lora_files(tiny_model, tmp_path_factory):
    """One kohya/A1111-format and one diffusers-format LoRA file for the tiny model, built from a
    fresh copy of its networks (the cached prior is never touched while building them)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(tiny_model / "unet")
    te = CLIPTextModel.from_pretrained(tiny_model / "text_encoder")
    root = tmp_path_factory.mktemp("loras")
    return {fmt: build_random_lora(root / f"{fmt}.safetensors", unet, te, format=fmt, seed=i)
            for i, fmt in enumerate(("kohya", "diffusers"))}


def outputs(prior):
    """The UNet's prediction and the prompt embeddings on fixed inputs."""
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, 4, 8, 8, generator=gen)
    emb = prior.embed(["red and white stripes", ""])
    return prior.predict_eps(z, torch.tensor([50, 700]), emb), emb.hidden


@pytest.mark.parametrize("fmt", ["kohya", "diffusers"])
def test_a_lora_changes_the_model_and_is_gone_after_unloading(prior, lora_files, fmt):
    eps0, emb0 = outputs(prior)
    apply_loras(prior, [{"path": str(lora_files[fmt]), "weight": 1.0}])
    eps1, emb1 = outputs(prior)
    assert (eps1 - eps0).abs().max() > 1e-3   # the UNet is adapted ...
    assert (emb1 - emb0).abs().max() > 1e-3   # ... and so is the text encoder
    apply_loras(prior, [])                    # the next job asks for none
    eps2, emb2 = outputs(prior)
    assert torch.equal(eps2, eps0) and torch.equal(emb2, emb0)  # bit for bit


def test_weight_scales_the_change_and_a_second_lora_stacks(prior, lora_files):
    eps0, _ = outputs(prior)
    kohya = str(lora_files["kohya"])
    apply_loras(prior, [{"path": kohya, "weight": 0.5}])
    half = (outputs(prior)[0] - eps0).abs().mean()
    apply_loras(prior, [{"path": kohya, "weight": 1.0}])  # same file, new weight: reloaded with it
    full = (outputs(prior)[0] - eps0).abs().mean()
    assert full > 1.5 * half
    apply_loras(prior, [{"path": kohya, "weight": 1.0}, {"path": str(lora_files["diffusers"]), "weight": 1.0}])
    both, _ = outputs(prior)
    apply_loras(prior, [{"path": kohya, "weight": 1.0}])
    assert (both - outputs(prior)[0]).abs().max() > 1e-3
    apply_loras(prior, [])
    assert torch.equal(outputs(prior)[0], eps0)


def test_a_job_without_loras_after_one_with_gets_the_bare_model(tiny_model, lora_files):
    """Through the engine and the model cache: the second job must not see the first job's LoRA."""
    from nfsd.distill.config import TextureConfig
    from nfsd.distill.engine import texture_mesh
    from nfsd.geometry.builtin_meshes import builtin_mesh

    base = dict(prompt="red and white stripes", model=str(tiny_model), steps=2, render_size=16, texture_size=16,
                batch=1, device="cpu", half_precision=False)
    mesh = builtin_mesh("default")
    bare = texture_mesh(mesh, TextureConfig(**base)).texture
    with_lora = texture_mesh(mesh, TextureConfig(**base, loras=[{"path": str(lora_files["kohya"]), "weight": 2.0}]))
    assert (with_lora.texture != bare).any()
    again = texture_mesh(mesh, TextureConfig(**base)).texture
    assert (again == bare).all()


def test_lora_arguments_and_settings():
    assert parse_lora_arg("wood.safetensors") == {"path": "wood.safetensors", "weight": 1.0}
    assert parse_lora_arg("loras/wood.safetensors:0.6") == {"path": "loras/wood.safetensors", "weight": 0.6}
    assert parse_lora_arg("C:\\loras\\wood.safetensors") == {"path": "C:\\loras\\wood.safetensors", "weight": 1.0}
    assert normalize_loras([{"name": "wood"}, "x.safetensors:-0.5"]) == [
        {"name": "wood", "weight": 1.0}, {"path": "x.safetensors", "weight": -0.5}]
    for bad, words in [({"path": "x"}, "must be a list"), ([{"path": "x", "name": "y"}], "exactly one"),
                       ([{"path": "x", "weight": "lots"}], "weight"), ([{"path": "x", "weight": 99}], "weight"),
                       ([{"file": "x"}], "unknown key")]:
        with pytest.raises(ConfigError, match=words):
            normalize_loras(bad)


def test_bad_lora_files_are_refused_and_leave_the_model_bare(prior, lora_files, tmp_path):
    eps0, _ = outputs(prior)
    not_lora = tmp_path / "weights.safetensors"
    from safetensors.torch import save_file

    save_file({"some.weight": torch.zeros(2, 2)}, str(not_lora))
    with pytest.raises(ModelError, match="not found"):
        apply_loras(prior, [{"path": str(tmp_path / "missing.safetensors")}])
    with pytest.raises(ModelError, match="weights.safetensors"):
        apply_loras(prior, [{"path": str(lora_files["kohya"])}, {"path": str(not_lora)}])
    assert torch.equal(outputs(prior)[0], eps0)
    with pytest.raises(ConfigError, match="--models-dir"):
        apply_loras(prior, [{"name": "wood"}])
