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
import json
import logging
import os
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, ModelError
from .model_files import (DEFAULT_RENDER, ModelEntry, cached_hub_models, describe_checkpoint, describe_folder,
                          describe_lora, is_regular_file)

log = logging.getLogger("nfsd.catalog")

LORA_SUBDIRS = ("loras", "Lora")
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
SCAN_TIMEOUT_S = 20.0   # a server describes its models in a child process; one that takes longer is killed
SCAN_TTL_S = 30.0       # a server's description is reused this long unless the folders' mtimes change
BUILTIN_DIR = Path(__file__).parents[1] / "builtin" / "weights" / "prior"  # = loading.BUILTIN_DIR (no torch here)


def _inside(path: str, root: str) -> bool:
    """Whether ``path`` (resolved) lies in ``root`` (resolved): symlinks out of the folder are not offered."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def _kind(path: Path) -> str | None:
    """``dir`` | ``file`` (regular) | None (FIFOs, devices, sockets, dangling links: never opened)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else None


@dataclass
class Catalog:
    """What one server offers. ``entries()`` lists it; ``check_model`` / ``check_loras`` enforce it."""

    default_model: str = "builtin"
    models_dir: Path | None = None
    include_hub_cache: bool = True
    isolated: bool = False  # describe the folders in a child process with a timeout, cached (the server)

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
        if self.isolated:
            return list(_scanned(self)[0])
        return self._scan_models()

    def _scan_models(self) -> list[ModelEntry]:
        return list(self._iter_models())

    def _iter_models(self):
        """The model entries one by one (the child streams them: a stall keeps those before it)."""
        seen = set()

        def unique(entry):  # the --model may also be in --models-dir or the cache: list it once
            key = entry.path or entry.name
            if key in seen:
                return False
            seen.add(key)
            return True

        builtin = (describe_folder(BUILTIN_DIR, "builtin", kind="builtin")
                   or ModelEntry("builtin", "builtin", str(BUILTIN_DIR), "builtin", supported=False,
                                 note="the built-in weights are missing: reinstall the package"))
        if unique(builtin):
            yield builtin
        if self.default_model != "builtin":
            entry = self._describe_reference(self.default_model)
            if unique(entry):
                yield entry
        if self.models_dir is not None and Path(self.models_dir).is_dir():
            root = Path(os.path.abspath(Path(self.models_dir).expanduser()))
            for item in sorted(root.iterdir()):
                if item.name in LORA_SUBDIRS or item.name.startswith(".") or not _inside(str(item), str(root)):
                    continue
                kind = _kind(item)  # regular files and folders only: a FIFO would block whoever opens it
                entry = None
                if kind == "dir":
                    entry = describe_folder(item, item.name)
                elif kind == "file" and item.suffix.lower() in CHECKPOINT_SUFFIXES:
                    entry = describe_checkpoint(item, item.name)  # the link's name says its type
                if entry is not None and unique(entry):
                    yield entry
        if self.include_hub_cache:
            for entry in cached_hub_models():
                if unique(entry):
                    yield entry

    def loras(self) -> list[ModelEntry]:
        if self.isolated:
            return list(_scanned(self)[1])
        return self._scan_loras()

    def _scan_loras(self) -> list[ModelEntry]:
        return list(self._iter_loras())

    def _iter_loras(self):
        root = self.lora_dir()
        if root is None or not _inside(str(root), str(self.models_dir)):
            return
        root = Path(os.path.abspath(root))
        for f in sorted(root.rglob("*.safetensors")):
            if _inside(str(f), str(root)) and _kind(f) == "file":
                yield describe_lora(f, f.relative_to(root).with_suffix("").as_posix())

    def entries(self) -> list[ModelEntry]:
        return self.models() + self.loras()

    def _describe_reference(self, model: str) -> ModelEntry:
        path = Path(model).expanduser()
        kind = _kind(path)
        if kind == "dir":
            return describe_folder(path.resolve(), model) or ModelEntry(model, "folder", str(path.resolve()), None)
        if kind == "file":
            return describe_checkpoint(path.resolve(), model, suffix=path.suffix)
        for entry in cached_hub_models():
            if entry.name == model:
                return dataclasses.replace(entry, name=model)
        return ModelEntry(model, "hub", None, None, note="the server's --model (not in the local cache)")

    # -----------------------------------------------------------------------------------------
    # The allowlist

    def check_model(self, model: str | None) -> str:
        """The reference to load for a job's ``model`` (``None``: the server's default), if offered.

        Accepted: an entry's ``name`` or the path of an offered folder/file as GET /models spells it
        (compared as strings after ``os.path.normpath``: the client's string never touches the file
        system, so the answer tells nothing about links or files). Returns the string ``load_prior``
        takes (a path for local entries).

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
            spelled = _spelling(model)
            match = next((e for e in entries if e.path and _spelling(e.path) == spelled), None)
        if match is None:
            raise ModelError(f"model {_shown(model)} is not offered by this server: use 'builtin', the server's --model, "
                             "or a name from GET /models (models in the server's --models-dir, hub ids in its cache)"
                             + _incomplete_note(self))
        if not match.supported:
            raise ModelError(f"model {match.name!r} cannot be used: {match.note}")
        return match.path if match.kind in ("folder", "file") else match.name

    def family_of(self, model: str) -> str | None:
        """The family of an offered model (a ``check_model`` result); None when unknown."""
        entry = self.entry_of(model)
        return entry.family if entry else None

    def entry_of(self, model: str) -> ModelEntry | None:
        """The entry of an offered model (a ``check_model`` result: a name or an offered path)."""
        for entry in self.models():
            if model in (entry.name, entry.path):
                return entry
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
        by_path = {_spelling(e.path): e for e in offered.values()}
        out, matches = [], []
        for entry in entries:
            ref = entry.get("name") or entry.get("path")
            match = offered.get(ref)
            if match is None and _looks_like_path(ref):
                match = by_path.get(_spelling(ref))
            if match is None:
                where = "the server has no --models-dir" if self.models_dir is None else "see GET /models (kind lora)"
                raise ModelError(f"LoRA {_shown(ref)} is not offered by this server: {where}" + _incomplete_note(self))
            if not match.supported:
                raise ModelError(f"LoRA {match.name!r} cannot be used: {match.note or 'not a supported LoRA'}; "
                                 "see GET /models (kind lora, supported true)")
            out.append({"path": match.path, "weight": entry["weight"]})
            matches.append(match)
        family = self.family_of(model) if model else None
        known = set(DEFAULT_RENDER) | {"builtin"}
        for entry in matches:
            if family in known and entry.family in DEFAULT_RENDER and entry.family != family:
                what = "the built-in model" if family == "builtin" else f"model {_shown(model)} is {family}"
                raise ModelError(f"LoRA {entry.name!r} was trained for {entry.family} but {what}: choose a LoRA "
                                 "of the model's family (GET /models lists both families)")
        return out

    def check_encoder(self, model: str | None, encoder: str | None) -> None:
        """Refuse ``encoder: tiny`` for a model (a ``check_model`` result) whose folder has no ``vae_tiny/``.

        Raises ``ModelError`` in words for an API user (no CLI option is named).
        """
        if encoder != "tiny":
            return
        entry = self.entry_of(model or self.default_model)
        if entry is not None and entry.tiny_encoder:
            return
        raise ModelError(f"encoder 'tiny' needs a tiny autoencoder (a vae_tiny/ folder: TAESD or TAESDXL) in the "
                         f"model's folder, and model {_shown(model or self.default_model)} has none on this server: use encoder 'full', "
                         "or a model whose GET /models entry says tiny_encoder true")


def _spelling(path: str) -> str:
    """A path as a string, normalised lexically (``a/../b`` is ``b``); the file system is never asked."""
    return os.path.normpath(path)


def _shown(ref: str) -> str:
    return repr(ref if len(ref) <= 80 else ref[:77] + "...")


def _looks_like_path(ref: str) -> bool:
    return os.sep in ref or "/" in ref or ref.startswith(("~", ".")) or ref.lower().endswith(CHECKPOINT_SUFFIXES)


# ---------------------------------------------------------------------------------------------
# The server's description: a child process with a timeout, cached

_CACHE: dict[tuple, tuple[float, tuple, list, list, bool]] = {}
_CACHE_LOCK = threading.Lock()


def _key(catalog: Catalog) -> tuple:
    models_dir = os.path.abspath(os.path.expanduser(str(catalog.models_dir))) if catalog.models_dir else None
    return (catalog.default_model, models_dir, catalog.include_hub_cache)


def _signature(catalog: Catalog) -> tuple:
    """The mtimes that say the folders changed (a new file, a removed one): a rescan before the TTL."""
    paths = []
    if catalog.models_dir is not None:
        paths += [Path(catalog.models_dir).expanduser()] + [Path(catalog.models_dir).expanduser() / s
                                                            for s in LORA_SUBDIRS]
    if catalog.include_hub_cache:
        from .model_files import hub_cache_dir

        paths.append(hub_cache_dir())
    out = []
    for path in paths:
        try:
            out.append(os.stat(path).st_mtime_ns)
        except (OSError, ValueError):
            out.append(None)
    return tuple(out)


def _scanned(catalog: Catalog) -> tuple[list[ModelEntry], list[ModelEntry], bool]:
    """``(models, loras, complete)`` of an isolated catalog: from the cache while the folders' mtimes are
    unchanged and the description is younger than ``SCAN_TTL_S``, else described again by a child."""
    key = _key(catalog)
    with _CACHE_LOCK:  # one description at a time; the others wait for it (in worker threads)
        signature = _signature(catalog)
        hit = _CACHE.get(key)
        if hit is not None and hit[1] == signature and time.monotonic() - hit[0] < SCAN_TTL_S:
            return hit[2], hit[3], hit[4]
        models, loras, complete = scan_in_child(catalog)
        _CACHE[key] = (time.monotonic(), signature, models, loras, complete)
        return models, loras, complete


def _incomplete_note(catalog: Catalog) -> str:
    if not catalog.isolated or _scanned(catalog)[2]:
        return ""
    return (f" (this server could not read its --models-dir in full within {SCAN_TIMEOUT_S:g} s, e.g. a stalled "
            "network mount; the models read before that are offered)")


def scan_in_child(catalog: Catalog, timeout: float | None = None) -> tuple[list[ModelEntry], list[ModelEntry], bool]:
    """Describe ``catalog``'s models and LoRAs in a child process (``python -m nfsd.priors.catalog``):
    a file that blocks whoever reads it (a stalled network mount) costs the child, killed after
    ``timeout`` seconds, never the server's GIL. Entries the child described before that are kept."""
    timeout = SCAN_TIMEOUT_S if timeout is None else timeout
    args = json.dumps({"default_model": catalog.default_model,
                       "models_dir": str(catalog.models_dir) if catalog.models_dir is not None else None,
                       "include_hub_cache": catalog.include_hub_cache})
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen([sys.executable, "-m", "nfsd.priors.catalog", "--scan", args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    complete = True
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        complete = False
        log.warning("describing the models folder %s took more than %g s (a FIFO or a stalled network mount?); "
                    "offering what was read before", catalog.models_dir, timeout)
    models: list[ModelEntry] = []
    loras: list[ModelEntry] = []
    for line in out.decode("utf-8", "replace").splitlines():
        try:
            item = json.loads(line)
            (models if item["list"] == "models" else loras).append(ModelEntry(**item["entry"]))
        except (ValueError, KeyError, TypeError):
            continue
    if complete and proc.returncode != 0:
        complete = False
        log.warning("describing the models folder %s failed (exit %s): %s", catalog.models_dir, proc.returncode,
                    err.decode("utf-8", "replace").strip().splitlines()[-1:] or "")
    if not models:  # builtin is always offered
        models = [ModelEntry("builtin", "builtin", str(BUILTIN_DIR), "builtin")]
    return models, loras, complete


def _scan_main(args_json: str) -> int:
    """The child's side of :func:`scan_in_child`: one JSON line per entry, flushed as it is described."""
    import threading as _threading

    parent = os.getppid()

    def watch() -> None:  # never describe for nobody: end with the server (killed mid-scan)
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(3)

    _threading.Thread(target=watch, daemon=True).start()
    args = json.loads(args_json)
    catalog = Catalog(default_model=args["default_model"],
                      models_dir=Path(args["models_dir"]) if args["models_dir"] else None,
                      include_hub_cache=bool(args["include_hub_cache"]))
    for name, describe in (("models", catalog._iter_models), ("loras", catalog._iter_loras)):
        for entry in describe():
            print(json.dumps({"list": name, "entry": entry.to_dict()}), flush=True)
    return 0


def format_table(entries: list[ModelEntry], runs: dict[str, str] | None = None) -> str:
    """The ``nfsd models`` table: one line per entry. ``runs``: name -> what a job of it runs when its
    settings leave the sizes out (the resolved defaults, ``nfsd.settings.resolve``), a column before NOTE;
    NATIVE is the size the model was trained at (the built-in prior's 64; its jobs render at 128)."""
    rows = [("NAME", "KIND", "FAMILY", "PREDICTION", "TEXT", "NATIVE") + (("A JOB RUNS",) if runs else ()) + ("NOTE",)]
    for e in entries:
        note = e.note if e.supported else f"UNSUPPORTED: {e.note}"
        extra = ((runs.get(e.name) or "-"),) if runs else ()
        rows.append((e.name, e.kind, e.family or "?", e.prediction_type or "-", str(e.text_window or "-"),
                     str(e.render_size or "-")) + extra + (note,))
    n = len(rows[0]) - 1
    widths = [max(len(r[i]) for r in rows) for i in range(n)]
    lines = ("  ".join(c.ljust(w) for c, w in zip(r[:n], widths)) for r in rows)
    return "\n".join(line + "  " + r[n] if r[n] else line.rstrip() for line, r in zip(lines, rows))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--scan":
        sys.exit(_scan_main(sys.argv[2]))
    sys.exit("usage: python -m nfsd.priors.catalog --scan JSON (the server's model description)")


__all__ = ["Catalog", "ModelEntry", "describe_folder", "describe_checkpoint", "describe_lora", "format_table"]
