"""The built-in prior's networks and files: what ``train_prior`` builds and saves.

``build_models(cfg, vae)`` makes a fresh (word tokenizer, CLIP text encoder, UNet, DDPM scheduler)
for a ``train_prior.PriorTrainConfig`` (any object with its model fields: ``seed``, ``max_tokens``,
``cross_attention_dim``, ``text_layers``, ``size``, ``block_out_channels``, ``layers_per_block``,
``global_text``, ``prediction_type``, ``beta_schedule``); ``save_prior`` writes them as the
diffusers folder that ``nfsd.priors.prior.load_prior`` reads like any Stable Diffusion folder.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from . import vocabulary


# Pixel space: cross-attention only at 8x8 (and in the mid block): the prompts name global properties (pattern,
# colours), and attention at 16x16 tripled the CPU step time for no visible gain.
PIXEL_BLOCKS = dict(
    down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
)

# The prompts name global properties; cross-attention alone reaches only the 8x8 levels. Diffusers'
# "text" addition embedding attention-pools the text states into the time embedding, and
# scale-shift lets that embedding modulate every ResNet block at every resolution.
GLOBAL_TEXT = dict(addition_embed_type="text", addition_embed_type_num_heads=4, resnet_time_scale_shift="scale_shift")


# A latent UNet works on 8x8 (then 4x4): attention everywhere is cheap there.
def _latent_blocks(levels: int) -> dict:
    return dict(down_block_types=("CrossAttnDownBlock2D",) * levels, up_block_types=("CrossAttnUpBlock2D",) * levels)


def load_vae(path):
    """The frozen autoencoder of a latent prior, or None for a pixel-space one."""
    if path is None:
        return None
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(path).float().eval().requires_grad_(False)


def build_models(cfg, vae=None):
    """Fresh (tokenizer, text encoder, unet, scheduler) for ``cfg``; weights seeded by ``cfg.seed``.

    With ``vae`` the UNet works on its latents (``cfg.size / 4`` squared, SD's scaled-linear
    schedule); without, on 32x32 pixels (linear schedule)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from ..priors.tiny import build_word_tokenizer

    torch.manual_seed(cfg.seed)
    tokenizer = build_word_tokenizer(vocabulary.vocabulary(), model_max_length=cfg.max_tokens)
    d = cfg.cross_attention_dim
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=d, intermediate_size=4 * d, num_hidden_layers=cfg.text_layers,
        num_attention_heads=4, max_position_embeddings=cfg.max_tokens, pad_token_id=0, bos_token_id=2,
        eos_token_id=3,
    ))
    if vae is not None:
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        size, channels, blocks = cfg.size // factor, vae.config.latent_channels, _latent_blocks(len(cfg.block_out_channels))
    else:
        size, channels, blocks = cfg.size, 3, PIXEL_BLOCKS
    unet = UNet2DConditionModel(
        sample_size=size, in_channels=channels, out_channels=channels, layers_per_block=cfg.layers_per_block,
        block_out_channels=tuple(cfg.block_out_channels), cross_attention_dim=d, attention_head_dim=8 if vae is not None else 4,
        norm_num_groups=8, **blocks, **(GLOBAL_TEXT if cfg.global_text else {}),
    )
    if vae is not None:  # Stable Diffusion's schedule, as for SD's own unit-variance latents
        scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                  beta_schedule="scaled_linear", prediction_type=cfg.prediction_type, clip_sample=False)
        return tokenizer, text_encoder, unet, scheduler
    # Pixel space needs the full DDPM schedule: with SD's scaled-linear betas a 32x32 image keeps
    # visible colour at t=999, so sampling from pure noise would start off the training distribution.
    # v-prediction: an epsilon model of this size did worse than "eps = sqrt(1-a) z_t" at t > 600
    # (the image is 1/sqrt(a) times its error there), its samples were noise, and it ignored the
    # prompt at high t. The Prior converts v to epsilon, so distillation sees epsilon either way.
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule=cfg.beta_schedule,
                              prediction_type=cfg.prediction_type, clip_sample=True)
    return tokenizer, text_encoder, unet, scheduler


def save_prior(out: Path, tokenizer, text_encoder, unet, scheduler, info: dict | None = None, vae=None,
               half: bool = True) -> Path:
    """Write the diffusers folder (safetensors) that ``load_prior`` reads; returns ``out``.

    ``half``: store the weights as float16 (half the size; the loader casts to its own dtype)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if half:
        unet, text_encoder = copy.deepcopy(unet).half(), copy.deepcopy(text_encoder).half()
        vae = copy.deepcopy(vae).half() if vae is not None else None
    unet.save_pretrained(out / "unet", safe_serialization=True)
    text_encoder.save_pretrained(out / "text_encoder", safe_serialization=True)
    tokenizer.save_pretrained(out / "tokenizer")
    scheduler.save_pretrained(out / "scheduler")
    if vae is not None:
        vae.save_pretrained(out / "vae", safe_serialization=True)
    (out / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "scheduler": ["diffusers", "DDPMScheduler"],
        **({"vae": ["diffusers", "AutoencoderKL"]} if vae is not None else {}),
    }, indent=1) + "\n")
    if info is not None:
        (out / "training.json").write_text(json.dumps(info, indent=1) + "\n")
    return out
