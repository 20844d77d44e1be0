"""Windowed prompt encoding (nfsd.priors.text): long prompts are encoded, never refused or truncated."""

import torch

from nfsd.priors.families import clip_tokenizer
from nfsd.distill.guidance import NFSD_NEGATIVE_PROMPT
from nfsd.priors.prior import load_prior
from nfsd.priors.text import TextEmbeddings, token_windows


def test_a_prompt_within_one_window_encodes_as_the_plain_tokenizer_would(tiny_model):
    prior = load_prior(str(tiny_model))
    text = "red and white stripes, front view"
    ids = prior.tokenizer(text, padding="max_length", max_length=77, return_tensors="pt").input_ids
    windows, n = token_windows(prior.tokenizer, text, 77)
    assert torch.equal(windows, ids) and n == 7
    assert torch.allclose(prior.embed([text]).hidden[0], prior.text_encoder(ids).last_hidden_state[0])


def test_long_prompt_windows_are_encoded_apart_and_concatenated(tiny_sdxl):
    prior = load_prior(str(tiny_sdxl))  # one token per character, 75 per window
    long = "x" * 75 + "y" * 10
    emb = prior.embed([long, NFSD_NEGATIVE_PROMPT, "red", ""])
    chunks = -(-len(NFSD_NEGATIVE_PROMPT) // 75)
    assert emb.tokens == [85, len(NFSD_NEGATIVE_PROMPT), 3, 0] and emb.chunks == [2, chunks, 1, 1]
    assert chunks >= 2 and emb.shape == (4, chunks * 77, 80)  # every row padded to the longest prompt's windows
    first, second = prior.embed(["x" * 75]), prior.embed(["y" * 10])
    assert torch.allclose(emb.hidden[0, :77], first.hidden[0]) and torch.allclose(emb.hidden[0, 77:154], second.hidden[0])
    assert torch.allclose(emb.hidden[2, 77:], emb.pad.repeat(chunks - 1, 1))  # "red": one window + empty ones
    assert torch.allclose(emb.pooled[0], first.pooled[0])  # pooled: the first window's
    assert emb.hidden[3].abs().max() == 0 and emb.pooled[3].abs().max() == 0  # SDXL's empty prompt is zeros


def test_cat_pads_shorter_rows_with_empty_windows(tiny_sdxl):
    prior = load_prior(str(tiny_sdxl))
    short, long = prior.embed(["red"]), prior.embed(["r" * 200])
    both = torch.cat([short.expand(2, -1, -1), long])  # what the engine's batching does
    assert isinstance(both, TextEmbeddings) and both.shape == (3, 3 * 77, 80)
    assert torch.equal(both.hidden[0, :77], short.hidden[0]) and torch.equal(both.hidden[0, 77:154], short.pad)
    assert torch.equal(both.pooled[2], long.pooled[0])


def test_builtin_32_token_window_takes_long_prompts():
    prior = load_prior("builtin")
    assert prior.max_prompt_tokens == 32
    emb = prior.embed(["solid red " * 20, "solid red"])  # 40 tokens: two 30-token windows
    assert emb.chunks == [2, 1] and emb.shape[1] == 64
    e = prior.predict_eps(torch.randn(2, 4, 8, 8), torch.tensor([100, 100]), emb)
    assert torch.isfinite(e).all()


def test_clip_tokenizer_ships_offline_with_clip_ids():
    tok = clip_tokenizer()
    assert tok("a red car").input_ids == [49406, 320, 736, 1615, 49407] and len(tok) == 49408
    assert clip_tokenizer("!").pad_token_id == 0 and tok.pad_token_id == 49407
