"""What a step pays for: the UNet batch per mode, and the tiny encoder on the gradient path."""

import shutil

import pytest
import torch

from nfsd.distill.config import TextureConfig
from nfsd.distill.engine import texture_mesh
from nfsd.errors import ConfigError, ModelError
from nfsd.priors.fast_encoder import gradient_encoder
from nfsd.geometry.builtin_meshes import builtin_mesh
from nfsd.priors.prior import load_prior
from nfsd.priors.tiny import build_tiny_autoencoder


def run(model, **kw):
    base = dict(prompt="red and white stripes", model=str(model), steps=2, render_size=16, texture_size=16,
                batch=2, device="cpu", half_precision=False)
    return texture_mesh(builtin_mesh("default"), TextureConfig(**{**base, **kw}))


@pytest.mark.parametrize("mode, negative_weight, per_view", [
    ("nfsd", 0.0, 3), ("sds", 0.0, 2), ("csd", 0.0, 2), ("csd", 0.5, 3)])
def test_unet_batch_per_view(tiny_model, mode, negative_weight, per_view):
    """NFSD reads prompt, negative and empty-prompt branches; SDS and CSD only two (CSD three when
    given a negative weight)."""
    prior = load_prior(str(tiny_model), "cpu", torch.float32)
    batches = []
    hook = prior.unet.register_forward_pre_hook(lambda module, args, kwargs: batches.append(args[0].shape[0]),
                                                with_kwargs=True)
    try:
        run(tiny_model, mode=mode, negative_weight=negative_weight)
    finally:
        hook.remove()
    assert batches == [2 * per_view] * 2  # batch 2, two steps, one UNet call each


def test_csd_negative_weight_changes_the_result(tiny_model):
    plain = run(tiny_model, mode="csd").texture
    assert (run(tiny_model, mode="csd", negative_weight=2.0).texture != plain).any()


@pytest.fixture(scope="module")
def model_with_tiny_encoder(tiny_model, tmp_path_factory):
    """The tiny model with a vae_tiny/ subfolder (a copy: the shared tiny model stays as it is)."""
    folder = tmp_path_factory.mktemp("with_taesd") / "model"
    shutil.copytree(tiny_model, folder)
    build_tiny_autoencoder(folder / "vae_tiny")
    return folder


def test_tiny_encoder_makes_latents_of_the_unets_shape_with_gradients(model_with_tiny_encoder):
    prior = load_prior(str(model_with_tiny_encoder), "cpu", torch.float32)
    images = torch.rand(2, 3, 32, 32, requires_grad=True)  # resized to the model's 16 px
    z = gradient_encoder(prior, "tiny")(images)
    assert z.shape == prior.encode(images).shape == (2, 4, 8, 8)
    z.square().sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert gradient_encoder(prior, "full") == prior.encode


def test_encoder_tiny_textures_and_keeps_the_full_vae_for_outputs(model_with_tiny_encoder):
    full = run(model_with_tiny_encoder)
    tiny = run(model_with_tiny_encoder, encoder="tiny")
    assert tiny.steps_done == 2 and (tiny.texture != full.texture).any()
    prior = load_prior(str(model_with_tiny_encoder), "cpu", torch.float32)
    assert type(prior.vae).__name__ == "AutoencoderKL"  # previews and outputs still decode with it


def test_tiny_encoder_that_is_missing_or_does_not_fit(tiny_model, tmp_path):
    with pytest.raises(ConfigError, match="vae_tiny.*--tiny-encoder"):
        run(tiny_model, encoder="tiny")
    wrong = build_tiny_autoencoder(tmp_path / "eight_channels", latent_channels=8)
    with pytest.raises(ModelError, match="8-channel"):
        run(tiny_model, encoder="tiny", tiny_encoder=str(wrong))
    with pytest.raises(ConfigError, match="encoder must be full or tiny"):
        run(tiny_model, encoder="taesd")


def test_cli_with_a_lora_and_the_tiny_encoder(model_with_tiny_encoder, tmp_path):
    """What an artist types: `nfsd texture ... --lora FILE:0.8 --encoder tiny`; the report keeps both."""
    import json

    from diffusers import UNet2DConditionModel

    from nfsd.cli import main
    from nfsd.geometry.wire import write_wire_npz
    from nfsd.priors.tiny import build_random_lora

    mesh = tmp_path / "mesh.npz"
    write_wire_npz(builtin_mesh("default"), mesh)
    unet = UNet2DConditionModel.from_pretrained(model_with_tiny_encoder / "unet")
    lora = build_random_lora(tmp_path / "wood.safetensors", unet)
    out = tmp_path / "out"
    code = main(["texture", str(mesh), "red and white stripes", "--out", str(out), "--model",
                 str(model_with_tiny_encoder), "--steps", "2", "--render-size", "16", "--texture-size", "64",
                 "--batch", "1", "--device", "cpu", "--threads", "1", "--encoder", "tiny", "--lora", f"{lora}:0.8"])
    assert code == 0
    settings = json.loads((out / "report.json").read_text())["settings"]
    assert settings["encoder"] == "tiny" and settings["loras"] == [{"path": str(lora), "weight": 0.8}]


def test_flop_table_at_real_shapes():
    """FLOPs per step at SD-1.5 shapes (meta tensors: no weights; SDXL's rows take longer to build and are
    left to `nfsd bench flops`)."""
    from nfsd.bench.flops import flop_table

    (sd15,) = flop_table(["SD-1.5 @512"])
    assert 2.3 < sd15["unet_b3"] < 2.5 and sd15["unet_b2"] == pytest.approx(sd15["unet_b3"] * 2 / 3, rel=0.01)
    assert sd15["full"] > 0.9 * sd15["unet_b3"]   # the full encoder costs about what the UNet does ...
    assert sd15["tiny"] < 0.15 * sd15["full"]     # ... the tiny one a tenth of that
