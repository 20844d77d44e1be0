# SPDX-License-Identifier: GPL-3.0-or-later
"""One texturing job as the add-on keeps it: what was sent, the state the panel shows, and what the
scene needs to be put back. Its HTTP thread is a :class:`worker.Worker`. No bpy.

Three parts, one concern each:

- ``job.worker`` (:mod:`worker`): the thread that submits, polls and fetches;
- the :class:`Job` itself: the object it belongs to, what was sent (settings, UV map, shape key,
  triangle corners: what a result needs to be applied) and the panel-visible state (state, step,
  ETA, messages), updated from the worker's events by :meth:`Job.take` on the main thread;
- ``job.cleanup`` (:class:`SceneCleanup`): what to put back should the object be deleted while the
  job runs (the snapshot on the object goes with it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .submit_turns import SubmitTurns
from .worker import Connection, Worker

ACTIVE_STATES = {"starting", "submitting", "queued", "loading", "running", "cancelling"}
FINAL_STATES = {"done", "failed", "cancelled", "interrupted"}


def format_duration(seconds: float | None) -> str:
    """``83`` -> ``"1:23"``, ``3725`` -> ``"1:02:05"``; ``"--:--"`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


@dataclass
class SceneCleanup:
    """What a job put on its object, by name, to clean up after the object was deleted: the mesh,
    the materials its slots held at the start (name, link), the preview material and image."""

    mesh_name: str = ""
    slots_before: list[tuple[str, str]] = field(default_factory=list)
    preview_material_name: str = ""
    preview_image_name: str = ""


class Job:
    """One object's run. Fields are read and written on the main thread only.

    The object is identified by ``object_uid`` (its ``session_uid``) and ``object_key`` (its
    ``nfsd_key``), never by name; ``object_name`` is only what the panel shows. ``watch``: the id
    of a job already on the backend (reattaching after a reload); ``resubmit``: the id of an
    interrupted job to run again. Otherwise ``mesh_npz`` is submitted, in its turn among the jobs
    sharing ``turns`` (one press of Texture on several objects).
    """

    def __init__(self, obj_uid: int | None, object_key: str, object_name: str, settings: dict,
                 connection: Connection, *, mesh_npz: bytes = b"", uv_map: str = "",
                 init_texture: np.ndarray | None = None, base_key: str = "", loops: np.ndarray | None = None,
                 watch: str = "", resubmit: str = "", turns: SubmitTurns | None = None, init_maps: dict | None = None):
        self.object_uid = obj_uid
        self.object_key = object_key
        self.object_name = object_name
        self.settings = dict(settings)
        self.uv_map = uv_map  # the UV map whose UVs were sent; "" = the backend unwraps
        self.base_key = base_key  # the shape key whose positions were sent; "" = the basis
        self.loops = loops  # int32 [F, 3] loop of each sent triangle corner (mesh_io.loop_triangles)
        self.worker = Worker(object_name, settings, connection, mesh_npz=mesh_npz, init_texture=init_texture,
                             init_maps=init_maps, watch=watch, resubmit=resubmit, want_uvs=not uv_map, turns=turns)
        self.cleanup = SceneCleanup()
        self.reattached = bool(watch)

        self.job_id = watch
        self.state = "submitting"
        self.phase = "Resubmitting" if resubmit else ("Reattaching" if watch else "Uploading mesh")
        self.error = ""
        self.not_sent = False  # the backend's queue was full: nothing was queued (the error says so)
        self.warnings: list[str] = []  # what the result's run noticed (shown under "Done")
        self.step = 0
        self.total = int(settings.get("steps") or 0)
        self.progress = 0.0
        self.loss: float | None = None
        self.eta: float | None = None
        self.stage: str | None = None  # the backend's line for what it does before the steps ("unwrapping ...")
        self.queue_position = 0
        self.started = time.monotonic()
        self.finished_at: float | None = None
        self.backend_seconds: float | None = None  # the run's duration as the backend measured it
        self.reconnecting_since: float | None = None  # monotonic time the backend stopped answering
        self.previews = 0  # live previews shown (counted by preview.show_png)
        self.preview_uv_map = ""  # the UV map the live preview is laid on, once there is one
        self.object_gone = False  # the object was deleted: the job is cancelled, nothing applies
        self.saved = False  # the file was saved while the job ran: closing it (or quitting) keeps it running
        self.pending_uvs: np.ndarray | None = None  # the backend's unwrap, until it can be applied
        self.pending_result: bytes | None = None  # the result .npz, until it can be applied

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def start(self) -> "Job":
        self.worker.start()
        return self

    def request_cancel(self) -> None:
        """Ask the worker to cancel the backend job; the state becomes "cancelled" once the
        backend confirmed (or at once if nothing was submitted yet)."""
        if self.active:
            self.state = "cancelling"
            self.phase = "Cancelling"
            self.worker.cancel()

    def detach(self) -> None:
        """Stop watching without cancelling the backend job (its file was closed after a save)."""
        self.worker.detach()

    def elapsed_seconds(self) -> float:
        """Seconds since the artist pressed the button (queue and model loading included); for a
        reattached job, which started before this Blender watched it, the backend's own count."""
        if self.reattached and self.backend_seconds is not None:
            return self.backend_seconds
        end = self.finished_at if self.finished_at is not None else time.monotonic()
        return end - self.started

    def status_text(self) -> str:
        """One line for the panel and the status bar."""
        elapsed = format_duration(self.elapsed_seconds())
        if self.active and self.reconnecting_since is not None and self.state != "cancelling":
            return f"Reconnecting ({time.monotonic() - self.reconnecting_since:.0f} s)..."
        if self.state == "queued":
            position = f" (position {self.queue_position})" if self.queue_position else ""
            return f"Queued{position}, {elapsed} elapsed"
        if self.state == "loading":
            return f"Loading model {self.progress:.0%}, {elapsed} elapsed"
        if self.state == "running" and self.step == 0 and self.stage:
            return f"{self.stage[:1].upper()}{self.stage[1:]}, {elapsed} elapsed"
        if self.state == "running":
            loss = f" · loss {self.loss:.4g}" if self.loss is not None else ""
            return f"Step {self.step}/{self.total} · {elapsed} elapsed · ETA {format_duration(self.eta)}{loss}"
        if self.state == "done":
            if self.pending_result is not None:
                return "Done: leave Edit Mode to apply"
            noted = f" · {len(self.warnings)} warning(s)" if self.warnings else ""
            return f"Done in {elapsed}{noted}"
        if self.state in ("failed", "interrupted"):
            return self.error
        if self.state == "cancelled":
            return f"Cancelled after {elapsed}"
        return f"{self.phase}..."

    def take(self, kind: str, payload) -> None:
        """Update the state from one worker event (the scene is left to the caller)."""
        if kind != "reconnecting":
            self.reconnecting_since = None
        if kind == "phase":
            self.phase = payload
            if payload.startswith("Starting") and self.state != "cancelling":
                self.state = "starting"
        elif kind == "submitted":
            self.job_id = payload
            if self.state != "cancelling":
                self.state = "queued"
        elif kind == "reconnecting":
            self.reconnecting_since = time.monotonic() - float(payload)
        elif kind == "status":
            self._take_status(payload)
        elif kind == "uvs":
            self.pending_uvs = payload
        elif kind == "result":
            self.pending_result = payload
            self.state, self.progress, self.step = "done", 1.0, self.total
            self.finished_at = time.monotonic()
        elif kind in ("error", "interrupted", "not_sent"):
            self.fail(payload, "interrupted" if kind == "interrupted" else "failed")
            self.not_sent = kind == "not_sent"
        elif kind == "cancelled":
            self.state = "cancelled"
            self.finished_at = time.monotonic()

    def fail(self, message: str, state: str = "failed") -> None:
        self.state, self.error = state, message
        self.finished_at = time.monotonic()
        self.pending_result = self.pending_uvs = None

    def _take_status(self, status: dict) -> None:
        state = status.get("state", "")
        if state in ("queued", "loading", "running") and self.state != "cancelling":
            self.state = state
        self.queue_position = int(status.get("queue_position") or 0)
        self.step = int(status.get("step") or 0)
        self.total = int(status.get("total") or self.total)
        self.progress = float(status.get("progress") or (self.step / self.total if self.total else 0.0))
        self.loss = status.get("loss")
        self.eta = status.get("eta_seconds")
        stage = status.get("stage")
        self.stage = stage[:80] if isinstance(stage, str) and stage else None
        self.backend_seconds = _backend_seconds(status, self.backend_seconds)


def _backend_seconds(status: dict, before: float | None) -> float | None:
    """How long the backend has run the job (``finished - started`` once finished, else its
    ``elapsed_seconds``); ``before`` when the status says neither."""
    started, finished = status.get("started"), status.get("finished")
    if isinstance(started, (int, float)) and isinstance(finished, (int, float)) and finished >= started:
        return float(finished - started)
    elapsed = status.get("elapsed_seconds")
    return float(elapsed) if isinstance(elapsed, (int, float)) and elapsed >= 0 else before
