"""Texturing with SDXL-layout models and long prompts, end to end on tiny random models (CPU, seconds)."""

import numpy as np
import pytest
import torch

from ldm_layout import folder_to_single_file
from nfsd.distill.config import TextureConfig
from nfsd.distill.engine import texture_mesh
from nfsd.distill.guidance import NFSD_NEGATIVE_PROMPT
from nfsd.priors.prior import load_prior
from test_engine import small_mesh

# 120 words, ~700 characters: ten 75-token windows with the tests' one-token-per-character tokenizer.
LONG_PROMPT = " ".join(["weathered", "bronze", "statue", "with", "green", "patina", "and", "gold", "leaf", "trim",
                        "ornate", "engravings"] * 10)


def config(model, **kw) -> TextureConfig:
    base = dict(prompt=LONG_PROMPT, model=str(model), steps=2, render_size=32, texture_size=32, batch=2,
                progress_every=1, device="cpu")
    return TextureConfig(**{**base, **kw})


@pytest.mark.parametrize("mode", ["nfsd", "sds", "csd"])
def test_sdxl_folder_textures_a_long_prompt_in_every_mode(tiny_sdxl, mode):
    assert len(LONG_PROMPT.split()) == 120
    result = texture_mesh(small_mesh(), config(tiny_sdxl, mode=mode))
    assert result.steps_done == 2 and all(np.isfinite(result.losses))
    assert result.texture.std() > 0.5  # moved away from the uniform grey start
    text = result.info["text"]
    assert text["prompt"] == {"tokens": len(LONG_PROMPT), "chunks": -(-len(LONG_PROMPT) // 75)}
    assert text["negative_prompt"]["tokens"] == len(NFSD_NEGATIVE_PROMPT) > 75


def test_sdxl_single_file_textures_like_the_folder(tiny_sdxl, tmp_path):
    path = tmp_path / "tiny-sdxl.safetensors"
    folder_to_single_file(tiny_sdxl, path)
    a = texture_mesh(small_mesh(), config(path, model_config=str(tiny_sdxl)))
    b = texture_mesh(small_mesh(), config(tiny_sdxl))
    assert a.info["model"] == str(path)
    assert np.abs(a.texture.astype(int) - b.texture.astype(int)).max() <= 1


def test_sdxl_default_render_size_and_the_fast_512_option(tiny_sdxl):
    prior = load_prior(str(tiny_sdxl))
    assert prior.family.render_size == 1024 and prior.family.size_conditioning
    # The tiny model is 16 px natively; its UNet divides by 4: it sees renders at their own size.
    assert [prior.model_size(s) for s in (8, 13, 16, 512)] == [8, 12, 16, 16]
    z = prior.encode(torch.rand(1, 3, 8, 8))
    assert z.shape == (1, 4, 4, 4)
    assert prior.time_ids(z).tolist() == [[8.0, 8.0, 0.0, 0.0, 8.0, 8.0]]


def test_sdxl_time_ids_and_pooled_embeddings_reach_the_unet(tiny_sdxl):
    prior = load_prior(str(tiny_sdxl))
    emb = prior.embed(["red paint", "blue paint"])
    torch.manual_seed(0)
    z, t = torch.randn(1, 4, 8, 8).expand(2, -1, -1, -1), torch.tensor([500, 500])
    same_hidden = type(emb)(emb.hidden[[0, 0]], emb.pooled, emb.pad)  # only the pooled rows differ
    e = prior.predict_eps(z, t, same_hidden)
    assert not torch.allclose(e[0], e[1])
    small = prior.predict_eps(z[:, :, :4, :4], t, emb)  # 8-px latents: time ids (8, 8, 0, 0, 8, 8)
    ids = {"text_embeds": emb.pooled, "time_ids": torch.full((2, 6), 16.0)}
    lying = prior.unet(z[:, :, :4, :4], t, encoder_hidden_states=emb.hidden, added_cond_kwargs=ids).sample
    assert not torch.allclose(small, lying)


def test_vae_with_force_upcast_runs_wider_than_a_float16_unet(tiny_sdxl):
    prior = load_prior(str(tiny_sdxl), dtype=torch.float16)  # CPU: no bfloat16 choice, float32
    assert prior.vae.config.force_upcast and prior.vae_dtype == torch.float32
    assert next(prior.vae.parameters()).dtype == torch.float32 and next(prior.unet.parameters()).dtype == torch.float16
    images = torch.rand(2, 3, 16, 16, requires_grad=True)
    z = prior.encode(images)
    assert z.dtype == torch.float16
    z.float().sum().backward()
    assert images.grad.abs().sum() > 0  # the gradient crosses the dtype boundary


def test_non_finite_latents_become_zero_not_nan(tiny_sdxl):
    prior = load_prior(str(tiny_sdxl))
    images = torch.rand(2, 3, 16, 16)
    images[1, :, 3, 3] = float("nan")  # one poisoned view
    z = prior.encode(images)
    assert torch.isfinite(z).all() and z[0].abs().sum() > 0
