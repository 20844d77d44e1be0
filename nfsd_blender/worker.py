# SPDX-License-Identifier: GPL-3.0-or-later
"""The thread that talks to the backend for one job: submit (or resubmit, or watch a job already
there), poll its status, fetch previews, the backend's unwrap and the result. No bpy.

Threading rule: the worker only does HTTP and numpy. It reports through ``events`` (kind, payload)
tuples; :func:`jobs.process_events` drains them on the main thread. Kinds: ``phase`` (text),
``submitted`` (job id), ``reconnecting`` (seconds), ``status`` (the backend's status dict),
``preview`` (PNG bytes), ``uvs`` (float32 [F, 3, 2]), ``result`` (.npz bytes), ``error`` /
``interrupted`` / ``not_sent`` (a sentence; ``not_sent``: the backend's queue was full, nothing was
queued) and ``cancelled``. The workers of one press of Texture submit in turn (:mod:`submit_turns`).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from . import image_io, local_backend, mesh_io
from .client import BackendError, Client
from .submit_turns import SubmitTurns

INTERRUPTED_TEXT = "The backend stopped while this job ran. Press Resubmit to run it again."
GONE_TEXT = ("The backend no longer has this job (it was deleted, or the backend restarted with other "
             "data). Texture the object again.")
AUTH_TEXT = "The backend refused the token: check it in the add-on preferences"


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


class Worker:
    """One job's HTTP thread. ``watch``: the id of a job already on the backend (reattaching after
    a reload); ``resubmit``: the id of an interrupted job to run again; otherwise ``mesh_npz`` (and
    ``init_texture``, uint8 [H, W, 4], row 0 = bottom, and a pbr run's ``init_maps``, map name -> the same)
    is submitted with ``settings``.
    ``want_uvs``: fetch the backend's unwrap once it is known (a mesh sent without UVs). ``turns``:
    shared by the jobs of one press of Texture, which submit one after the other."""

    def __init__(self, name: str, settings: dict, connection: Connection, *, mesh_npz: bytes = b"",
                 init_texture: np.ndarray | None = None, watch: str = "", resubmit: str = "",
                 want_uvs: bool = False, turns: SubmitTurns | None = None, init_maps: dict | None = None):
        self.settings = dict(settings)
        self.connection = connection
        self.events: queue.Queue = queue.Queue()
        self._mesh_npz = mesh_npz
        self._init_texture = init_texture
        self._init_maps = dict(init_maps or {})
        self._watch = watch
        self._resubmit = resubmit
        self._want_uvs = want_uvs
        self._turns = turns
        self._ticket = -1
        self._cancel = threading.Event()
        self._detached = False
        self.thread = threading.Thread(target=self._work, name=f"nfsd-job-{name}", daemon=True)

    # -- main thread ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._turns is not None and not self._watch and not self._resubmit:
            self._ticket = self._turns.ticket()  # in the order the jobs start
        self.thread.start()

    def cancel(self) -> None:
        """Cancel the backend job (the worker posts "cancelled" once it did)."""
        self._cancel.set()

    def detach(self) -> None:
        """Stop watching without cancelling the backend job: it goes on, a saved file reattaches it."""
        self._detached = True
        self._cancel.set()

    @property
    def detached(self) -> bool:
        return self._detached

    # -- worker thread -------------------------------------------------------------------------
    def _post(self, kind: str, payload=None) -> None:
        self.events.put((kind, payload))

    def _work(self) -> None:
        job_id = self._watch
        try:
            client = self.connection.client()
            if self._resubmit:
                job_id = client.resubmit(self._resubmit)
            elif not self._watch:
                job_id = self._submit_in_turn(client)
                self._mesh_npz = b""
                if not job_id:
                    return  # not sent: cancelled while waiting, or the backend's queue is full
            self._post("submitted", job_id)
            self._poll(client, job_id)
        except BackendError as error:
            if error.status == 404 and job_id:
                self._post("error", GONE_TEXT)
            elif self._cancel.is_set() and not self._detached:
                self._post("cancelled")
            elif error.kind == "auth":
                self._post("error", AUTH_TEXT)
            else:
                self._post("error", str(error))
        except Exception as error:  # a bug must still end the job with a message, not a silent thread
            self._post("error", f"Unexpected error in the NFSD add-on: {error!r}")

    def _submit_in_turn(self, client: Client) -> str:
        """Submit when this job's turn comes; "" (and the event said why) when it was not sent."""
        turns, ticket = self._turns, self._ticket
        try:
            if turns is not None and ticket >= 0:
                waits = not turns.is_turn(ticket)
                if waits:
                    self._post("phase", "Waiting to upload (the selected objects go one by one)")
                if not turns.wait(ticket, self._cancel):
                    self._post("cancelled")
                    return ""
                if turns.refused:
                    self._post("not_sent", f"Not sent: {turns.refused}")
                    return ""
                if waits:
                    self._post("phase", "Uploading mesh")
            init_png = image_io.encode_png(self._init_texture) if self._init_texture is not None else None
            maps = {name: image_io.encode_png(m) for name, m in self._init_maps.items()} if init_png else {}
            try:
                return self._submit(client, init_png, maps)
            except BackendError as error:
                if error.status != 429:
                    raise
                if turns is not None:
                    turns.refuse(str(error))
                self._post("not_sent", f"Not sent: {error}")
                return ""
        finally:
            if turns is not None and ticket >= 0:
                turns.done(ticket)

    def _submit(self, client: Client, init_png: bytes | None, maps: dict) -> str:
        """``maps``: a pbr run's init maps, name -> PNG (sent only with ``init_png``)."""
        try:
            return client.submit(self._mesh_npz, self.settings, init_png, maps)
        except BackendError as error:
            if error.kind != "unreachable" or not self.connection.start_command:
                raise
        self._post("phase", "Starting the local backend")
        local_backend.start(self.connection.start_command, client.url)
        local_backend.wait_until_up(client.url, client.token, timeout=180.0, cancel=self._cancel)
        self._post("phase", "Uploading mesh")
        return client.submit(self._mesh_npz, self.settings, init_png, maps)

    def _poll(self, client: Client, job_id: str) -> None:
        seen = {"preview_at": time.monotonic(), "snapshot": None, "want_uvs": self._want_uvs}
        unreachable_since: float | None = None
        while True:
            if self._cancel.is_set():
                if self._detached:
                    return  # the file was closed (or Blender quit): the backend job goes on
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
