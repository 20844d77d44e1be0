"""Diffusers state dicts -> the original CompVis/LDM single-file layout (what A1111 and ComfyUI keep).

Test-side only: it lets the tests write a single-file ``.safetensors`` checkpoint from the tiny random
diffusers model, so the single-file loading path is exercised offline on a real LDM key layout. The
mapping is the inverse of diffusers' ``convert_ldm_unet_checkpoint`` / ``convert_ldm_vae_checkpoint`` /
``convert_ldm_clip_checkpoint`` and is derived from each model's config (any number of blocks and
``layers_per_block``), not hard-coded for Stable Diffusion's four blocks.

LDM layout in short (SD 1.x):

- UNet under ``model.diffusion_model.``: ``input_blocks.0.0`` is ``conv_in``; down block ``b``, layer
  ``l`` is ``input_blocks.{1 + b (L+1) + l}`` (``.0`` resnet, ``.1`` transformer) and its downsampler
  ``input_blocks.{1 + b (L+1) + L}.0.op``; ``middle_block.{0,1,2}`` is resnet / transformer / resnet;
  up block ``b``, layer ``l`` is ``output_blocks.{b (L+1) + l}`` with the upsampler after the last
  layer's resnet (and transformer, if any). Resnets name their parts ``in_layers.{0,2}``,
  ``emb_layers.1``, ``out_layers.{0,3}``, ``skip_connection``.
- VAE under ``first_stage_model.``: ``{encoder.down,decoder.up}.{i}.block.{j}``, decoder blocks in
  reverse order, ``mid.block_{1,2}`` and ``mid.attn_1`` whose q/k/v/proj_out are 1x1 convolutions.
- CLIP text encoder under ``cond_stage_model.transformer.text_model.`` (transformers' own names).
- SDXL: the UNet's ``add_embedding`` is ``label_emb.0.{0,2}``; the CLIP encoder sits under
  ``conditioner.embedders.0.transformer.``, the OpenCLIP one under ``conditioner.embedders.1.model.``
  (``transformer.resblocks.{i}.attn.in_proj_weight``..., see ``open_clip_to_ldm``).
"""

from __future__ import annotations

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer."
SDXL_OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."

_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
                "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename_modules(state_dict: dict, modules: dict[str, tuple[str, dict]]) -> dict:
    """Rename every key of ``state_dict`` through ``modules``: diffusers module path -> (LDM module path,
    renames of the parts inside that module). The longest matching module path wins; a key that no
    module path covers is an error, so a converter that forgets a layer fails loudly."""
    out = {}
    for key, value in state_dict.items():
        owner = max((m for m in modules if key.startswith(m + ".")), key=len, default=None)
        if owner is None:
            raise KeyError(f"no LDM name for {key!r}")
        ldm_module, parts = modules[owner]
        rest = key[len(owner) + 1:]
        inner = max((p for p in parts if rest.startswith(p + ".")), key=len, default=None)
        if inner is not None:
            rest = parts[inner] + rest[len(inner):]
        out[f"{ldm_module}.{rest}"] = value
    return out


def unet_to_ldm(state_dict: dict, config) -> dict:
    """``UNet2DConditionModel`` state dict -> LDM ``openaimodel.UNetModel`` keys (no ``model.diffusion_model.``).

    Args:
        state_dict: diffusers keys (``down_blocks.0.resnets.0.conv1.weight``...).
        config: the UNet's config (``layers_per_block``, ``down_block_types``, ``up_block_types``).
    """
    per = int(config["layers_per_block"])
    downs, ups = list(config["down_block_types"]), list(config["up_block_types"])
    modules = {
        "conv_in": ("input_blocks.0.0", {}), "time_embedding.linear_1": ("time_embed.0", {}),
        "time_embedding.linear_2": ("time_embed.2", {}), "conv_norm_out": ("out.0", {}), "conv_out": ("out.2", {}),
        "mid_block.resnets.0": ("middle_block.0", _UNET_RESNET),
        "mid_block.attentions.0": ("middle_block.1", {}),
        "mid_block.resnets.1": ("middle_block.2", _UNET_RESNET),
        # SDXL: the embedding of the pooled text and the size conditioning
        "add_embedding.linear_1": ("label_emb.0.0", {}), "add_embedding.linear_2": ("label_emb.0.2", {}),
    }
    for b, kind in enumerate(downs):
        for layer in range(per):
            i = 1 + b * (per + 1) + layer
            modules[f"down_blocks.{b}.resnets.{layer}"] = (f"input_blocks.{i}.0", _UNET_RESNET)
            if "CrossAttn" in kind:
                modules[f"down_blocks.{b}.attentions.{layer}"] = (f"input_blocks.{i}.1", {})
        if b < len(downs) - 1:  # every block but the last halves the resolution
            modules[f"down_blocks.{b}.downsamplers.0.conv"] = (f"input_blocks.{1 + b * (per + 1) + per}.0.op", {})
    for b, kind in enumerate(ups):
        attention = "CrossAttn" in kind
        for layer in range(per + 1):
            i = b * (per + 1) + layer
            modules[f"up_blocks.{b}.resnets.{layer}"] = (f"output_blocks.{i}.0", _UNET_RESNET)
            if attention:
                modules[f"up_blocks.{b}.attentions.{layer}"] = (f"output_blocks.{i}.1", {})
        if b < len(ups) - 1:  # the upsampler sits after the last layer's resnet and transformer
            modules[f"up_blocks.{b}.upsamplers.0.conv"] = (f"output_blocks.{b * (per + 1) + per}.{2 if attention else 1}.conv", {})
    return _rename_modules(state_dict, modules)


def vae_to_ldm(state_dict: dict, config) -> dict:
    """``AutoencoderKL`` state dict -> LDM ``AutoencoderKL`` keys (no ``first_stage_model.``).

    The mid-block attention's linear q/k/v/out become 1x1 convolution weights ``[C, C, 1, 1]``, as
    in the original checkpoints.
    """
    n = len(config["down_block_types"])
    per = int(config["layers_per_block"])
    modules = {name: (name, {}) for name in ("quant_conv", "post_quant_conv")}
    for part, blocks, sampler, ldm_sampler in (("encoder", "down", "downsamplers", "downsample"),
                                               ("decoder", "up", "upsamplers", "upsample")):
        modules[f"{part}.conv_in"] = (f"{part}.conv_in", {})
        modules[f"{part}.conv_out"] = (f"{part}.conv_out", {})
        modules[f"{part}.conv_norm_out"] = (f"{part}.norm_out", {})
        modules[f"{part}.mid_block.attentions.0"] = (f"{part}.mid.attn_1", _VAE_ATTENTION)
        for j in range(2):
            modules[f"{part}.mid_block.resnets.{j}"] = (f"{part}.mid.block_{j + 1}", _VAE_RESNET)
        for i in range(n):
            # The decoder's blocks are numbered from the lowest resolution in diffusers, from the
            # highest in LDM; the encoder's agree.
            k = i if part == "encoder" else n - 1 - i
            layers = per if part == "encoder" else per + 1
            for j in range(layers):
                modules[f"{part}.{blocks}_blocks.{i}.resnets.{j}"] = (f"{part}.{blocks}.{k}.block.{j}", _VAE_RESNET)
            if i < n - 1:
                modules[f"{part}.{blocks}_blocks.{i}.{sampler}.0.conv"] = (f"{part}.{blocks}.{k}.{ldm_sampler}.conv", {})
    out = _rename_modules(state_dict, modules)
    for key, value in out.items():
        if ".mid.attn_1." in key and key.endswith(".weight") and value.ndim == 2:
            out[key] = value[:, :, None, None]
    return out


def clip_to_ldm(state_dict: dict) -> dict:
    """``CLIPTextModel`` state dict -> the keys SD 1.x checkpoints keep under ``cond_stage_model.transformer.``.

    transformers >= 5.6 dropped the ``text_model.`` wrapper from ``CLIPTextModel``; the checkpoints
    still have it, so it is put back. The ``position_ids`` buffer that SD 1.x files carry is added too.
    """
    out = {}
    for key, value in state_dict.items():
        out[key if key.startswith("text_model.") else "text_model." + key] = value
    positions = out["text_model.embeddings.position_embedding.weight"].shape[0]
    out.setdefault("text_model.embeddings.position_ids", torch.arange(positions)[None])
    return out


def open_clip_to_ldm(state_dict: dict) -> dict:
    """``CLIPTextModelWithProjection`` state dict -> OpenCLIP's keys (what SDXL checkpoints keep under
    ``conditioner.embedders.1.model.``): q/k/v fused into ``attn.in_proj_*``, ``fc1/fc2`` named
    ``mlp.c_fc/c_proj``, the position table a bare ``positional_embedding`` and ``text_projection``
    stored transposed (``[hidden, projection]``, used as ``x @ P``)."""
    sd = {k.removeprefix("text_model."): v for k, v in state_dict.items()}
    out = {
        "token_embedding.weight": sd.pop("embeddings.token_embedding.weight"),
        "positional_embedding": sd.pop("embeddings.position_embedding.weight"),
        "ln_final.weight": sd.pop("final_layer_norm.weight"), "ln_final.bias": sd.pop("final_layer_norm.bias"),
        "text_projection": sd.pop("text_projection.weight").T.contiguous(),
    }
    sd.pop("embeddings.position_ids", None)
    layers = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")})
    parts = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch.cat([sd.pop(src + f"self_attn.{q}_proj.{kind}") for q in "qkv"])
            for old, new in parts.items():
                out[dst + f"{new}.{kind}"] = sd.pop(src + f"{old}.{kind}")
    if sd:
        raise KeyError(f"no OpenCLIP name for {sorted(sd)[:3]}")
    return out


def folder_to_single_file(folder, path) -> dict:
    """Write the diffusers folder's UNet, VAE and text encoder(s) as one LDM-layout ``.safetensors`` at ``path``.

    An SD folder's CLIP encoder goes under ``cond_stage_model.transformer.``; an SDXL folder's two
    encoders under ``conditioner.embedders.0.transformer.`` (CLIP) and ``conditioner.embedders.1.model.``
    (OpenCLIP layout). Also stores the schedule (``betas``, ``alphas_cumprod``) at the top level, as the
    original checkpoints do. Returns the state dict written (keys -> float32 CPU tensors).
    """
    from pathlib import Path

    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    text = CLIPTextModel.from_pretrained(f"{folder}/text_encoder")
    sched = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    checkpoint = {"betas": sched.betas, "alphas_cumprod": sched.alphas_cumprod}
    parts = [(UNET_PREFIX, unet_to_ldm(unet.state_dict(), unet.config)),
             (VAE_PREFIX, vae_to_ldm(vae.state_dict(), vae.config))]
    if (Path(folder) / "text_encoder_2").is_dir():
        text_2 = CLIPTextModelWithProjection.from_pretrained(f"{folder}/text_encoder_2")
        parts += [(SDXL_CLIP_PREFIX, clip_to_ldm(text.state_dict())),
                  (SDXL_OPEN_CLIP_PREFIX, open_clip_to_ldm(text_2.state_dict()))]
    else:
        parts.append((CLIP_PREFIX, clip_to_ldm(text.state_dict())))
    for prefix, part in parts:
        checkpoint.update({prefix + k: v for k, v in part.items()})
    checkpoint = {k: v.detach().contiguous() for k, v in checkpoint.items()}
    save_file(checkpoint, str(path))
    return checkpoint
