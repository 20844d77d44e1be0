"""Diffusion priors: a Stable Diffusion model (diffusers) seen through the few operations distillation needs.

A prior is loaded from
- ``"builtin"``: the small text-to-texture model that ships with the package (a latent model with its
  own tiny VAE, loaded through the same folder path as below);
- a local diffusers folder (``unet/``, ``scheduler/``, ``text_encoder/``, ``tokenizer/``, optional ``vae/``;
  no ``vae/`` means the UNet works in pixel space; SDXL adds ``text_encoder_2/``, ``tokenizer_2/``);
- a single-file checkpoint (``.safetensors`` / ``.ckpt``, what A1111 and ComfyUI keep), SD 1.x, 2.x or
  SDXL, recognised by its keys (``nfsd.priors.families``) and loaded offline;
- a Hugging Face hub id (the local cache first; a download only when the hub is reachable and
  ``HF_HUB_OFFLINE`` is not set).

Loading is two steps: ``nfsd.priors.loading.load_components`` reads the networks (``Components``),
``assemble`` puts them on the device as a ``Prior``. Loaded priors are kept in the one module-level cache (keyed by model,
device, dtype); loading a different model replaces the old one so a GPU holds one model at a time.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError, ModelError
from .families import Family
from .loading import Components, LoadProgress, load_components
from .text import TextEmbeddings, TextEncoder, count_tokens, encode_prompts


@dataclass
class Prior:
    """A text-conditional diffusion model with the operations distillation needs.

    Attributes:
        family: ``nfsd.priors.families.Family`` (sd1 / sd2 / sdxl).
        unet: ``UNet2DConditionModel`` predicting epsilon or v.
        vae: ``AutoencoderKL`` (or ``AutoencoderTiny``) or None for a pixel-space model.
        text: one ``TextEncoder`` (SD 1.x/2.x) or two (SDXL).
        alphas_cumprod: ``[T]`` float32 on ``device``: the training schedule's cumulative alphas.
        prediction_type: ``"epsilon"`` or ``"v_prediction"`` (v is converted to epsilon).
        latent_scale: the VAE's ``scaling_factor`` (1.0 in pixel space).
        image_size: the resolution the model was trained at (UNet ``sample_size`` x VAE factor).
        dtype: the dtype of the UNet and text encoders (float16/bfloat16 on CUDA, float32 on CPU).
        vae_dtype: the VAE's dtype: ``dtype``, except float16 becomes bfloat16 (float32 where bfloat16
            is unsupported) when the VAE's config says ``force_upcast`` (SDXL's VAE overflows in float16).
        zero_empty_prompt: the empty prompt's embeddings are zeros (SDXL's unconditional input).
    """

    model_id: str
    family: Family
    unet: torch.nn.Module
    vae: torch.nn.Module | None
    text: list[TextEncoder]
    alphas_cumprod: torch.Tensor
    prediction_type: str
    latent_scale: float
    image_size: int
    device: torch.device
    dtype: torch.dtype
    vae_dtype: torch.dtype
    zero_empty_prompt: bool = False
    tuned: set = dataclasses.field(default_factory=set)  # speed options already applied
    addons: dict = dataclasses.field(default_factory=dict)  # LoRAs, tiny encoder on it (nfsd.priors.lora, nfsd.priors.fast_encoder)

    # The first encoder under diffusers' names (LoRA loaders and older callers use them).
    @property
    def tokenizer(self):
        return self.text[0].tokenizer

    @property
    def text_encoder(self) -> torch.nn.Module:
        return self.text[0].model

    @property
    def text_encoder_2(self) -> torch.nn.Module | None:
        return self.text[1].model if len(self.text) > 1 else None

    def tune(self, channels_last: bool = True, compile: bool = False) -> None:
        """Speed options for CUDA (no-ops on the CPU): channels_last memory format for the UNet and
        VAE convolutions, and ``torch.compile`` of the UNet and the VAE encoder. Idempotent."""
        if self.device.type != "cuda":
            return
        if channels_last and "channels_last" not in self.tuned:
            for module in (self.unet, self.vae):
                if module is not None:
                    module.to(memory_format=torch.channels_last)
            self.tuned.add("channels_last")
        if compile and "compile" not in self.tuned:
            self.unet = torch.compile(self.unet)
            if self.vae is not None and hasattr(self.vae, "encoder"):
                self.vae.encoder = torch.compile(self.vae.encoder)
            self.tuned.add("compile")

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    @property
    def max_prompt_tokens(self) -> int:
        """Tokens per text window, start/end included (77 for CLIP, 32 built-in); longer prompts take more windows."""
        return self.text[0].window

    @property
    def default_render_size(self) -> int:
        """Render size when the settings leave it open: the model's own (512 SD 1.x and the built-in
        model, 768 SD 2.x-v, 1024 SDXL)."""
        return max(512, self.image_size)

    @property
    def vae_factor(self) -> int:
        """Pixels per latent pixel (8 for Stable Diffusion, 1 in pixel space)."""
        if self.vae is None or not hasattr(self.vae.config, "block_out_channels"):
            return 1 if self.vae is None else 8
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def model_size(self, render_size: int) -> int:
        """The resolution the UNet sees for renders of ``render_size`` px: ``image_size``, except for
        size-conditioned models (SDXL), which see the render's own size (at most ``image_size``,
        floored to what the UNet divides) and are told it through ``time_ids``."""
        if not self.family.size_conditioning:
            return self.image_size
        step = self.vae_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)
        return max(step, min(render_size, self.image_size) // step * step)

    def count_tokens(self, text: str) -> int:
        return count_tokens(self.tokenizer, text)

    def prompt_report(self, text: str) -> dict:
        """``{"tokens", "chunks"}``: how many tokens ``text`` takes and in how many windows."""
        n = self.count_tokens(text)
        return {"tokens": n, "chunks": max(1, -(-n // (self.max_prompt_tokens - 2)))}

    def embed(self, prompts: list[str]) -> TextEmbeddings:
        """Text embeddings of ``prompts`` (any length): ``hidden [N, L, D]`` in ``dtype`` with ``L`` a
        multiple of the window, plus SDXL's pooled ``[N, 1280]``. No gradient."""
        return encode_prompts(self.text, list(prompts), self.device, self.dtype, self.zero_empty_prompt)

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in [0, 1] (row 0 top) -> latents ``[B, C, h, w]`` in ``dtype``.

        Differentiable: gradients flow through the encoder back to the images. Images are resized
        (antialiased bilinear) to ``model_size`` of their size when it differs. The VAE runs in
        ``vae_dtype``; non-finite latents (a float16 overflow) become finite so one bad view cannot
        poison the texture.
        """
        size = self.model_size(images.shape[-1])
        if images.shape[-1] != size or images.shape[-2] != size:
            images = F.interpolate(images, (size, size), mode="bilinear", align_corners=False, antialias=True)
        x = images * 2.0 - 1.0
        if self.vae is None:
            return (x * self.latent_scale).to(self.dtype)
        enc = self.vae.encode(x.to(self.vae_dtype))
        if hasattr(enc, "latent_dist"):
            z = enc.latent_dist.sample(generator)
        else:  # AutoencoderTiny returns latents directly
            z = enc.latents
        # After the cast: a value beyond float16's range becomes inf there, and then 0 like a NaN.
        return torch.nan_to_num((z * self.latent_scale).to(self.dtype), nan=0.0, posinf=0.0, neginf=0.0)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images ``[B, 3, H, W]`` float32 in [0, 1] (for sampling and previews)."""
        z = latents / self.latent_scale
        x = z if self.vae is None else self.vae.decode(z.to(self.vae_dtype)).sample
        return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0)

    def add_noise(self, z: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``z_t = sqrt(a_t) z + sqrt(1 - a_t) eps`` with per-sample ``t`` ``[B]`` (long)."""
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1).to(z.dtype)
        return a.sqrt() * z + (1.0 - a).sqrt() * noise

    def time_ids(self, z: torch.Tensor) -> torch.Tensor:
        """SDXL's size conditioning ``[N, 6]``: original size, crop offset, target size =
        ``(H, W, 0, 0, H, W)``, the render size the latents ``z [N, C, h, w]`` come from."""
        h, w = z.shape[-2] * self.vae_factor, z.shape[-1] * self.vae_factor
        row = torch.tensor([h, w, 0, 0, h, w], device=z.device, dtype=self.dtype)
        return row.expand(z.shape[0], -1)

    @torch.no_grad()
    def predict_eps(self, z_t: torch.Tensor, t: torch.Tensor, embeddings: TextEmbeddings | torch.Tensor) -> torch.Tensor:
        """One UNet call: ``z_t [N, C, h, w]``, ``t [N]`` long, ``embeddings`` (N rows) -> epsilon ``[N, C, h, w]``.

        SDXL also gets ``added_cond_kwargs``: the rows' pooled ``text_embeds`` and ``time_ids``.
        v-prediction models are converted: ``eps = sqrt(a_t) v + sqrt(1 - a_t) z_t``.
        """
        hidden = embeddings.hidden if isinstance(embeddings, TextEmbeddings) else embeddings
        extra = {}
        if self.family.size_conditioning:
            if not isinstance(embeddings, TextEmbeddings) or embeddings.pooled is None:
                raise ModelError(f"model {self.model_id!r} (SDXL) needs pooled text embeddings: use prior.embed")
            extra["added_cond_kwargs"] = {"text_embeds": embeddings.pooled.to(self.dtype), "time_ids": self.time_ids(z_t)}
        out = self.unet(z_t.to(self.dtype), t, encoder_hidden_states=hidden.to(self.dtype), **extra).sample
        if self.prediction_type == "v_prediction":
            a = self.alphas_cumprod[t].view(-1, 1, 1, 1).to(out.dtype)
            out = a.sqrt() * out + (1.0 - a).sqrt() * z_t.to(out.dtype)
        elif self.prediction_type != "epsilon":
            raise ModelError(f"model {self.model_id!r} predicts {self.prediction_type!r}; only epsilon and v are supported")
        return out


# ---------------------------------------------------------------------------------------------
# Loading


_CACHE: dict[tuple, Prior] = {}
_CACHE_LOCK = threading.Lock()
_LOADS = {"count": 0}  # models this process has loaded into the cache (what warm workers save)


def default_dtype(device: torch.device) -> torch.dtype:
    """float16 on CUDA (bfloat16 where float16 is unsupported is the caller's choice), float32 elsewhere."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def assemble(model_id: str, parts: Components, device, dtype: torch.dtype) -> Prior:
    """Put ``parts`` on ``device`` in eval mode, frozen, and wrap them as a ``Prior``."""
    from diffusers import DDPMScheduler

    device = torch.device(device)
    sched = DDPMScheduler.from_config(parts.scheduler.config)
    vae = parts.vae
    vae_dtype = dtype
    if vae is not None and dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        vae_dtype = torch.bfloat16 if bf16 else torch.float32
    for module in [parts.unet, vae] + list(parts.text_encoders):
        if module is not None:
            module.to(device=device).eval().requires_grad_(False)
    if vae is not None and vae_dtype != dtype:
        vae.to(dtype=vae_dtype)
    sdxl = parts.family.name == "sdxl"
    text = [TextEncoder(tok, enc, layer="penultimate" if sdxl else "last", pooled=sdxl and i == 1)
            for i, (tok, enc) in enumerate(zip(parts.tokenizers, parts.text_encoders))]
    latent_scale = float(getattr(vae.config, "scaling_factor", 1.0)) if vae is not None else 1.0
    sample = parts.unet.config.sample_size
    sample = sample[0] if isinstance(sample, (list, tuple)) else int(sample)
    factor = 1
    if vae is not None:
        factor = 2 ** (len(vae.config.block_out_channels) - 1) if hasattr(vae.config, "block_out_channels") else 8
    return Prior(
        model_id=model_id, family=parts.family, unet=parts.unet, vae=vae, text=text,
        alphas_cumprod=sched.alphas_cumprod.to(device=device, dtype=torch.float32),
        prediction_type=sched.config.prediction_type, latent_scale=latent_scale, image_size=sample * factor,
        device=device, dtype=dtype, vae_dtype=vae_dtype, zero_empty_prompt=parts.zero_empty_prompt,
    )


def load_prior(model: str = "builtin", device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
               progress: LoadProgress | None = None, config: str | None = None) -> Prior:
    """Load (or fetch from the cache) a prior.

    Args:
        model: ``"builtin"``, a diffusers folder, a single-file checkpoint, or a hub id.
        device: where the networks run.
        dtype: network dtype; default float16 on CUDA, float32 elsewhere.
        progress: called as ``progress(component, index, total)`` while loading.
        config: for single-file checkpoints, a diffusers folder (or hub id) with the matching configs
            and tokenizers; needed only for checkpoints whose shapes are not a standard family's.

    Raises:
        UnsupportedModel: a Flux / SD3 / Kandinsky / inpainting / other model (one line says which).
        ModelError: the model cannot be found or loaded; the message says where it looked.
    """
    device = torch.device(device)
    dtype = dtype or default_dtype(device)
    key = (model, str(device), str(dtype), config)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        _CACHE.clear()  # one model at a time: a different model replaces the old one
        if device.type == "cuda":
            torch.cuda.empty_cache()
        try:
            prior = assemble(model, load_components(model, dtype, progress, config), device, dtype)
        except (ModelError, ConfigError):
            raise
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelError(f"could not load model {model!r}: {exc}") from exc
        _CACHE[key] = prior
        _LOADS["count"] += 1
        return prior


def loaded_models() -> list[str]:
    """Model ids currently held in the cache."""
    with _CACHE_LOCK:
        return [key[0] for key in _CACHE]


def load_count() -> int:
    """How many times this process has loaded a model into the cache (cache hits not counted): a warm
    worker (a server's worker process, a Ray actor) loads a model once for all the jobs that use it."""
    with _CACHE_LOCK:
        return _LOADS["count"]


def unload_all() -> bool:
    """Drop every cached prior and free GPU memory; True if something was unloaded."""
    with _CACHE_LOCK:
        had = bool(_CACHE)
        _CACHE.clear()
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return had


__all__ = ["Prior", "load_prior", "assemble", "loaded_models", "load_count", "unload_all", "default_dtype"]
