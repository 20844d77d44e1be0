"""Random-weight models with Stable Diffusion's layout: tiny ones for tests, full-size ones for benchmarks.

Nothing here downloads anything (exact toy priors with no weights at all live in ``nfsd.priors.analytic``). ``build_tiny_model`` writes a complete diffusers folder (unet/,
vae/, text_encoder/, tokenizer/, scheduler/, model_index.json) that ``nfsd.priors.prior.load_prior`` loads
through the same code path as a real Stable Diffusion folder. ``build_random_model(arch="sd15")``
builds the real shapes (same FLOPs) for speed benchmarks.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .families import SD15_UNET, SD21_UNET, SD_VAE, SDXL_UNET, SDXL_VAE

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")

# Words the tiny tokenizer knows besides the prompt words a caller passes: view words, the NFSD
# negative prompt, and a few common ones. Anything else maps to <unk>.
BASE_WORDS = (
    "front side back overhead view a an the of with and in on "
    "unrealistic blurry low quality out focus ugly contrast dull dark resolution gloomy"
).split()


def build_word_tokenizer(words=(), model_max_length: int = 77):
    """A word-level fast tokenizer (lower-cased, splits on whitespace and punctuation).

    Args:
        words: extra vocabulary besides ``BASE_WORDS``.
        model_max_length: sequences are padded/truncated to this many tokens, <bos> and <eos>
            included, like CLIP's 77.

    Returns:
        ``transformers.PreTrainedTokenizerFast``; ``save_pretrained`` + ``AutoTokenizer`` round-trip.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in list(BASE_WORDS) + [w for text in words for w in re.findall(r"[a-z0-9]+", text.lower())]:
        vocab.setdefault(word, len(vocab))
    for ch in ",.;:!?-'\"()":
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        model_max_length=model_max_length,
    )


def build_char_tokenizer(model_max_length: int = 77, pad_token: str = "<pad>"):
    """A character-level fast tokenizer: every printable ASCII character (space included) is one token.

    Prompts cost one token per character, so a sentence overflows a 77-token window: the tests'
    way to exercise long-prompt windows with tiny models. ``pad_token`` may be ``"<pad>"`` or
    ``"<eos>"`` (SD 1.x's CLIP pads with its end token).
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for code in range(32, 127):
        vocab.setdefault(chr(code), len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=pad_token, unk_token="<unk>", bos_token="<bos>",
                                   eos_token="<eos>", model_max_length=model_max_length)


def _text_encoder(vocab_size: int, hidden: int, layers: int, heads: int, max_positions: int,
                  projection: int | None = None, token_ids: tuple[int, int, int] = (0, 2, 3)):
    """``CLIPTextModel``, or ``CLIPTextModelWithProjection`` (SDXL's second encoder) when ``projection`` is set."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=max_positions,
        projection_dim=projection or hidden,
        pad_token_id=token_ids[0],
        bos_token_id=token_ids[1],
        eos_token_id=token_ids[2],  # the pooled output is read at the first end token
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


# UNet / VAE configs with the shapes of the real models live in nfsd.priors.families; tiny ones here.
TINY_UNET = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
    cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
)
TINY_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8,
    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=16,
)
# SDXL's layout in miniature: attention only in the lower-resolution block (with two transformer
# layers, as SDXL's deeper blocks have), two encoders of different widths (32 + 48 = 80-d cross
# attention), a 16-d pooled projection and 8-d time-id embeddings: 16 + 6 x 8 = 64 added inputs.
TINY_SDXL_UNET = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2), attention_head_dim=(2, 4), cross_attention_dim=80, norm_num_groups=8,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=64,
)
TINY_SDXL_VAE = dict(TINY_VAE, scaling_factor=0.13025, force_upcast=True)
ARCHS = {
    # arch: (unet config, vae config, text encoders [(hidden, layers, heads, projection or None)],
    #        scheduler prediction type)
    "tiny": (TINY_UNET, TINY_VAE, [(32, 2, 4, None)], "epsilon"),
    "tiny-sdxl": (TINY_SDXL_UNET, TINY_SDXL_VAE, [(32, 2, 4, None), (48, 2, 4, 16)], "epsilon"),
    "sd15": (SD15_UNET, SD_VAE, [(768, 12, 12, None)], "epsilon"),
    "sd21": (SD21_UNET, SD_VAE, [(1024, 23, 16, None)], "v_prediction"),
    "sdxl": (SDXL_UNET, SDXL_VAE, [(768, 12, 12, None), (1280, 32, 20, 1280)], "epsilon"),
}


def build_random_components(arch: str = "tiny", prediction_type: str | None = None, seed: int = 0,
                            prompt_words=(), model_max_length: int = 77, tokenizer: str = "word") -> dict:
    """Random-weight ``unet``, ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler`` of an architecture
    (SDXL-layout archs add ``text_encoder_2`` and ``tokenizer_2``).

    Args:
        arch: ``"tiny"`` / ``"tiny-sdxl"`` (a few MB, for tests), ``"sd15"``, ``"sd21"``, ``"sdxl"``
            (real shapes, 1-3 B params: build them on the meta device or for benchmarks).
        prediction_type: ``"epsilon"`` or ``"v_prediction"``; default: the arch's own.
        seed: weights are ``torch.manual_seed(seed)``-deterministic.
        prompt_words: extra words for the word tokenizer's vocabulary.
        model_max_length: the text window, start/end tokens included (longer prompts take more windows).
        tokenizer: ``"word"`` (``build_word_tokenizer``), ``"char"`` (``build_char_tokenizer``) or
            ``"clip"`` (CLIP's real 49,408-token vocabulary, ``nfsd.priors.families.clip_tokenizer``).
    """
    from .families import TOKENIZER_PADS, clip_tokenizer

    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}")
    unet_cfg, vae_cfg, encoders, default_pred = ARCHS[arch]
    torch.manual_seed(seed)
    parts = {}
    for i, (hidden, layers, heads, projection) in enumerate(encoders):
        suffix = "" if i == 0 else f"_{i + 1}"
        if tokenizer == "clip":
            tok = clip_tokenizer(TOKENIZER_PADS["sdxl" if len(encoders) > 1 else "sd1"][i])
        elif tokenizer == "char":
            tok = build_char_tokenizer(model_max_length)
        else:
            tok = build_word_tokenizer(prompt_words, model_max_length)
        parts["tokenizer" + suffix] = tok
        ids = (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)
        parts["text_encoder" + suffix] = _text_encoder(len(tok), hidden, layers, heads, model_max_length, projection, ids)
    parts["unet"] = UNet2DConditionModel(**unet_cfg)
    parts["vae"] = AutoencoderKL(**vae_cfg)
    parts["scheduler"] = DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type=prediction_type or default_pred,
    )
    return parts


def build_random_model(path, arch: str = "tiny", prediction_type: str | None = None, seed: int = 0,
                       prompt_words=(), model_max_length: int = 77, tokenizer: str = "word"):
    """Write a random-weight Stable-Diffusion-layout diffusers folder to ``path`` (see
    ``build_random_components`` for the arguments). Returns the folder's ``Path``."""
    import json

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    parts = build_random_components(arch, prediction_type, seed, prompt_words, model_max_length, tokenizer)
    index = {"_class_name": "StableDiffusionXLPipeline" if "text_encoder_2" in parts else "StableDiffusionPipeline"}
    for name, part in parts.items():
        part.save_pretrained(path / name)
        library = "transformers" if name.startswith(("text_encoder", "tokenizer")) else "diffusers"
        index[name] = [library, type(part).__name__]
    if "text_encoder_2" in parts:
        index["force_zeros_for_empty_prompt"] = True
    (path / "model_index.json").write_text(json.dumps(index, indent=1) + "\n")
    return path


def build_random_prior(arch: str = "tiny", device="cpu", dtype=None, seed: int = 0):
    """A ``nfsd.priors.prior.Prior`` with random weights, built in memory (no disk): for speed benchmarks."""
    from .families import FAMILIES
    from .loading import Components
    from .prior import assemble, default_dtype

    device = torch.device(device)
    dtype = dtype or default_dtype(device)
    parts = build_random_components(arch, seed=seed)
    for name, part in parts.items():
        if isinstance(part, torch.nn.Module):
            part.to(dtype)
    two = "text_encoder_2" in parts
    family = FAMILIES["sdxl" if two else "sd2" if arch == "sd21" else "sd1"]
    names = ["", "_2"] if two else [""]
    components = Components(family, parts["unet"], parts["vae"], [parts["tokenizer" + s] for s in names],
                            [parts["text_encoder" + s] for s in names], parts["scheduler"], zero_empty_prompt=two)
    return assemble(f"random-{arch}", components, device, dtype)


def build_tiny_model(path, prediction_type: str = "epsilon", seed: int = 0, prompt_words=()):
    """A tiny random Stable-Diffusion-layout model (~2 MB) for tests: see ``build_random_model``."""
    return build_random_model(path, "tiny", prediction_type, seed, prompt_words)


def build_tiny_sdxl_model(path, prediction_type: str = "epsilon", seed: int = 0, tokenizer: str = "char"):
    """A tiny random SDXL-layout model (~3 MB): two CLIP encoders (the second with projection), a
    UNet with ``addition_embed_type="text_time"``, a VAE with ``force_upcast``. Character-level
    tokenizers by default (one token per character: long prompts are the norm). See
    ``build_random_model``."""
    return build_random_model(path, "tiny-sdxl", prediction_type, seed, tokenizer=tokenizer)


# ---------------------------------------------------------------------------------------------
# Add-ons: a tiny autoencoder (the --encoder tiny path) and tiny LoRA files (nfsd.priors.lora)

TINY_AUTOENCODER = dict(
    encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1),
    num_decoder_blocks=(1, 1), latent_channels=4,
)  # downsamples by 2, like TINY_VAE; the real TAESD / TAESDXL is AutoencoderTiny() with its defaults


def build_tiny_autoencoder(path, seed: int = 0, **overrides):
    """A random-weight diffusers ``AutoencoderTiny`` folder (TAESD layout, a few KB) at ``path``,
    shaped for the tiny model (``build_tiny_model``): put it in ``<model>/vae_tiny`` or pass it as
    ``--tiny-encoder``. Returns the folder's ``Path``."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    AutoencoderTiny(**{**TINY_AUTOENCODER, **overrides}).save_pretrained(path)
    return Path(path)


LORA_TARGETS = {  # module name endings a LoRA adapts (what kohya's trainer targets by default)
    "unet": ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out"),
    "text_encoder": ("q_proj", "k_proj", "v_proj", "out_proj"),
}


def build_random_lora(path, unet, text_encoder=None, format: str = "kohya", rank: int = 4, alpha: float = 2.0,
                      seed: int = 0, scale: float = 0.1):
    """Write a random LoRA for ``unet`` (and ``text_encoder``) to the ``.safetensors`` file ``path``.

    ``format="kohya"``: A1111/kohya keys (``lora_unet_<module_with_underscores>.lora_down.weight`` /
    ``.lora_up.weight`` / ``.alpha``, ``lora_te_...`` for the text encoder). ``format="diffusers"``: peft
    keys as diffusers saves them (``unet.<module>.lora_A.weight`` / ``.lora_B.weight``, ``text_encoder.``),
    no alphas (scale 1). Linear layers only. Returns the file's ``Path``.
    """
    from safetensors.torch import save_file

    if format not in ("kohya", "diffusers"):
        raise ValueError(f"format must be kohya or diffusers, got {format!r}")
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for part, model in (("unet", unet), ("text_encoder", text_encoder)):
        if model is None:
            continue
        for name, module in model.named_modules():
            if not isinstance(module, torch.nn.Linear) or not name.endswith(LORA_TARGETS[part]):
                continue
            down = torch.randn(rank, module.in_features, generator=gen) * scale
            up = torch.randn(module.out_features, rank, generator=gen) * scale
            if format == "kohya":
                key = ("lora_unet_" if part == "unet" else "lora_te_") + name.replace(".", "_")
                tensors.update({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up,
                                f"{key}.alpha": torch.tensor(float(alpha))})
            else:
                tensors.update({f"{part}.{name}.lora_A.weight": down, f"{part}.{name}.lora_B.weight": up})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return Path(path)
