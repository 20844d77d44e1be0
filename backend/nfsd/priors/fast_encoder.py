"""The autoencoder on the gradient path: the model's own VAE (``full``) or a tiny one (``tiny``).

Every NFSD step encodes the render and back-propagates through the encoder; at SD-1.5 shapes that
encoder's forward + backward costs more than the UNet call (BENCHMARKS.md, "Where a step's FLOPs
go"). ``--encoder tiny`` puts a diffusers ``AutoencoderTiny`` (the TAESD layout for SD 1.x/2.x, TAESDXL
for SDXL) on that path; the full VAE still decodes previews and outputs.

Latent scale: TAESD was distilled to produce the latents the UNet sees, i.e. the full VAE's latents
already multiplied by its ``scaling_factor`` (diffusers ships it with ``scaling_factor=1.0``; its
author: "there is no scaling_factor for TAESD", madebyollin/taesd issue #3). So its output is used
as is, never multiplied by the full VAE's 0.18215 / 0.13025.

Where the tiny encoder comes from: ``tiny_encoder=PATH`` (a diffusers ``AutoencoderTiny`` folder with
``config.json`` + weights), else the model folder's ``vae_tiny/`` subfolder. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import ConfigError, ModelError

ADDON_KEY = "tiny_encoder"  # prior.addons[ADDON_KEY] = (folder, AutoencoderTiny)
TINY_SUBFOLDER = "vae_tiny"

Encoder = Callable[[torch.Tensor], torch.Tensor]  # images [B, 3, H, W] in [0, 1] -> latents [B, C, h, w]


def _model_folder(prior) -> Path | None:
    from .loading import resolve_model

    try:
        kind, path = resolve_model(prior.model_id)
    except Exception:  # a prior built in memory (benchmarks): no folder
        return None
    if kind == "folder":
        return path
    if kind == "hub":
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(prior.model_id, local_files_only=True))
        except Exception:
            return None
    return None


def find_tiny_encoder(prior, path: str | None = None) -> Path:
    """The folder of the tiny encoder to use with ``prior``: ``path``, else ``<model folder>/vae_tiny``.

    Raises ``ConfigError`` saying where it looked and what to pass.
    """
    if path:
        folder = Path(path).expanduser()
        if not (folder / "config.json").is_file():
            raise ConfigError(f"tiny encoder {folder} is not a diffusers AutoencoderTiny folder (no config.json); "
                              "pass the folder of TAESD (SD 1.x/2.x) or TAESDXL (SDXL)")
        return folder
    model_folder = _model_folder(prior)
    if model_folder is not None and (model_folder / TINY_SUBFOLDER / "config.json").is_file():
        return model_folder / TINY_SUBFOLDER
    where = f"{model_folder / TINY_SUBFOLDER}" if model_folder else "the model's folder (it has none)"
    raise ConfigError(f"encoder tiny needs a tiny autoencoder: none at {where}; pass --tiny-encoder DIR "
                      "(a diffusers AutoencoderTiny folder: TAESD for SD 1.x/2.x, TAESDXL for SDXL) or use --encoder full")


def load_tiny_encoder(prior, path: str | None = None) -> torch.nn.Module:
    """The ``AutoencoderTiny`` for ``prior`` on its device and dtype, frozen; cached on the prior.

    Raises ``ModelError`` when it does not fit the model (latent channels or downsampling differ).
    """
    from diffusers import AutoencoderTiny

    if prior.vae is None:
        raise ConfigError(f"model {prior.model_id!r} works in pixel space: it has no encoder to replace; use --encoder full")
    folder = find_tiny_encoder(prior, path)
    cached = prior.addons.get(ADDON_KEY)
    if cached and cached[0] == str(folder):
        return cached[1]
    try:
        tiny = AutoencoderTiny.from_pretrained(folder, torch_dtype=prior.dtype)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"could not load the tiny encoder at {folder}: {exc}") from exc
    tiny.decoder = None  # only the encoder is used; the full VAE decodes
    tiny.to(prior.device).eval().requires_grad_(False)
    channels = int(prior.unet.config.in_channels)
    if int(tiny.config.latent_channels) != channels:
        raise ModelError(f"the tiny encoder at {folder} makes {tiny.config.latent_channels}-channel latents but model "
                         f"{prior.model_id!r} reads {channels}: use the tiny encoder of this model's family")
    tiny_factor = 2 ** (len(tiny.config.encoder_block_out_channels) - 1)
    vae_factor = 2 ** (len(prior.vae.config.block_out_channels) - 1) if hasattr(prior.vae.config, "block_out_channels") else 8
    if tiny_factor != vae_factor:
        raise ModelError(f"the tiny encoder at {folder} downsamples by {tiny_factor} but model {prior.model_id!r}'s VAE "
                         f"by {vae_factor}: use the tiny encoder of this model's family")
    prior.addons[ADDON_KEY] = (str(folder), tiny)
    return tiny


def gradient_encoder(prior, encoder: str = "full", path: str | None = None) -> Encoder:
    """The differentiable ``images [B, 3, H, W] in [0, 1] -> latents [B, C, h, w]`` (``prior.dtype``) the
    engine back-propagates through: ``prior.encode`` for ``"full"``, the tiny encoder for ``"tiny"``.
    Images are resized to ``prior.model_size`` of their size (antialiased bilinear), as ``prior.encode`` does."""
    if encoder == "full":
        return prior.encode
    if encoder != "tiny":
        raise ConfigError(f"encoder must be full or tiny, got {encoder!r}")
    tiny = load_tiny_encoder(prior, path)

    def encode(images: torch.Tensor) -> torch.Tensor:
        size = prior.model_size(images.shape[-1])  # what prior.encode would feed the full VAE
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, (size, size), mode="bilinear", align_corners=False, antialias=True)
        z = tiny.encode(images.to(prior.dtype) * 2.0 - 1.0).latents  # already in the UNet's latent scale
        return torch.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)  # as prior.encode: one bad view stays finite

    return encode


__all__ = ["gradient_encoder", "load_tiny_encoder", "find_tiny_encoder", "TINY_SUBFOLDER"]
