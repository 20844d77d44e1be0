# SPDX-License-Identifier: GPL-3.0-or-later
"""What a job with the panel's settings would run, and how long it would take: ``POST /settings/resolve``.

The panel asks while it is drawn (:func:`lookup`); the answer comes from a background thread, a
moment after the settings stopped changing (debounced), and is cached per settings dict (and per
backend and per number of jobs that finished here, so a finished job's measured speed shows). The
panel never waits for the backend: unreachable, or an old backend without the route, and the panel
shows its own values with no estimate; settings the backend refuses (a prompt the built-in prior
cannot know) come back as a note to show, before anything is sent.
No bpy here.
"""

from __future__ import annotations

import json
import threading
import time

from .client import BackendError

DEBOUNCE_SECONDS = 0.5  # ask once the settings have stayed the same this long
REFRESH_SECONDS = 60.0  # an answer older than this is asked again while it is wanted (other clients' jobs)
RETRY_SECONDS = 10.0  # after no answer (backend unreachable), ask again after this long
UNKNOWN = "Time unknown until a job of this kind has run"


def what_runs(steps, render_size, texture_size, batch) -> str:
    """``"500 steps · 512 px render · 1024 px texture · 4 views/step"`` (None: the backend's default)."""
    render = f"{render_size} px render" if render_size else "model's render size"
    views = f"{batch} view{'s' if batch != 1 else ''}/step" if batch else "views/step: backend default"
    return f"{steps} steps · {render} · {texture_size} px texture · {views}"


def duration(seconds: float) -> str:
    """``"about 40 s"``, ``"about 2 min"``, ``"about 1.5 h"``."""
    if seconds < 59.5:
        return f"about {max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


def request_for(settings: dict) -> dict:
    """The settings to resolve: the panel's, with placeholder text for an empty prompt (refused) and
    the negative and source prompts (they change neither the steps nor the sizes nor the speed). The
    prompt itself is sent: a model with a closed vocabulary (the built-in prior) refuses words it does
    not know, and the panel says so before anything is sent (:func:`refusal`)."""
    data = {key: value for key, value in settings.items() if key not in ("negative_prompt", "source_prompt")}
    data["prompt"] = str(data.get("prompt") or "").strip() or "-"
    if data.get("mode") == "dds":
        data["source_prompt"] = "-"
    return data


def refusal(answer: dict | None) -> str | None:
    """The backend's reason when it refused the panel's settings (HTTP 422), else None."""
    return answer.get("refused") if isinstance(answer, dict) else None


def lines(answer: dict | None) -> list[str]:
    """The panel's lines for a resolve ``answer``: what will run, then the estimate; [] for None."""
    if not isinstance(answer, dict) or not isinstance(answer.get("settings"), dict):
        return []
    resolved = answer["settings"]
    summary = what_runs(resolved.get("steps"), resolved.get("render_size") or answer.get("render_size"),
                        resolved.get("texture_size"), resolved.get("batch"))
    seconds = answer.get("estimate_seconds")
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds >= 0:
        return [summary, f"Time: {duration(seconds)}"]
    return [summary, UNKNOWN]


class _Entry:
    __slots__ = ("revision", "answer", "at")

    def __init__(self, revision, answer, at):
        self.revision, self.answer, self.at = revision, answer, at


class _Estimates:
    """The cache and the one thread that fills it (shared state under a lock)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.cache: dict[tuple, _Entry] = {}
        self.wanted: tuple | None = None  # (key, connection, request, revision)
        self.wanted_at = 0.0
        self.thread: threading.Thread | None = None
        self.changed = False

    def stale(self, key, revision, now) -> bool:
        entry = self.cache.get(key)
        if entry is None or entry.revision != revision:
            return True
        return now - entry.at > (REFRESH_SECONDS if entry.answer is not None else RETRY_SECONDS)

    def run(self) -> None:
        while True:
            with self.lock:
                key, connection, request, revision = self.wanted
                wait = self.wanted_at + DEBOUNCE_SECONDS - time.monotonic()
                if wait <= 0 and not self.stale(key, revision, time.monotonic()):
                    self.thread = None
                    return
            if wait > 0:
                time.sleep(wait)
                continue
            answer = fetch(connection, request)
            with self.lock:
                self.cache[key] = _Entry(revision, answer, time.monotonic())
                self.changed = True
                if len(self.cache) > 200:
                    self.cache.pop(next(iter(self.cache)))


_state = _Estimates()


def fetch(connection, request: dict) -> dict | None:
    """The backend's answer for ``request`` (blocks up to a few seconds: the thread, tests), or None."""
    try:
        return connection.client(timeout=3.0).resolve_settings(request)
    except BackendError as error:
        # Settings the backend refuses: its reason is the note the panel shows; anything else, no answer.
        return {"refused": str(error)} if getattr(error, "status", None) == 422 else None


def lookup(connection, settings: dict, revision=0) -> dict | None:
    """The latest answer for ``settings`` on ``connection``'s backend (None before one, or when there
    is none); asks in the background when there is no fresh one. Cheap: called while drawing.
    ``revision`` changes when a job finished here (its speed is then measured: ask again)."""
    request = request_for(settings)
    key = (connection.url, connection.token, json.dumps(request, sort_keys=True))
    now = time.monotonic()
    with _state.lock:
        entry = _state.cache.get(key)
        if _state.stale(key, revision, now):
            if _state.wanted is None or _state.wanted[0] != key or _state.wanted[3] != revision:
                _state.wanted_at = now if _state.wanted is None or _state.wanted[0] != key else _state.wanted_at
                _state.wanted = (key, connection, request, revision)
            if _state.thread is None:
                _state.thread = threading.Thread(target=_state.run, daemon=True, name="nfsd-estimate")
                _state.thread.start()
    return entry.answer if entry is not None else None


def take_changed() -> bool:
    """True once after an answer arrived (the timer then redraws the panel)."""
    with _state.lock:
        changed, _state.changed = _state.changed, False
    return changed


def wait(timeout: float = 10.0) -> None:
    """Block until the background thread has nothing left to ask (tests and scripts)."""
    thread = _state.thread
    if thread is not None:
        thread.join(timeout)


def clear() -> None:
    with _state.lock:
        _state.cache.clear()
        _state.wanted = None
