"""The model list: what a server (or ``nfsd models``) offers, read cheaply, and the allowlist built on it.

Offered are: ``builtin``; the server's ``--model``; in ``--models-dir DIR`` the diffusers folders and
single-file checkpoints at its top level; the LoRA files under ``DIR/loras`` (or A1111's ``DIR/Lora``);
Stable Diffusion hub ids already in the local Hugging Face cache. Each entry says its family (``sd1``,
``sd2``, ``sdxl``, ``builtin``; ``flux``, ``sd3``, ``kandinsky``, ``inpainting``, ``sdxl-refiner`` are listed
as unsupported), prediction type, text window (tokens) and default render size, read from config files
and safetensors headers only (no weights are loaded, no pickle is opened).

What one folder or file is (``ModelEntry``) is read by ``nfsd.priors.model_files``. The allowlist: a job's ``model`` must be one of these entries (by name or by its path), and its LoRAs
must lie in the LoRA folder; anything else gets the same one-line refusal whether or not the path
exists, so ``model`` cannot be used to probe the server's file system.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, ModelError
from .model_files import DEFAULT_RENDER, ModelEntry, cached_hub_models, describe_checkpoint, describe_folder, describe_lora

LORA_SUBDIRS = ("loras", "Lora")
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")


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
        from .loading import BUILTIN_DIR

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
