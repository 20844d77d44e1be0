"""The model list: what a server (or ``nfsd models``) offers, read cheaply, and the allowlist built on it.

Offered are: ``builtin``; the server's ``--model``; in ``--models-dir DIR`` the diffusers folders and
single-file checkpoints at its top level; the LoRA files under ``DIR/loras`` (or A1111's ``DIR/Lora``);
Stable Diffusion hub ids already in the local Hugging Face cache. Each entry says its family (``sd1``,
``sd2``, ``sdxl``, ``builtin``; ``flux``, ``sd3``, ``kandinsky``, ``inpainting``, ``sdxl-refiner`` are listed
as unsupported), prediction type, text window (tokens) and default render size, read from config files
and safetensors headers only (no weights are loaded, no pickle is opened).

The allowlist: a job's ``model`` must be one of these entries (by name or by its path), and its LoRAs
must lie in the LoRA folder; anything else gets the same one-line refusal whether or not the path
exists, so ``model`` cannot be used to probe the server's file system.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, ModelError

LORA_SUBDIRS = ("loras", "Lora")
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
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
                      supported, note)


def _safetensors_keys(path: Path) -> tuple[list[str], dict, object]:
    from safetensors import safe_open

    handle = safe_open(str(path), framework="pt")
    return list(handle.keys()), handle.metadata() or {}, handle


def describe_checkpoint(path: Path, name: str) -> ModelEntry:
    """A single-file checkpoint's entry, from its safetensors header (a ``.ckpt`` is a pickle: not opened)."""
    if path.suffix.lower() != ".safetensors":
        return ModelEntry(name, "file", str(path), None, None, 77, None, True,
                          "a pickled .ckpt: family read when it loads")
    try:
        keys, _meta, handle = _safetensors_keys(path)
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
    if family in ("sd1", "sd2", "sdxl") and first_conv in keys and handle.get_slice(first_conv).get_shape()[1] == 9:
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
        keys, meta, handle = _safetensors_keys(path)
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
                    family = {768: "sd1", 1024: "sd2", 2048: "sdxl"}.get(handle.get_slice(key).get_shape()[1])
                    break
    fmt = "kohya" if any(k.startswith("lora_") for k in keys) else "diffusers"
    is_lora = any("lora" in k for k in keys)
    return ModelEntry(name, "lora", str(path), family, None, None, None, is_lora,
                      f"{fmt} format" if is_lora else "no LoRA keys")


def _hub_cache() -> Path:
    from huggingface_hub.constants import HF_HUB_CACHE

    return Path(HF_HUB_CACHE)


def cached_hub_models() -> list[ModelEntry]:
    """Stable Diffusion diffusers repos already in the local Hugging Face cache (no network)."""
    out = []
    root = _hub_cache()
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


@dataclass
class Catalog:
    """What one server offers. ``entries()`` lists it; ``check_model`` / ``check_loras`` enforce it."""

    default_model: str = "builtin"
    models_dir: Path | None = None
    include_hub_cache: bool = True

    def check(self) -> None:
        """Raise ``ConfigError`` when ``models_dir`` is given but is no folder."""
        if self.models_dir is not None and not Path(self.models_dir).is_dir():
            raise ConfigError(f"--models-dir {self.models_dir} is not a folder: pass the folder that holds your "
                              "models (diffusers folders, .safetensors files, loras/)")

    def lora_dir(self) -> Path | None:
        if self.models_dir is None:
            return None
        for sub in LORA_SUBDIRS:
            if (Path(self.models_dir) / sub).is_dir():
                return Path(self.models_dir) / sub
        return None

    def models(self) -> list[ModelEntry]:
        from .prior import BUILTIN_DIR

        entries = [describe_folder(BUILTIN_DIR, "builtin", kind="builtin")
                   or ModelEntry("builtin", "builtin", str(BUILTIN_DIR), "builtin", supported=False,
                                 note="the built-in weights are missing: reinstall the package")]
        if self.default_model != "builtin":
            entries.append(self._describe_reference(self.default_model))
        if self.models_dir is not None and Path(self.models_dir).is_dir():
            for item in sorted(Path(self.models_dir).iterdir()):
                if item.name in LORA_SUBDIRS or item.name.startswith("."):
                    continue
                if item.is_dir():
                    entry = describe_folder(item.resolve(), item.name)
                    if entry is not None:
                        entries.append(entry)
                elif item.suffix.lower() in CHECKPOINT_SUFFIXES:
                    entries.append(describe_checkpoint(item.resolve(), item.name))
        if self.include_hub_cache:
            entries.extend(cached_hub_models())
        seen, unique = set(), []
        for entry in entries:  # the --model may also be in --models-dir or the cache: list it once
            key = entry.path or entry.name
            if key not in seen:
                seen.add(key)
                unique.append(entry)
        return unique

    def loras(self) -> list[ModelEntry]:
        root = self.lora_dir()
        if root is None:
            return []
        return [describe_lora(f.resolve(), f.relative_to(root).with_suffix("").as_posix())
                for f in sorted(root.rglob("*.safetensors"))]

    def entries(self) -> list[ModelEntry]:
        return self.models() + self.loras()

    def _describe_reference(self, model: str) -> ModelEntry:
        path = Path(model).expanduser()
        if path.is_dir():
            return describe_folder(path.resolve(), model) or ModelEntry(model, "folder", str(path.resolve()), None)
        if path.is_file():
            return describe_checkpoint(path.resolve(), model)
        for entry in cached_hub_models():
            if entry.name == model:
                return dataclasses.replace(entry, name=model)
        return ModelEntry(model, "hub", None, None, note="the server's --model (not in the local cache)")

    # -----------------------------------------------------------------------------------------
    # The allowlist

    def check_model(self, model: str | None) -> str:
        """The reference to load for a job's ``model`` (``None``: the server's default), if offered.

        Accepted: an entry's ``name`` or the path of an offered folder/file (any spelling that resolves
        to it). Returns the string ``load_prior`` takes (a path for local entries).

        Raises:
            ModelError: not offered; one message whatever the reason (missing or existing path).
            ModelError: offered but of an unsupported family: what it is and what is supported.
        """
        model = model or self.default_model
        if model == self.default_model:
            return model
        entries = self.models()
        match = next((e for e in entries if e.name == model), None)
        if match is None and _looks_like_path(model):
            real = os.path.realpath(os.path.expanduser(model))
            match = next((e for e in entries if e.path and os.path.realpath(e.path) == real), None)
        if match is None:
            shown = model if len(model) <= 80 else model[:77] + "..."
            raise ModelError(f"model {shown!r} is not offered by this server: use 'builtin', the server's --model, "
                             "or a name from GET /models (models in the server's --models-dir, hub ids in its cache)")
        if not match.supported:
            raise ModelError(f"model {match.name!r} cannot be used: {match.note}")
        return match.path if match.kind in ("folder", "file") else match.name

    def family_of(self, model: str) -> str | None:
        """The family of an offered model (a ``check_model`` result); None when unknown."""
        for entry in self.models():
            if model in (entry.name, entry.path):
                return entry.family
        return None

    def check_loras(self, loras, model: str | None = None) -> list[dict]:
        """A job's ``loras`` with every entry resolved to a file in the LoRA folder (names or paths).

        Raises ``ModelError`` (one message for missing and existing paths) for anything else, and for
        a LoRA trained for another family than ``model``'s (when both families are known).
        """
        from .lora import normalize_loras

        entries = normalize_loras(loras)
        if not entries:
            return []
        offered = {e.name: e for e in self.loras()}
        by_path = {os.path.realpath(e.path): e for e in offered.values()}
        out, matches = [], []
        for entry in entries:
            ref = entry.get("name") or entry.get("path")
            match = offered.get(ref)
            if match is None and _looks_like_path(ref):
                match = by_path.get(os.path.realpath(os.path.expanduser(ref)))
            if match is None:
                shown = ref if len(ref) <= 80 else ref[:77] + "..."
                where = "the server has no --models-dir" if self.lora_dir() is None else "see GET /models (kind lora)"
                raise ModelError(f"LoRA {shown!r} is not offered by this server: {where}")
            out.append({"path": match.path, "weight": entry["weight"]})
            matches.append(match)
        family = self.family_of(model) if model else None
        for entry in matches:
            if family in DEFAULT_RENDER and entry.family in DEFAULT_RENDER and entry.family != family:
                raise ModelError(f"LoRA {entry.name!r} was trained for {entry.family} but model {model!r} is "
                                 f"{family}: choose a LoRA of the model's family")
        return out


def _looks_like_path(ref: str) -> bool:
    return os.sep in ref or "/" in ref or ref.startswith(("~", ".")) or ref.lower().endswith(CHECKPOINT_SUFFIXES)


def format_table(entries: list[ModelEntry]) -> str:
    """The ``nfsd models`` table: one line per entry."""
    rows = [("NAME", "KIND", "FAMILY", "PREDICTION", "TEXT", "RENDER", "NOTE")]
    for e in entries:
        note = e.note if e.supported else f"UNSUPPORTED: {e.note}"
        rows.append((e.name, e.kind, e.family or "?", e.prediction_type or "-", str(e.text_window or "-"),
                     str(e.render_size or "-"), note))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:6], widths)) + ("  " + r[6] if r[6] else "")
                     for r in rows)


__all__ = ["Catalog", "ModelEntry", "describe_folder", "describe_checkpoint", "describe_lora", "format_table"]
