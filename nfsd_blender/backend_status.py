# SPDX-License-Identifier: GPL-3.0-or-later
"""The backend line of the panel: is the backend there, does it take our token, which models it
offers (``GET /models``) and their prompt limits.

A checker thread writes the last answer under a lock; the panel reads it. No bpy here.
"""

from __future__ import annotations

import re
import threading
import time

from .client import BackendError

DEFAULT_MODEL = "builtin"  # what `nfsd serve` uses without --model


def describe_health(health: dict) -> str:
    """``GET /health`` as one line: model, device and GPU memory, queue."""
    parts = []
    loaded, loading = health.get("model_loaded"), health.get("model_loading")
    default = health.get("default_model") or health.get("model")
    if loading:
        parts.append(f"loading model {_short(loading)}")
    elif isinstance(loaded, str) and loaded:
        parts.append(f"model {_short(loaded)} loaded")
    elif default:
        parts.append(f"model {_short(default)} (loads with the first job)")
    gpu = health.get("gpu_name")
    if gpu:
        free = health.get("gpu_free_bytes")
        parts.append(f"{gpu}" + (f", {free / 2 ** 30:.1f} GB free" if isinstance(free, (int, float)) else ""))
    else:
        parts.append(f"{health.get('device') or 'cpu'}, no GPU: slow")
    queued = health.get("queue_length")
    if queued:
        parts.append(f"{queued} queued")
    version = health.get("version")
    return "Connected" + (f" (v{version})" if version else "") + ": " + ", ".join(parts)


def _short(model: str) -> str:
    # Local model paths are long; the folder or file name is what an artist recognizes.
    return model.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1] or model


DEFAULT_KEYS = ("steps", "texture_size", "render_size", "batch")  # an entry's optional "defaults"


def read_models(answer) -> list[dict]:
    """The models a job can name from a ``GET /models`` answer (the server's ``{"default_model",
    "models": [...]}``, or a bare list): entries with a ``name`` that are neither LoRAs (``kind``
    "lora") nor marked ``supported: false``. Each keeps ``name``, ``kind``, ``family``,
    ``render_size`` (the family's render size), ``text_window``, ``default`` and ``defaults``
    (positive ints among steps, texture_size, render_size, batch; {} when the entry has none)."""
    entries = answer.get("models") if isinstance(answer, dict) else answer
    models = []
    for entry in entries if isinstance(entries, list) else []:
        if not (isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry["name"]):
            continue
        if entry.get("kind") == "lora" or entry.get("supported") is False:
            continue
        given = entry.get("defaults") if isinstance(entry.get("defaults"), dict) else {}
        defaults = {key: given[key] for key in DEFAULT_KEYS
                    if isinstance(given.get(key), int) and not isinstance(given[key], bool) and given[key] > 0}
        render = entry.get("render_size")
        models.append({"name": entry["name"], "kind": str(entry.get("kind") or ""),
                       "family": str(entry.get("family") or ""),
                       "render_size": render if isinstance(render, int) and render > 0 else None,
                       "text_window": entry.get("text_window"), "default": bool(entry.get("default")),
                       "defaults": defaults})
    return models


def estimate_tokens(prompt: str) -> int:
    """A lower bound of the CLIP token count of ``prompt``, start and end tokens included: every
    word is at least one token, every digit and punctuation mark one. Blender has no tokenizer, so
    the panel only refuses prompts that are too long for sure; the backend checks exactly."""
    return len(re.findall(r"[^\W\d_]+|\d|[^\w\s]", prompt.lower())) + 2


class _BackendStatus:
    """The last check, written by a checker thread, read by the panel (under a lock)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.ok: bool | None = None  # None: never checked
        self.text = "Not checked yet"
        self.checked_at = -1e9
        self.wanted_at = -1e9
        self.models: list[dict] = []
        self.default_model = ""
        self._changed = False
        self._thread: threading.Thread | None = None

    def set(self, ok: bool, text: str, models: list[dict] | None = None, default_model: str | None = None) -> None:
        with self._lock:
            self.ok, self.text, self.checked_at, self._changed = ok, text, time.monotonic(), True
            if models is not None:
                self.models = models
            if default_model is not None:
                self.default_model = default_model

    def take_changed(self) -> bool:
        with self._lock:
            changed, self._changed = self._changed, False
        return changed

    def checking(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


_backend = _BackendStatus()


def backend_status() -> tuple[bool | None, str]:
    """``(ok, text)`` of the last check; ok None when never checked."""
    return _backend.ok, _backend.text


def set_status(ok: bool, text: str) -> None:
    _backend.set(ok, text)


def take_changed() -> bool:
    return _backend.take_changed()


def models() -> list[dict]:
    """The models the backend offered at the last check ([] before one, or from a backend
    without ``GET /models``: the panel then offers the backend's default only)."""
    return list(_backend.models)


def default_model_name() -> str:
    return _short(_backend.default_model) if _backend.default_model else DEFAULT_MODEL


def model_entry(name: str) -> dict | None:
    """The ``GET /models`` entry of ``name`` ("" = the backend's default), or None."""
    if name:
        return next((entry for entry in _backend.models if entry["name"] == name), None)
    default = _backend.default_model or DEFAULT_MODEL
    return next((entry for entry in _backend.models if entry["name"] == default or entry["default"]), None)


def prompt_problem(prompt: str, model: str) -> str | None:
    """Why ``prompt`` is too long for ``model`` (a sentence), when the backend reported the model's
    token limit (``text_window``) and the prompt certainly exceeds it; else None."""
    entry = model_entry(model)
    window = entry.get("text_window") if entry else None
    if not isinstance(window, int) or window <= 0:
        return None
    count = estimate_tokens(prompt)
    if count <= window:
        return None
    return (f"The prompt is at least {count} tokens long but the model '{entry['name']}' reads "
            f"{window}; shorten it")


def check_backend(connection) -> tuple[bool, str]:
    """Ask the backend now (blocks up to a few seconds: worker threads and tests): its health, then
    an authenticated route, so a wrong token shows here and not at the first job; then its models."""
    client = connection.client(timeout=3.0)
    try:
        health = client.health()
        text = describe_health(health)
        try:
            client.list_jobs()
        except BackendError as error:
            if error.kind == "auth":
                what = "is empty" if not connection.token.strip() else "is wrong"
                _backend.set(False, f"Wrong token: the backend wants one and the token in the add-on's "
                                    f"preferences {what}. Set the token the backend was started with (--token).")
                return _backend.ok, _backend.text
            raise
        try:
            found = client.models()
        except BackendError:
            found = None  # the model list is a convenience: the backend's default still works
        default = health.get("default_model") or (found.get("default_model") if isinstance(found, dict) else "")
        _backend.set(True, text, read_models(found) if found is not None else [], str(default or ""))
    except BackendError as error:
        _backend.set(False, str(error))
    return _backend.ok, _backend.text


def refresh_backend_status(connection) -> None:
    """Start a check in the background unless one is running."""
    if _backend.checking():
        return
    _backend._thread = threading.Thread(target=check_backend, args=(connection,), daemon=True,
                                        name="nfsd-health")
    _backend._thread.start()


def wait_for_check(timeout: float = 10.0) -> None:
    """Block until a running background check finished (tests and scripts)."""
    if _backend._thread is not None:
        _backend._thread.join(timeout)


def backend_checked_at() -> float:
    return _backend.checked_at


def note_status_wanted() -> None:
    """Called when the backend line is drawn: keeps it refreshed while someone looks at it."""
    _backend.wanted_at = time.monotonic()


def status_wanted_recently(seconds: float = 60.0) -> bool:
    return time.monotonic() - _backend.wanted_at < seconds


def unload_model(connection) -> str:
    """Ask the backend to free its model (GPU memory); returns a message. Raises BackendError."""
    connection.client(timeout=10.0).unload_model()
    return "The backend unloaded its model and freed the GPU memory"
