"""Model families: which Stable Diffusion a folder or single-file checkpoint is, and its configs.

Supported: SD 1.x (one CLIP ViT-L encoder, 768-d), SD 2.x (one OpenCLIP ViT-H encoder, 1024-d) and
SDXL (CLIP ViT-L + OpenCLIP ViT-bigG, pooled text embeddings and size conditioning), with their
fine-tunes; the built-in model is SD-1.x-shaped. Everything else (Flux, SD3, Kandinsky, inpainting
and other image-conditioned UNets, the SDXL refiner) is named in one clear ``UnsupportedModel`` line.

A diffusers folder says what it is in ``model_index.json``; a single file is recognised by its keys:
``conditioner.embedders.1.model.*`` (OpenCLIP bigG) is SDXL, ``cond_stage_model.model.*`` (OpenCLIP)
SD 2.x, ``cond_stage_model.transformer.*`` (CLIP) SD 1.x. A single file carries weights but no
configs: ``config_folder`` writes the family's diffusers configs (the real architectures below) and
``clip_tokenizer`` builds CLIP's tokenizer from the vocabulary shipped in ``nfsd/data``, so loading
works offline. What keys cannot tell: SD 2.x 768 models predict v, 512-base models epsilon; SD 2.x
is taken as v (the 768 models are the common ones) and a checkpoint that stores a ``v_pred`` key
(the convention of v-prediction SDXL fine-tunes) as v. ``--model-config DIR`` overrides all of it.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import ModelError

DATA_DIR = Path(__file__).parents[1] / "data"


class UnsupportedModel(ModelError):
    """The model is of a family nfsd cannot drive (the message says which and what is supported)."""


SUPPORTED = "supported: Stable Diffusion 1.x, 2.x and SDXL (base) checkpoints and their fine-tunes"


@dataclass(frozen=True)
class Family:
    """What the loader and the engine need to know about a family.

    Attributes:
        name: ``"sd1"``, ``"sd2"`` or ``"sdxl"``.
        pipeline: the diffusers pipeline class that reads its single files.
        render_size: default render size in pixels (the resolution it was trained at).
        size_conditioning: the UNet takes pooled text embeddings and ``time_ids`` (SDXL); such a
            model sees renders at their own size (up to its native size), and ``time_ids`` say which.
        prediction_type: what its single files predict when nothing says otherwise.
    """

    name: str
    pipeline: str
    render_size: int
    size_conditioning: bool = False
    prediction_type: str = "epsilon"


FAMILIES = {
    "sd1": Family("sd1", "StableDiffusionPipeline", 512),
    "sd2": Family("sd2", "StableDiffusionPipeline", 768, prediction_type="v_prediction"),
    "sdxl": Family("sdxl", "StableDiffusionXLPipeline", 1024, size_conditioning=True),
}


# ---------------------------------------------------------------------------------------------
# Detection

# model_index.json ``_class_name`` fragments of pipelines nfsd cannot drive -> what the model is.
_UNSUPPORTED_PIPELINES = (
    ("Flux", "a Flux model"), ("StableDiffusion3", "a Stable Diffusion 3 model"), ("Kandinsky", "a Kandinsky model"),
    ("Inpaint", "an inpainting model"), ("XLImg2Img", "an SDXL refiner (an image-to-image model)"),
    ("PixArt", "a PixArt model"), ("Sana", "a Sana model"), ("AuraFlow", "an AuraFlow model"),
    ("HunyuanDiT", "a Hunyuan-DiT model"), ("Wuerstchen", "a Wuerstchen / Stable Cascade model"),
    ("StableCascade", "a Stable Cascade model"), ("IF", "a DeepFloyd IF model"), ("Lumina", "a Lumina model"),
)


def unsupported(what: str, where) -> UnsupportedModel:
    return UnsupportedModel(f"{where} is {what}, which nfsd cannot use; {SUPPORTED}")


def _in_channels_family(in_channels: int, where) -> None:
    if in_channels == 9:
        raise unsupported("an inpainting model (its UNet reads 9 channels: latents, mask and masked image)", where)
    if in_channels != 4:
        raise unsupported(f"an image-conditioned model (its UNet reads {in_channels} channels, not 4)", where)


def folder_family(path: Path) -> Family:
    """The family of a diffusers folder, from ``model_index.json`` and the UNet's config.

    Raises ``UnsupportedModel`` for other pipelines (Flux, SD3, Kandinsky, inpainting...).
    """
    index = {}
    if (path / "model_index.json").is_file():
        index = json.loads((path / "model_index.json").read_text())
    name = str(index.get("_class_name", ""))
    for fragment, what in _UNSUPPORTED_PIPELINES:
        if fragment in name:
            raise unsupported(what, path)
    if (path / "transformer").is_dir() and not (path / "unet").is_dir():
        raise unsupported(f"a transformer-based model ({name or 'no model_index.json'})", path)
    unet = {}
    if (path / "unet" / "config.json").is_file():
        unet = json.loads((path / "unet" / "config.json").read_text())
        _in_channels_family(int(unet.get("in_channels", 4)), path)
    if name and name not in ("StableDiffusionPipeline", "StableDiffusionXLPipeline"):
        raise unsupported(f"a {name}", path)
    if "XL" in name or (path / "text_encoder_2").is_dir() or unet.get("addition_embed_type") == "text_time":
        return FAMILIES["sdxl"]
    return FAMILIES["sd2"] if unet.get("cross_attention_dim") == 1024 else FAMILIES["sd1"]


def checkpoint_family(shapes: dict[str, tuple], where) -> Family:
    """The family of a single-file checkpoint from its keys (and one shape).

    Args:
        shapes: key -> tensor shape of every tensor in the file (``checkpoint_shapes``).
        where: the file, for messages.
    """
    keys = list(shapes)

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    if has("double_blocks.") or has("model.diffusion_model.double_blocks.") or has("transformer_blocks.0.attn.norm_added_k"):
        raise unsupported("a Flux model", where)
    if has("joint_blocks.") or has("model.diffusion_model.joint_blocks."):
        raise unsupported("a Stable Diffusion 3 model", where)
    if any(".lora_down." in k or ".lora_A." in k or k.startswith("lora_unet_") for k in keys[:200]):
        raise unsupported("a LoRA (weights that modify a model), not a model: pass it with --lora", where)
    conv_in = shapes.get("model.diffusion_model.input_blocks.0.0.weight")
    if conv_in is None:
        if has("encoder.down.") or has("decoder.up."):
            raise unsupported("a VAE alone, not a whole model", where)
        prefixes = sorted({k.split(".")[0] for k in keys})[:6]
        raise unsupported(f"not a Stable Diffusion checkpoint (its top-level keys are {', '.join(prefixes)})", where)
    _in_channels_family(int(conv_in[1]), where)
    if has("conditioner.embedders.1.model."):
        return FAMILIES["sdxl"]
    if has("conditioner.embedders.0.model."):
        raise unsupported("an SDXL refiner (an image-to-image model)", where)
    if has("cond_stage_model.model."):
        return FAMILIES["sd2"]
    if has("cond_stage_model.transformer."):
        return FAMILIES["sd1"]
    raise unsupported("a diffusion model without a CLIP text encoder nfsd knows", where)


def checkpoint_shapes(path: Path) -> dict[str, tuple]:
    """Key -> shape of every tensor in a ``.safetensors`` file (header only, no weights read) or a
    pickled ``.ckpt`` (loaded; ``state_dict`` unwrapped)."""
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    import torch

    data = torch.load(str(path), map_location="meta", weights_only=True)
    data = data.get("state_dict", data)
    return {k: tuple(v.shape) for k, v in data.items() if hasattr(v, "shape")}


# ---------------------------------------------------------------------------------------------
# Configs of the real architectures (diffusers names)

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
SD21_UNET = dict(SD15_UNET, sample_size=96, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                 use_linear_projection=True)
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,  # pooled 1280 + 6 time ids x 256
)
SD_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512,
    scaling_factor=0.18215,
)
SDXL_VAE = dict(SD_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True)
# CLIP text encoders (transformers CLIPTextConfig): ViT-L (SD 1.x, SDXL's first), OpenCLIP ViT-H
# (SD 2.x: 23 of its 24 layers, the penultimate output), OpenCLIP ViT-bigG (SDXL's second, projected).
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
              bos_token_id=0, eos_token_id=2, pad_token_id=1)
OPENCLIP_H = dict(CLIP_L, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                  hidden_act="gelu", projection_dim=512)
OPENCLIP_BIGG = dict(CLIP_L, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                     num_attention_heads=20, hidden_act="gelu", projection_dim=1280)
SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")

# family -> (unet, vae, [(component, transformers class, text config)], pad token of each tokenizer)
ARCHITECTURES = {
    "sd1": (SD15_UNET, SD_VAE, [("text_encoder", "CLIPTextModel", CLIP_L)]),
    "sd2": (SD21_UNET, SD_VAE, [("text_encoder", "CLIPTextModel", OPENCLIP_H)]),
    "sdxl": (SDXL_UNET, SDXL_VAE, [("text_encoder", "CLIPTextModel", CLIP_L),
                                   ("text_encoder_2", "CLIPTextModelWithProjection", OPENCLIP_BIGG)]),
}
# SD 1.x's tokenizer pads with <|endoftext|>, the OpenCLIP ones with "!" (id 0), as their models were trained.
TOKENIZER_PADS = {"sd1": ["<|endoftext|>"], "sd2": ["!"], "sdxl": ["<|endoftext|>", "!"]}


def config_folder(family: Family, dest: Path, prediction_type: str | None = None) -> Path:
    """Write a diffusers config folder (configs only, no weights, no tokenizer) for ``family`` at
    ``dest``: what ``from_single_file(config=...)`` reads instead of fetching configs from the hub."""
    unet, vae, encoders = ARCHITECTURES[family.name]
    index = {"_class_name": family.pipeline, "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "DDPMScheduler"]}
    parts = {"unet": dict(unet, _class_name="UNet2DConditionModel"), "vae": dict(vae, _class_name="AutoencoderKL")}
    for i, (name, cls, text) in enumerate(encoders):
        index[name] = ["transformers", cls]
        index["tokenizer" + name.removeprefix("text_encoder")] = ["transformers", "CLIPTokenizer"]
        parts[name] = dict(text, architectures=[cls], model_type="clip_text_model")
    if family.name == "sdxl":
        index["force_zeros_for_empty_prompt"] = True
    else:
        index.update(safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "model_index.json").write_text(json.dumps(index, indent=1))
    for name, cfg in parts.items():
        (dest / name).mkdir(exist_ok=True)
        (dest / name / "config.json").write_text(json.dumps(cfg, indent=1))
    (dest / "scheduler").mkdir(exist_ok=True)
    scheduler = dict(SCHEDULER, _class_name="DDPMScheduler", prediction_type=prediction_type or family.prediction_type)
    (dest / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler, indent=1))
    return dest


# ---------------------------------------------------------------------------------------------
# CLIP's tokenizer, offline


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character map (the first 256 vocabulary entries)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(keep, map(chr, chars)))


@lru_cache(maxsize=1)
def _clip_vocab() -> tuple[dict[str, int], list[str]]:
    lines = gzip.open(DATA_DIR / "clip_bpe_merges.txt.gz").read().decode("utf-8").splitlines()
    merges = [line for line in lines[1:] if line]
    tokens = list(_bytes_to_unicode().values())
    tokens += [t + "</w>" for t in tokens]
    tokens += ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """CLIP's tokenizer (49,408 tokens, 77-token window) built from the shipped vocabulary, no download.

    ``pad_token``: ``"<|endoftext|>"`` for SD 1.x and SDXL's first encoder, ``"!"`` for the OpenCLIP
    encoders (SD 2.x, SDXL's second).
    """
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab()
    return CLIPTokenizer(vocab=dict(vocab), merges=[tuple(m.split()) for m in merges], pad_token=pad_token,
                         model_max_length=77)
