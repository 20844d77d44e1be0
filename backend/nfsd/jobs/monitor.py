"""What running jobs show while they run: their records kept current, status.json and preview.png on disk.

A slot's worker thread reports each step through :meth:`JobMonitor.events` (attribute stores on the
in-memory ``JobRecord``, no I/O, no locks); the monitor's own thread writes ``status.json`` (every
``status_interval`` s) and ``preview.png`` (every ``preview_interval`` s, as snapshots arrive) so that
polling, snapshots and disk latency never slow the job down. The latest preview is also kept in
memory, so that ``GET /jobs/{id}/preview`` of a running job needs no disk access.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

PREVIEWS_KEPT = 16  # latest previews kept in memory (of the running jobs, and the last ones to finish)

from ..errors import NfsdError
from .events import JobEvents
from .store import LOADING, RUNNING, JobRecord, JobStore

log = logging.getLogger("nfsd.jobs")


class JobMonitor:
    """Progress, status and previews of the running jobs (one per ``JobManager``).

    Args:
        store: the job folders.
        current: returns the running jobs' records.
        status_interval: seconds between ``status.json`` writes (previews arrive from the job's runner,
            ``nfsd.jobs.job_run.run_job``, every ``preview_interval`` s).
    """

    def __init__(self, store: JobStore, current: Callable[[], list[JobRecord]], status_interval: float):
        self.store = store
        self._current = current
        self._status_interval = status_interval
        self._dirty: set[str] = set()  # jobs whose record changed since status.json was written
        self._previews: dict[str, bytes] = {}  # job id -> PNG of its latest snapshot, oldest first
        self._previews_lock = threading.Lock()  # several jobs' threads store previews

    def events(self, rec: JobRecord) -> JobEvents:
        """The callbacks a job's runner calls, bound to ``rec``."""
        return JobEvents(progress=lambda p: self._on_progress(rec, p), uvs=lambda: self._note_uvs(rec),
                         preview=lambda png, step: self.store_preview(rec, png, step),
                         stage=lambda text, elapsed: self._on_stage(rec, text, elapsed))

    # -- previews ----------------------------------------------------------------------------------
    def preview_cached(self, job_id: str) -> bytes | None:
        """The latest preview PNG of ``job_id`` if it is still kept in memory (no disk access)."""
        return self._previews.get(job_id)

    def preview_bytes(self, job_id: str) -> bytes | None:
        """The latest preview PNG of ``job_id`` or None. Read whole: the file may be replaced meanwhile."""
        cached = self.preview_cached(job_id)
        if cached is not None:
            return cached
        try:
            return self.store.read_bytes(job_id, "preview.png")
        except FileNotFoundError:
            return None

    def forget(self, job_id: str) -> None:
        """Drop what is kept in memory of ``job_id`` (it is being deleted)."""
        with self._previews_lock:
            self._previews.pop(job_id, None)

    def store_preview(self, rec: JobRecord, data: bytes, step: int) -> None:
        try:
            self.store.write_file(rec.id, "preview.png", data, durable=False)
            with self._previews_lock:
                self._previews.pop(rec.id, None)
                self._previews[rec.id] = data
                while len(self._previews) > PREVIEWS_KEPT:
                    self._previews.pop(next(iter(self._previews)))
            rec.preview_step = int(step)
        except (OSError, NfsdError):
            log.exception("job %s: could not write its preview", rec.id)

    # -- the worker thread's events: attribute stores only ----------------------------------------
    def _on_stage(self, rec: JobRecord, text: str | None, elapsed: float) -> None:
        rec.stage, rec.elapsed_seconds = text, float(elapsed)
        self._dirty.add(rec.id)

    def _on_progress(self, rec: JobRecord, p) -> None:
        # Runs on the worker thread at every step: attribute stores only, no I/O, no locks.
        if p.phase == "loading":
            rec.state, rec.stage = LOADING, "loading the model"
            rec.progress = float(p.fraction)
        else:
            rec.state, rec.stage = RUNNING, "optimizing"
            rec.step, rec.total = int(p.step), int(p.total)
            rec.progress = float(p.fraction)
            rec.loss = None if p.loss is None else float(p.loss)
            rec.eta_seconds = None if p.eta is None else float(p.eta)
            if p.eta:  # the engine's eta is (total - step) / (its measured steps per second)
                rec.steps_per_second = (rec.total - rec.step) / p.eta
        rec.elapsed_seconds = float(p.elapsed)
        self._dirty.add(rec.id)

    def _note_uvs(self, rec: JobRecord) -> None:
        rec.has_uvs = True
        self._dirty.add(rec.id)

    # -- the monitor thread --------------------------------------------------------------------------
    def loop(self, stopping: threading.Event) -> None:
        """Write status.json of the running jobs, when they changed, until ``stopping`` is set."""
        while not stopping.wait(self._status_interval):
            try:
                for rec in self._current():
                    if rec.id in self._dirty:
                        self._dirty.discard(rec.id)
                        self.store.write_status(rec)
            except Exception:
                log.exception("job monitor: could not write status")
