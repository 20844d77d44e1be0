"""Diffusion priors: a Stable Diffusion model (diffusers) seen through the few operations distillation needs.

A prior is loaded from
- ``"builtin"``: the small text-to-texture model that ships with the package (a latent model with its
  own tiny VAE, loaded through the same folder path as below);
- a local diffusers folder (``unet/``, ``scheduler/``, ``text_encoder/``, ``tokenizer/``, optional ``vae/``;
  no ``vae/`` means the UNet works in pixel space);
- a single-file checkpoint (``.safetensors`` / ``.ckpt``, what A1111 and ComfyUI keep);
- a Hugging Face hub id (the local cache first; a download only when the hub is reachable and
  ``HF_HUB_OFFLINE`` is not set).

Loaded priors are kept in the one module-level cache (keyed by model, device, dtype); loading a
different model replaces the old one so a GPU holds one model at a time.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .errors import ConfigError, ModelError

BUILTIN_DIR = Path(__file__).parent / "builtin" / "weights" / "prior"

LoadProgress = Callable[[str, int, int], None]  # (component name, index, total)


@dataclass
class Prior:
    """A text-conditional diffusion model with the operations distillation needs.

    Attributes:
        unet: ``UNet2DConditionModel`` predicting epsilon or v.
        vae: ``AutoencoderKL`` (or ``AutoencoderTiny``) or None for a pixel-space model.
        text_encoder, tokenizer: prompt -> embeddings ``[N, L, D]``.
        alphas_cumprod: ``[T]`` float32 on ``device``: the training schedule's cumulative alphas.
        prediction_type: ``"epsilon"`` or ``"v_prediction"`` (v is converted to epsilon).
        latent_scale: the VAE's ``scaling_factor`` (1.0 in pixel space).
        image_size: the resolution the model sees; renders are resized to it before encoding.
        dtype: the dtype of the networks (float16/bfloat16 on CUDA, float32 on CPU).
    """

    model_id: str
    unet: torch.nn.Module
    vae: torch.nn.Module | None
    text_encoder: torch.nn.Module
    tokenizer: object
    alphas_cumprod: torch.Tensor
    prediction_type: str
    latent_scale: float
    image_size: int
    device: torch.device
    dtype: torch.dtype
    tuned: set = dataclasses.field(default_factory=set)  # speed options already applied

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
        """Token limit of the text encoder, <bos>/<eos> included (77 for CLIP)."""
        return int(self.tokenizer.model_max_length)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, truncation=False).input_ids)

    def check_prompt(self, text: str, what: str = "prompt", reserve: int = 0) -> None:
        """Raise ``ConfigError`` if ``text`` (plus ``reserve`` tokens for a view suffix) is too long."""
        _refuse_too_long(self.tokenizer, self.model_id, text, what, reserve)

    @torch.no_grad()
    def embed(self, prompts: list[str]) -> torch.Tensor:
        """Text embeddings ``[N, L, D]`` in ``dtype`` (no gradient), padded to ``max_prompt_tokens``."""
        tokens = self.tokenizer(
            list(prompts), padding="max_length", max_length=self.max_prompt_tokens, truncation=True,
            return_tensors="pt",
        )
        out = self.text_encoder(tokens.input_ids.to(self.device))
        hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
        return hidden.to(self.dtype)

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in [0, 1] (row 0 top) -> latents ``[B, C, h, w]`` in ``dtype``.

        Differentiable: gradients flow through the encoder back to the images. Images are resized
        to ``image_size`` (antialiased bilinear) when their size differs.
        """
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = F.interpolate(images, (self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        x = images.to(self.dtype) * 2.0 - 1.0
        if self.vae is None:
            return x * self.latent_scale
        enc = self.vae.encode(x)
        if hasattr(enc, "latent_dist"):
            z = enc.latent_dist.sample(generator)
        else:  # AutoencoderTiny returns latents directly
            z = enc.latents
        return z * self.latent_scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images ``[B, 3, H, W]`` float32 in [0, 1] (for sampling and previews)."""
        z = latents.to(self.dtype) / self.latent_scale
        x = z if self.vae is None else self.vae.decode(z).sample
        return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0)

    def add_noise(self, z: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``z_t = sqrt(a_t) z + sqrt(1 - a_t) eps`` with per-sample ``t`` ``[B]`` (long)."""
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1).to(z.dtype)
        return a.sqrt() * z + (1.0 - a).sqrt() * noise

    @torch.no_grad()
    def predict_eps(self, z_t: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """One UNet call: ``z_t [N, C, h, w]``, ``t [N]`` long, ``embeddings [N, L, D]`` -> epsilon ``[N, C, h, w]``.

        v-prediction models are converted: ``eps = sqrt(a_t) v + sqrt(1 - a_t) z_t``.
        """
        out = self.unet(z_t.to(self.dtype), t, encoder_hidden_states=embeddings.to(self.dtype)).sample
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


def default_dtype(device: torch.device) -> torch.dtype:
    """float16 on CUDA (bfloat16 where float16 is unsupported is the caller's choice), float32 elsewhere."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def resolve_model(model: str) -> tuple[str, Path | None]:
    """Classify a model reference: ``("folder" | "file" | "hub", path-or-None)``.

    Raises ``ModelError`` for a path that looks local but does not exist.
    """
    if model in ("", None):
        raise ConfigError("model is empty: pass 'builtin', a local diffusers folder, a .safetensors file or a hub id")
    if model == "builtin":
        if not (BUILTIN_DIR / "unet").is_dir():
            raise ModelError(
                f"the built-in model's weights are missing from {BUILTIN_DIR}; reinstall the package "
                "or train them with `python -m nfsd.builtin.train_prior`"
            )
        return "folder", BUILTIN_DIR
    path = Path(model).expanduser()
    if path.is_dir():
        return "folder", path
    if path.is_file():
        if path.suffix.lower() not in (".safetensors", ".ckpt", ".pt", ".bin"):
            raise ModelError(f"{path} is a file but not a checkpoint (.safetensors or .ckpt)")
        return "file", path
    # A hub id is "name" or "owner/name"; anything else that names no existing path is a missing file.
    looks_local = model.startswith((".", "/", "~", "\\")) or model.count("/") > 1 or ":" in model
    if looks_local or model.lower().endswith((".safetensors", ".ckpt")):
        raise ModelError(f"model {model!r} not found: no folder or file at {path.resolve()}")
    return "hub", None


def _load_folder(path: Path, model_id: str, device, dtype, progress: LoadProgress | None) -> Prior:
    from diffusers import AutoencoderKL, AutoencoderTiny, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    missing = [sub for sub in ("unet", "scheduler", "text_encoder", "tokenizer") if not (path / sub).is_dir()]
    if missing:
        raise ModelError(
            f"{path} is not a diffusers Stable Diffusion folder: missing {', '.join(missing)}/ "
            "(expected unet/, vae/, text_encoder/, tokenizer/, scheduler/)"
        )
    steps = ["tokenizer", "text_encoder", "unet", "vae", "scheduler"]

    def report(i):
        if progress:
            progress(steps[i], i, len(steps))

    report(0)
    tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer")
    report(1)
    text_encoder = CLIPTextModel.from_pretrained(path / "text_encoder", torch_dtype=dtype)
    report(2)
    unet = UNet2DConditionModel.from_pretrained(path / "unet", torch_dtype=dtype)
    report(3)
    vae = None
    if (path / "vae" / "config.json").is_file():
        vae_cls_name = _config_class(path / "vae")
        vae_cls = AutoencoderTiny if vae_cls_name == "AutoencoderTiny" else AutoencoderKL
        vae = vae_cls.from_pretrained(path / "vae", torch_dtype=dtype)
    report(4)
    scheduler = DDPMScheduler.from_pretrained(path / "scheduler")
    return _assemble(model_id, unet, vae, text_encoder, tokenizer, scheduler, device, dtype)


def _config_class(folder: Path) -> str:
    import json

    return json.loads((folder / "config.json").read_text()).get("_class_name", "")


def _assemble(model_id, unet, vae, text_encoder, tokenizer, scheduler, device, dtype) -> Prior:
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(scheduler.config)
    for module in (unet, vae, text_encoder):
        if module is not None:
            module.to(device=device).eval().requires_grad_(False)
    latent_scale = float(getattr(vae.config, "scaling_factor", 1.0)) if vae is not None else 1.0
    sample = unet.config.sample_size
    sample = sample[0] if isinstance(sample, (list, tuple)) else int(sample)
    if vae is not None:
        factor = 2 ** (len(vae.config.block_out_channels) - 1) if hasattr(vae.config, "block_out_channels") else 8
        image_size = sample * factor
    else:
        image_size = sample
    return Prior(
        model_id=model_id, unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        alphas_cumprod=sched.alphas_cumprod.to(device=device, dtype=torch.float32),
        prediction_type=sched.config.prediction_type, latent_scale=latent_scale, image_size=image_size,
        device=torch.device(device), dtype=dtype,
    )


def _load_single_file(path: Path, model_id: str, device, dtype, config: str | None, progress) -> Prior:
    from diffusers import StableDiffusionPipeline

    if progress:
        progress("checkpoint", 0, 1)
    _check_safetensors(path)
    kwargs = {"torch_dtype": dtype}
    if config:
        kwargs["config"] = config
    try:
        pipe = StableDiffusionPipeline.from_single_file(str(path), **kwargs)
    except Exception as exc:  # diffusers raises many kinds here; the reason is in the text
        reason = str(exc).strip().rstrip(".")
        if config:
            hint = f"check that {config} is the diffusers version of this checkpoint's architecture"
        else:
            hint = ("without internet access, also pass the matching diffusers config folder "
                    "(--model-config DIR) so no config is fetched")
        raise ModelError(f"could not load the single-file checkpoint {path}: {reason}; {hint}") from exc
    return _assemble(model_id, pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler, device, dtype)


def _check_safetensors(path: Path) -> None:
    """A damaged .safetensors file is said to be damaged (diffusers would blame a missing config)."""
    if path.suffix.lower() != ".safetensors":
        return
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"the checkpoint {path} is damaged or not a .safetensors file ({reason}); "
                         "download it again") from exc


def _load_hub(model: str, device, dtype, progress) -> Prior:
    try:
        from huggingface_hub import snapshot_download

        try:
            folder = snapshot_download(model, local_files_only=True)
        except Exception:
            if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
                raise
            if progress:
                progress("download", 0, 1)
            folder = snapshot_download(model, allow_patterns=["*.json", "*.txt", "*.safetensors", "*.model"])
    except Exception as exc:
        from huggingface_hub.constants import HF_HUB_CACHE

        raise ModelError(
            f"model {model!r} not found: it is not a local folder or file (looked at {Path(model).resolve()}), "
            f"not in the Hugging Face cache ({HF_HUB_CACHE}), and could not be downloaded ({type(exc).__name__}). "
            "Pass a local diffusers folder, a single-file .safetensors checkpoint, or 'builtin'"
        ) from exc
    return _load_folder(Path(folder), model, device, dtype, progress)


def load_prior(model: str = "builtin", device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
               progress: LoadProgress | None = None, config: str | None = None) -> Prior:
    """Load (or fetch from the cache) a prior.

    Args:
        model: ``"builtin"``, a diffusers folder, a single-file checkpoint, or a hub id.
        device: where the networks run.
        dtype: network dtype; default float16 on CUDA, float32 elsewhere.
        progress: called as ``progress(component, index, total)`` while loading.
        config: for single-file checkpoints, a diffusers folder or hub id with the matching configs.

    Raises:
        ModelError: the model cannot be found or loaded; the message says where it looked.
    """
    device = torch.device(device)
    dtype = dtype or default_dtype(device)
    key = (model, str(device), str(dtype))
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        _CACHE.clear()  # one model at a time: a different model replaces the old one
        if device.type == "cuda":
            torch.cuda.empty_cache()
        kind, path = resolve_model(model)
        try:
            if kind == "folder":
                prior = _load_folder(path, model, device, dtype, progress)
            elif kind == "file":
                prior = _load_single_file(path, model, device, dtype, config, progress)
            else:
                prior = _load_hub(model, device, dtype, progress)
        except (ModelError, ConfigError):
            raise
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelError(f"could not load model {model!r}: {exc}") from exc
        _CACHE[key] = prior
        return prior


def loaded_models() -> list[str]:
    """Model ids currently held in the cache."""
    with _CACHE_LOCK:
        return [key[0] for key in _CACHE]


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


_TOKENIZERS: dict[str, object] = {}


def load_tokenizer(model: str):
    """Only the tokenizer of ``model`` (cheap: lets a server refuse a too-long prompt at submission)."""
    if model not in _TOKENIZERS:
        with _CACHE_LOCK:
            for key, prior in _CACHE.items():
                if key[0] == model:
                    return prior.tokenizer
        kind, path = resolve_model(model)
        if kind != "folder":
            return None  # single files and hub ids: checked when the job loads the model
        from transformers import AutoTokenizer

        try:
            _TOKENIZERS[model] = AutoTokenizer.from_pretrained(path / "tokenizer")
        except (OSError, ValueError) as exc:
            raise ModelError(f"could not read the tokenizer of {model!r} at {path / 'tokenizer'}: {exc}") from exc
    return _TOKENIZERS[model]


# The longest view suffix the engine appends to a prompt (", overhead view").
VIEW_SUFFIX_TOKENS = 3


def check_prompt_length(model: str, prompt: str, what: str = "prompt") -> None:
    """Raise ``ConfigError`` when ``prompt`` plus a view suffix exceeds ``model``'s token limit."""
    tokenizer = load_tokenizer(model)
    if tokenizer is not None:
        _refuse_too_long(tokenizer, model, prompt, what, VIEW_SUFFIX_TOKENS if what == "prompt" else 0)


def _refuse_too_long(tokenizer, model: str, text: str, what: str, reserve: int) -> None:
    n = len(tokenizer(text, truncation=False).input_ids) + reserve
    if n > tokenizer.model_max_length:
        raise ConfigError(
            f"{what} is too long: {n} tokens (view words included) but model {model!r} reads at most "
            f"{tokenizer.model_max_length}; shorten it"
        )
