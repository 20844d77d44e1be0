# SPDX-License-Identifier: GPL-3.0-or-later
"""One texturing job: its state as the panel shows it, and the worker thread that talks to the backend.

Threading rule: the worker thread only does HTTP and numpy; it never touches bpy. It reports
through ``events`` (kind, payload) tuples; :func:`jobs.process_events` drains them on the main
thread and calls :meth:`Job.take` for the state, and :mod:`preview`/:mod:`results` for the scene.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from . import image_io, local_backend, mesh_io
from .client import BackendError, Client

ACTIVE_STATES = {"starting", "submitting", "queued", "loading", "running", "cancelling"}
FINAL_STATES = {"done", "failed", "cancelled", "interrupted"}


@dataclass
class Connection:
    """How to reach the backend; built from the add-on preferences on the main thread.

    ``start_command``: when set and the backend is unreachable, a job starts it with that command
    (see :func:`local_backend.build_command`). Intervals are in seconds; ``reconnect_timeout``: how
    long a job waits for a backend that stopped answering before it gives up.
    """

    url: str = "127.0.0.1:7870"
    token: str = ""
    online_access: bool = True
    start_command: str = ""
    poll_interval: float = 0.5
    preview_interval: float = 3.0
    reconnect_timeout: float = 600.0

    def client(self, **kwargs) -> Client:
        return Client(self.url, self.token, online_access=self.online_access, **kwargs)


def format_duration(seconds: float | None) -> str:
    """``83`` -> ``"1:23"``, ``3725`` -> ``"1:02:05"``; ``"--:--"`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


INTERRUPTED_TEXT = "The backend stopped while this job ran. Press Resubmit to run it again."
GONE_TEXT = ("The backend no longer has this job (it was deleted, or the backend restarted with other "
             "data). Texture the object again.")


class Job:
    """One object's run. Fields are read and written on the main thread only.

    The object is identified by ``object_uid`` (its ``session_uid``) and ``object_key`` (its
    ``nfsd_key``), never by name; ``object_name`` is only what the panel shows. ``watch``: the id
    of a job already on the backend (reattaching after a reload); ``resubmit``: the id of an
    interrupted job to run again. Otherwise ``mesh_npz`` is submitted.
    """

    def __init__(self, obj_uid: int | None, object_key: str, object_name: str, settings: dict,
                 connection: Connection, *, mesh_npz: bytes = b"", uv_map: str = "",
                 init_texture: np.ndarray | None = None, base_key: str = "", loops: np.ndarray | None = None,
                 watch: str = "", resubmit: str = ""):
        self.object_uid = obj_uid
        self.object_key = object_key
        self.object_name = object_name
        self.settings = dict(settings)
        self.uv_map = uv_map  # the UV map whose UVs were sent; "" = the backend unwraps
        self.base_key = base_key  # the shape key whose positions were sent; "" = the basis
        self.loops = loops  # int32 [F, 3] loop of each sent triangle corner (mesh_io.loop_triangles)
        self.connection = connection
        self._mesh_npz = mesh_npz
        self._init_texture = init_texture  # uint8 [H, W, 4], row 0 = bottom (Continue)
        self._watch = watch
        self._resubmit = resubmit
        self.events: queue.Queue = queue.Queue()
        self._cancel = threading.Event()
        self.thread = threading.Thread(target=self._work, name=f"nfsd-job-{object_name}", daemon=True)

        self.job_id = watch
        self.state = "submitting"
        self.phase = "Resubmitting" if resubmit else ("Reattaching" if watch else "Uploading mesh")
        self.error = ""
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
        self.reconnecting_since: float | None = None  # monotonic time the backend stopped answering
        self.previews = 0  # live previews shown (counted by preview.show_png)
        self.preview_uv_map = ""  # the UV map the live preview is laid on, once there is one
        self.object_gone = False  # the object was deleted: the job is cancelled, nothing applies
        # What the object's slots held at the start, by name: to clean up a mesh whose object was
        # deleted (the snapshot on the object went with it).
        self.mesh_name = ""
        self.preview_material_name = self.preview_image_name = ""
        self.slots_before: list[tuple[str, str]] = []
        self.saved = False  # the file was saved while the job ran: opening another file keeps it running
        self.pending_uvs: np.ndarray | None = None  # the backend's unwrap, until it can be applied
        self.pending_result: bytes | None = None  # the result .npz, until it can be applied

    # -- main thread ---------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def start(self) -> "Job":
        self.thread.start()
        return self

    def request_cancel(self) -> None:
        """Ask the worker to cancel the backend job; the state becomes "cancelled" once the
        backend confirmed (or at once if nothing was submitted yet)."""
        if self.active:
            self.state = "cancelling"
            self.phase = "Cancelling"
            self._cancel.set()

    def detach(self) -> None:
        """Stop watching without cancelling the backend job (its file was closed after a save)."""
        self._cancel.set()
        self._watch = "detached"

    def elapsed_seconds(self) -> float:
        """Seconds since the artist pressed the button (queue and model loading included)."""
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
        elif kind in ("error", "interrupted"):
            self.fail(payload, "interrupted" if kind == "interrupted" else "failed")
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

    # -- worker thread -------------------------------------------------------------------------
    def _post(self, kind: str, payload=None) -> None:
        self.events.put((kind, payload))

    def _work(self) -> None:
        try:
            client = self.connection.client()
            if self._resubmit:
                job_id = client.resubmit(self._resubmit)
            elif self._watch:
                job_id = self._watch
            else:
                init_png = image_io.encode_png(self._init_texture) if self._init_texture is not None else None
                job_id = self._submit(client, init_png)
                self._mesh_npz = b""
            self._post("submitted", job_id)
            self._poll(client, job_id)
        except BackendError as error:
            if error.status == 404 and self.job_id:
                self._post("error", GONE_TEXT)
            else:
                self._post("cancelled" if self._cancel.is_set() else "error", str(error))
        except Exception as error:  # a bug must still end the job with a message, not a silent thread
            self._post("error", f"Unexpected error in the NFSD add-on: {error!r}")

    def _submit(self, client: Client, init_png: bytes | None) -> str:
        try:
            return client.submit(self._mesh_npz, self.settings, init_png)
        except BackendError as error:
            if error.kind != "unreachable" or not self.connection.start_command:
                raise
        self._post("phase", "Starting the local backend")
        local_backend.start(self.connection.start_command, client.url)
        local_backend.wait_until_up(client.url, client.token, timeout=180.0, cancel=self._cancel)
        self._post("phase", "Uploading mesh")
        return client.submit(self._mesh_npz, self.settings, init_png)

    def _poll(self, client: Client, job_id: str) -> None:
        seen = {"preview_at": time.monotonic(), "snapshot": None, "want_uvs": not self.uv_map}
        unreachable_since: float | None = None
        while True:
            if self._cancel.is_set():
                if self._watch == "detached":
                    return  # the file was closed: the backend job goes on, a reopened file reattaches
                try:
                    client.cancel(job_id)
                except BackendError:
                    pass  # gone, finished meanwhile, or the backend is down: cancelled here all the same
                self._post("cancelled")
                return
            try:
                if self._poll_once(client, job_id, seen):
                    return
                unreachable_since = None
            except BackendError as error:
                if error.kind != "unreachable":
                    raise
                # A restarting backend: keep asking, and say so, until it answers or we give up.
                now = time.monotonic()
                unreachable_since = now if unreachable_since is None else unreachable_since
                if now - unreachable_since > self.connection.reconnect_timeout:
                    raise
                self._post("reconnecting", now - unreachable_since)
                self._cancel.wait(min(1.0, max(self.connection.poll_interval, 0.05)))
                continue
            self._cancel.wait(self.connection.poll_interval)

    def _poll_once(self, client: Client, job_id: str, seen: dict) -> bool:
        """One status poll (and the previews and UVs it announces); True when the job ended."""
        status = client.status(job_id)
        self._post("status", status)
        state = status.get("state")
        if state == "done":
            self._post("result", client.result(job_id))
            return True
        if state == "failed":
            self._post("error", status.get("error") or "The backend reported the job as failed.")
            return True
        if state == "cancelled":
            self._post("cancelled")
            return True
        if state == "interrupted":
            self._post("interrupted", INTERRUPTED_TEXT)
            return True
        if seen["want_uvs"] and state in ("loading", "running"):
            seen["want_uvs"] = self._fetch_uvs(client, job_id, status)
        now = time.monotonic()
        # The backend says which step its snapshot is from: fetch each new one at most once.
        snapshot = status.get("preview_step", status.get("step"))
        if (state == "running" and snapshot != seen["snapshot"] and snapshot is not None
                and now - seen["preview_at"] >= self.connection.preview_interval):
            png = client.preview_png(job_id)
            seen["preview_at"] = now
            if png:
                seen["snapshot"] = snapshot
                self._post("preview", png)
        return False

    def _fetch_uvs(self, client: Client, job_id: str, status: dict) -> bool:
        """Fetch the backend's unwrap once it is known and post it; returns whether to try again."""
        # A backend that does not report has_uvs predates GET /jobs/{id}/uvs: one try once running.
        if not status.get("has_uvs", status.get("state") == "running"):
            return True
        try:
            data = client.uvs(job_id)
        except BackendError as error:
            return error.kind == "unreachable"  # a missed poll; anything else: the result brings them
        if data is None:  # 404 although announced (or an older backend): the result brings them
            return False
        try:
            uvs, _generated = mesh_io.read_uvs(data)
        except ValueError:
            return False
        self._post("uvs", uvs)
        return False
