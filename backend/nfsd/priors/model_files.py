"""What one model folder or file is, read cheaply: its family, prediction type, text window, render size.

``describe_folder`` (a diffusers folder), ``describe_checkpoint`` (a single-file checkpoint) and
``describe_lora`` read config files and safetensors headers only: no weights are loaded, no pickle is
opened. ``cached_hub_models`` lists the Stable Diffusion repos already in the local Hugging Face cache.
``nfsd.priors.catalog`` builds the server's model list and allowlist on these.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

DEFAULT_RENDER = {"sd1": 512, "sd2": 512, "sdxl": 1024}
UNSUPPORTED_HINT = "supported: SD 1.x, SD 2.x and SDXL (and their fine-tunes)"


@dataclass
class ModelEntry:
    """One model (or LoRA) on offer. ``name`` is what a job passes as ``model`` (or a LoRA's ``name``)."""

    name: str
    kind: str                           # builtin | folder | file | hub | lora
    path: str | None                    # absolute path (None for hub ids: the cache decides)
    family: str | None                  # sd1 | sd2 | sdxl | builtin | unsupported ones; None: unknown
    prediction_type: str | None = None  # epsilon | v_prediction; None: not known without loading
    text_window: int | None = None      # tokens the text encoder reads at once (longer prompts: windows)
    render_size: int | None = None      # default render size of the family
    supported: bool = True
    note: str = ""
    tiny_encoder: bool = False          # the folder has vae_tiny/ (what settings' encoder "tiny" needs)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


MAX_JSON_BYTES = 1 << 20
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit on its JSON header


def is_regular_file(path: Path) -> bool:
    """A regular file (links followed): never a FIFO, device or socket, which could block whoever opens it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def _read_json(path: Path) -> dict:
    if not is_regular_file(path):
        return {}
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(MAX_JSON_BYTES + 1)[:MAX_JSON_BYTES].decode("utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _family_from_unet_config(cfg: dict) -> str | None:
    if cfg.get("in_channels") == 9:
        return "inpainting"
    if cfg.get("addition_embed_type") == "text_time" or cfg.get("cross_attention_dim") == 2048:
        return "sdxl"
    return {768: "sd1", 1024: "sd2"}.get(cfg.get("cross_attention_dim"))


def describe_folder(path: Path, name: str, kind: str = "folder") -> ModelEntry | None:
    """A diffusers folder's entry, or None when ``path`` is no diffusers model folder."""
    index = _read_json(path / "model_index.json")
    cls = str(index.get("_class_name", ""))
    for marker, family in (("Flux", "flux"), ("StableDiffusion3", "sd3"), ("Kandinsky", "kandinsky")):
        if marker in cls:
            return ModelEntry(name, kind, str(path), family, supported=False, note=f"{cls}: {UNSUPPORTED_HINT}")
    unet = _read_json(path / "unet" / "config.json")
    if not unet:
        return None
    family = _family_from_unet_config(unet)
    if kind == "builtin":
        family = "builtin"
    sched = _read_json(path / "scheduler" / "scheduler_config.json")
    tok = _read_json(path / "tokenizer" / "tokenizer_config.json")
    window = tok.get("model_max_length")
    window = int(window) if isinstance(window, (int, float)) and window < 100_000 else 77
    render = DEFAULT_RENDER.get(family)
    if render is None:  # the built-in model: its own UNet size times the VAE's downsampling
        vae = _read_json(path / "vae" / "config.json")
        sample = unet.get("sample_size", 64)
        sample = sample[0] if isinstance(sample, list) else int(sample)
        render = sample * 2 ** (len(vae.get("block_out_channels", [0])) - 1) if vae else sample
    supported = family not in ("inpainting",)
    note = "" if family else "family not recognised: loaded as a Stable Diffusion folder"
    if not supported:
        note = f"{family}: {UNSUPPORTED_HINT}"
    return ModelEntry(name, kind, str(path), family, sched.get("prediction_type", "epsilon"), window, render,
                      supported, note, tiny_encoder=is_regular_file(path / "vae_tiny" / "config.json"))


def _safetensors_keys(path: Path) -> tuple[list[str], dict, dict[str, list[int]]]:
    """Keys, metadata and shapes from a safetensors header (8-byte length, then JSON): nothing else is
    read, no library that maps the file. Regular files only."""
    if not is_regular_file(path):
        raise ValueError("not a regular file")
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError("shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES:
            raise ValueError(f"a header of {n:,} bytes is claimed (not a safetensors file?)")
        raw = f.read(n)
    if len(raw) != n:
        raise ValueError("the header is cut short")
    header = json.loads(raw.decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("the header is no JSON object")
    meta = header.pop("__metadata__", None) or {}
    shapes = {k: list(v.get("shape", [])) for k, v in header.items() if isinstance(v, dict)}
    return list(header), meta if isinstance(meta, dict) else {}, shapes


def describe_checkpoint(path: Path, name: str, suffix: str | None = None) -> ModelEntry:
    """A single-file checkpoint's entry, from its safetensors header (a ``.ckpt`` is a pickle: not opened).

    ``suffix`` (default: ``path``'s) says the file's type: a link ``x.safetensors`` to a blob without a
    suffix (the Hugging Face cache's layout) is a safetensors file."""
    suffix = path.suffix if suffix is None else suffix
    if suffix.lower() != ".safetensors":
        return ModelEntry(name, "file", str(path), None, None, 77, None, True,
                          "a pickled .ckpt: family read when it loads")
    try:
        keys, _meta, shapes = _safetensors_keys(path)
    except Exception as exc:  # a corrupt header
        return ModelEntry(name, "file", str(path), None, supported=False, note=f"unreadable: {exc}")
    has = lambda prefix: any(k.startswith(prefix) for k in keys)  # noqa: E731
    family, prediction = None, "epsilon"
    if has("double_blocks.") or has("model.diffusion_model.double_blocks."):
        family = "flux"
    elif any(".joint_blocks." in k or k.startswith("joint_blocks.") for k in keys):
        family = "sd3"
    elif has("conditioner.embedders.1."):
        family = "sdxl"
    elif has("conditioner.embedders.0.model."):
        family = "sdxl-refiner"
    elif has("cond_stage_model.model."):
        family, prediction = "sd2", None  # 768-v or -base: only its config tells (--model-config)
    elif has("cond_stage_model.transformer."):
        family = "sd1"
    first_conv = "model.diffusion_model.input_blocks.0.0.weight"
    if family in ("sd1", "sd2", "sdxl") and first_conv in keys and shapes[first_conv][1:2] == [9]:
        family = "inpainting"
    if "v_pred" in keys:
        prediction = "v_prediction"
    supported = family in ("sd1", "sd2", "sdxl")
    note = "" if supported else f"{family or 'not a Stable Diffusion checkpoint'}: {UNSUPPORTED_HINT}"
    return ModelEntry(name, "file", str(path), family, prediction if supported else None, 77,
                      DEFAULT_RENDER.get(family), supported, note)


def describe_lora(path: Path, name: str) -> ModelEntry:
    """A LoRA file's entry: the family it was trained for, from its keys (cross-attention width) and
    kohya's ``ss_base_model_version`` metadata."""
    try:
        keys, meta, shapes = _safetensors_keys(path)
    except Exception as exc:
        return ModelEntry(name, "lora", str(path), None, supported=False, note=f"unreadable: {exc}")
    family = None
    base = str(meta.get("ss_base_model_version", ""))
    if base.startswith("sdxl"):
        family = "sdxl"
    elif base.startswith("sd_v2"):
        family = "sd2"
    elif base.startswith("sd_v1"):
        family = "sd1"
    if family is None:
        if any(k.startswith(("lora_te2_", "text_encoder_2.")) for k in keys):
            family = "sdxl"
        else:  # attn2's to_k reads the text embedding: its width names the family
            for key in keys:
                if ("attn2_to_k.lora_down" in key or "attn2.to_k.lora_A" in key or "attn2.to_k.lora.down" in key):
                    shape = shapes.get(key) or []
                    family = {768: "sd1", 1024: "sd2", 2048: "sdxl"}.get(shape[1] if len(shape) > 1 else None)
                    break
    fmt = "kohya" if any(k.startswith("lora_") for k in keys) else "diffusers"
    is_lora = any("lora" in k for k in keys)
    return ModelEntry(name, "lora", str(path), family, None, None, None, is_lora,
                      f"{fmt} format" if is_lora else "no LoRA keys")


def hub_cache_dir() -> Path:
    from huggingface_hub.constants import HF_HUB_CACHE

    return Path(HF_HUB_CACHE)


def cached_hub_models() -> list[ModelEntry]:
    """Stable Diffusion diffusers repos already in the local Hugging Face cache (no network)."""
    out = []
    root = hub_cache_dir()
    if not root.is_dir():
        return out
    for repo in sorted(root.glob("models--*")):
        ref = repo / "refs" / "main"
        try:
            snapshot = repo / "snapshots" / ref.read_text().strip()
        except OSError:
            snapshots = sorted((repo / "snapshots").glob("*"))
            if not snapshots:
                continue
            snapshot = snapshots[-1]
        entry = describe_folder(snapshot, repo.name[len("models--"):].replace("--", "/"), kind="hub")
        if entry is not None:
            entry.path = None
            out.append(entry)
    return out
