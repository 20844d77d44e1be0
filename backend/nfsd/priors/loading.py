"""Reading a model's networks from disk: a diffusers folder, a single-file checkpoint, or the hub cache.

``load_components`` returns the networks on the CPU as ``Components``; ``nfsd.priors.prior.assemble`` puts
them on the device as a ``Prior``. Which family a model is, and the configs a single file lacks,
come from ``nfsd.priors.families``.
"""

from __future__ import annotations

import contextlib

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..errors import ConfigError, ModelError
from .families import TOKENIZER_PADS, Family, checkpoint_family, checkpoint_shapes, clip_tokenizer, config_folder, folder_family

BUILTIN_DIR = Path(__file__).parents[1] / "builtin" / "weights" / "prior"

LoadProgress = Callable[[str, int, int], None]  # (component name, index, total)


@dataclass
class Components:
    """The networks of a model as read from disk, before they go to the device (``assemble``).

    ``tokenizers[i]`` belongs to ``text_encoders[i]``; SDXL has two of each. A step that changes
    networks before they are used (e.g. adapters) works here or on the assembled ``Prior``.
    """

    family: Family
    unet: torch.nn.Module
    vae: torch.nn.Module | None
    tokenizers: list
    text_encoders: list
    scheduler: object
    zero_empty_prompt: bool = False


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
                "or train them with `python -m nfsd.builtin.training.train_prior`"
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


def _load_folder(path: Path, dtype, progress: LoadProgress | None) -> Components:
    import json

    from diffusers import AutoencoderKL, AutoencoderTiny, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection

    family = folder_family(path)
    missing = [sub for sub in ("unet", "scheduler", "text_encoder", "tokenizer") if not (path / sub).is_dir()]
    if family.name == "sdxl":
        missing += [sub for sub in ("text_encoder_2", "tokenizer_2") if not (path / sub).is_dir()]
    if missing:
        raise ModelError(
            f"{path} is not a diffusers Stable Diffusion folder: missing {', '.join(missing)}/ "
            "(expected unet/, vae/, text_encoder/, tokenizer/, scheduler/; SDXL also text_encoder_2/, tokenizer_2/)"
        )
    encoders = [("tokenizer", "text_encoder", CLIPTextModel)]
    if family.name == "sdxl":
        encoders.append(("tokenizer_2", "text_encoder_2", CLIPTextModelWithProjection))
    steps = [name for pair in encoders for name in pair[:2]] + ["unet", "vae", "scheduler"]

    def report(name):
        if progress:
            progress(name, steps.index(name), len(steps))

    tokenizers, text_encoders = [], []
    for tok_name, enc_name, enc_cls in encoders:
        report(tok_name)
        tokenizers.append(AutoTokenizer.from_pretrained(path / tok_name))
        report(enc_name)
        text_encoders.append(enc_cls.from_pretrained(path / enc_name, torch_dtype=dtype))
    report("unet")
    unet = UNet2DConditionModel.from_pretrained(path / "unet", torch_dtype=dtype)
    report("vae")
    vae = None
    if (path / "vae" / "config.json").is_file():
        vae_cls_name = json.loads((path / "vae" / "config.json").read_text()).get("_class_name", "")
        vae_cls = AutoencoderTiny if vae_cls_name == "AutoencoderTiny" else AutoencoderKL
        vae = vae_cls.from_pretrained(path / "vae", torch_dtype=dtype)
    report("scheduler")
    scheduler = DDPMScheduler.from_pretrained(path / "scheduler")
    index = json.loads((path / "model_index.json").read_text()) if (path / "model_index.json").is_file() else {}
    zero_empty = family.name == "sdxl" and bool(index.get("force_zeros_for_empty_prompt", True))
    return Components(family, unet, vae, tokenizers, text_encoders, scheduler, zero_empty)


def _load_single_file(path: Path, dtype, config: str | None, progress) -> Components:
    import diffusers

    if progress:
        progress("checkpoint", 0, 1)
    try:
        shapes = checkpoint_shapes(path)
    except Exception as exc:  # a truncated or foreign file: say so instead of a parser traceback
        raise ModelError(f"could not read the single-file checkpoint {path}: {exc}") from exc
    family = checkpoint_family(shapes, path)
    pipeline_cls = getattr(diffusers, family.pipeline)
    kwargs = {"torch_dtype": dtype, "local_files_only": True}
    with tempfile.TemporaryDirectory(prefix="nfsd-config-") as tmp:
        if config:
            kwargs["config"] = config
        else:  # the family's real configs and CLIP's shipped vocabulary: no hub needed
            prediction = "v_prediction" if "v_pred" in shapes else None
            kwargs["config"] = str(config_folder(family, Path(tmp), prediction))
            pads = TOKENIZER_PADS[family.name]
            kwargs.update({"tokenizer" + ("" if i == 0 else f"_{i + 1}"): clip_tokenizer(pad) for i, pad in enumerate(pads)})
        if family.name != "sdxl":
            kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        try:
            pipe = pipeline_cls.from_single_file(str(path), **kwargs)
        except Exception as exc:  # diffusers raises many kinds here; the reason is in the text
            reason = str(exc).strip().rstrip(".")
            if config:
                hint = f"check that {config} is the diffusers version of this checkpoint's architecture"
            else:
                hint = (f"its shapes are not those of a standard {family.name} model: pass the matching diffusers "
                        "folder (--model-config DIR) for its configs and tokenizer")
            raise ModelError(f"could not load the single-file checkpoint {path} ({family.name}): {reason}; {hint}") from exc
    tokenizers = [pipe.tokenizer] + ([pipe.tokenizer_2] if getattr(pipe, "tokenizer_2", None) is not None else [])
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if getattr(pipe, "text_encoder_2", None) is not None else [])
    zero_empty = family.name == "sdxl" and bool(getattr(pipe.config, "force_zeros_for_empty_prompt", True))
    return Components(family, pipe.unet, pipe.vae, tokenizers, encoders, pipe.scheduler, zero_empty)


def _hub_folder(model: str, progress) -> Path:
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
    return Path(folder)


def load_components(model: str, dtype: torch.dtype, progress: LoadProgress | None = None,
                    config: str | None = None) -> Components:
    """Read a model's networks (CPU, ``dtype``) from a folder, single file or the hub cache."""
    kind, path = resolve_model(model)
    if kind == "hub":
        path = _hub_folder(model, progress)  # a download (rare) keeps its own progress bars
    with _library_bars_off():
        if kind == "file":
            return _load_single_file(path, dtype, config, progress)
        return _load_folder(path, dtype, progress)


@contextlib.contextmanager
def _library_bars_off():
    """transformers' and diffusers' own bars ("Loading weights", "Loading pipeline components") off while
    we load: our callers show one bar of their own (``progress``). Restored afterwards."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    was = transformers_logging.is_progress_bar_enabled(), diffusers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was[0]:
            transformers_logging.enable_progress_bar()
        if was[1]:
            diffusers_logging.enable_progress_bar()
