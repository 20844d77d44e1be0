"""Loading priors through the real diffusers code path, on tiny models the tests build."""

import pytest
import torch

from nfsd.errors import ModelError
from nfsd.priors.prior import load_prior, loaded_models, unload_all
from nfsd.priors.tiny import build_tiny_model


def test_tiny_folder_loads_with_schedule_and_shapes(tiny_model):
    prior = load_prior(str(tiny_model))
    assert prior.prediction_type == "epsilon"
    assert prior.num_train_timesteps == 1000 and prior.alphas_cumprod[0] > prior.alphas_cumprod[-1]
    assert prior.image_size == 16 and prior.vae is not None  # 8x8 latents x 2 (two VAE blocks)
    emb = prior.embed(["red and white stripes, front view", ""])
    assert emb.shape == (2, 77, 32)
    assert not torch.allclose(emb.hidden[0], emb.hidden[1])


def test_encode_resizes_and_keeps_gradients(tiny_model):
    prior = load_prior(str(tiny_model))
    images = torch.rand(2, 3, 40, 40, requires_grad=True)
    z = prior.encode(images, generator=torch.Generator().manual_seed(0))
    assert z.shape == (2, 4, 8, 8)
    z.square().sum().backward()
    assert images.grad.abs().sum() > 0


def test_cache_returns_the_same_prior_and_unload_frees_it(tiny_model):
    a = load_prior(str(tiny_model))
    assert load_prior(str(tiny_model)) is a
    assert loaded_models() == [str(tiny_model)]
    assert unload_all() and loaded_models() == []


def test_v_prediction_is_converted_to_epsilon(tmp_path):
    path = build_tiny_model(tmp_path / "v", prediction_type="v_prediction", seed=1)
    prior = load_prior(str(path))
    assert prior.prediction_type == "v_prediction"
    torch.manual_seed(0)
    z = torch.randn(2, 4, 8, 8)
    t = torch.tensor([100, 700])
    emb = prior.embed(["", ""])
    v = prior.unet(z, t, encoder_hidden_states=emb.hidden).sample
    a = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = a.sqrt() * v + (1 - a).sqrt() * z
    assert torch.allclose(prior.predict_eps(z, t, emb), expected, atol=1e-6)


def test_missing_model_says_where_it_looked(tmp_path):
    with pytest.raises(ModelError, match="not found: no folder or file at"):
        load_prior(str(tmp_path / "nope" / "model"))
    with pytest.raises(ModelError, match="not found.*Hugging Face cache.*builtin"):
        load_prior("someone/not-a-cached-model")  # HF_HUB_OFFLINE=1: the cache only


def test_folder_without_sd_layout_is_refused(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(ModelError, match="missing scheduler, text_encoder, tokenizer"):
        load_prior(str(tmp_path))


def test_prompt_over_the_window_is_encoded_not_refused(tiny_model):
    prior = load_prior(str(tiny_model))
    emb = prior.embed(["stripes " * 80, "red and white stripes"])  # 80 tokens: two 75-token windows
    assert emb.shape == (2, 2 * 77, 32) and emb.tokens == [80, 4] and emb.chunks == [2, 1]
    assert prior.prompt_report("stripes " * 80) == {"tokens": 80, "chunks": 2}


def test_single_file_checkpoint_that_is_not_sd_says_so(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "not_sd.safetensors"
    save_file({"foo.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(ModelError, match="not_sd.safetensors is not a Stable Diffusion checkpoint .*foo"):
        load_prior(str(path))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelError, match="not a checkpoint"):
        load_prior(str(tmp_path / "notes.txt"))
