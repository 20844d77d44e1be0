"""The server's job queue: jobs kept on disk (``nfsd.jobs.store``), run one at a time by a single worker.

After a restart, jobs that were ``loading`` or ``running`` are marked ``interrupted`` (re-submit them
with :meth:`JobManager.resubmit`), ``queued`` jobs are queued again in their original order, and
finished jobs keep serving their files. Pruning (after every job and at start): at most
``max_finished`` finished jobs are kept (the oldest go first) and finished jobs older than
``max_age_days`` go; queued and running jobs are never pruned.

Jobs run in the worker process (``nfsd.jobs.worker``). The manager's worker thread does no file I/O per
step: progress only updates the in-memory record; ``nfsd.jobs.monitor`` writes ``status.json`` and
``preview.png`` from its own thread, so that polling, snapshots and disk latency never slow the job down.
"""

from __future__ import annotations

import collections
import json
import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .monitor import JobMonitor
from .store import ACTIVE, CANCELLED, DONE, FAILED, FINISHED, INTERRUPTED, LOADING, QUEUED, JobRecord, JobStore, new_job_id
from .events import CancelSignal
from .runner import ProcessRunner, ThreadRunner
from .speeds import SpeedBook
from .worker import OOM_HINT

log = logging.getLogger("nfsd.jobs")

# Exit codes of a worker process ended by a shutdown signal (SIGTERM / SIGINT to the server's process
# group), not by a crash or the out-of-memory killer (SIGKILL).
_SHUTDOWN_CODES = (-signal.SIGTERM, -signal.SIGINT)


@dataclass
class ManagerConfig:
    """Settings of the job manager.

    Attributes:
        data_dir: where ``jobs/`` lives.
        default_model: model used when a job's settings name none.
        device: ``auto`` | ``cpu`` | ``cuda`` for every job.
        max_finished: keep at most this many finished (done/failed/cancelled/interrupted) jobs.
        max_age_days: remove finished jobs older than this (None: no age limit).
        status_interval: seconds between ``status.json`` writes while a job runs.
        preview_interval: seconds between preview snapshots while a job runs.
        torch_threads: CPU threads of torch in the worker process (0: torch's default).
    """

    data_dir: Path
    default_model: str = "builtin"
    device: str = "auto"
    max_finished: int = 50
    max_age_days: float | None = 30.0
    status_interval: float = 0.5
    preview_interval: float = 2.0
    torch_threads: int = 0


class JobManager:
    """The job queue and its single worker thread. Thread-safe; one per server.

    ``start()`` loads the jobs on disk and starts the worker; ``stop()`` interrupts the running job
    (it is marked ``interrupted``) and joins the threads. Queued jobs run first-in first-out.
    """

    def __init__(self, config: ManagerConfig, make_job: Callable | None = None):
        self.config = config
        self.store = JobStore(config.data_dir)
        self.speeds = SpeedBook(Path(config.data_dir) / "speeds.json")  # the time estimate before a job
        # Jobs run in a child process (no GIL shared with the HTTP server, and a crash there cannot take
        # the server down) unless a ``make_job`` factory is given: then in a thread here (tests' fakes).
        self._runner = ProcessRunner(config) if make_job is None else ThreadRunner(config, make_job)
        self._commands: collections.deque = collections.deque()
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._records: dict[str, JobRecord] = {}
        self._queue: collections.deque[str] = collections.deque()
        self._seq = 0
        self._current_id: str | None = None
        self._current_cancel: CancelSignal | None = None
        self.monitor = JobMonitor(self.store, self._running_record, config.status_interval)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- life cycle --------------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            for rec in sorted(self.store.load_all(), key=lambda r: r.seq):
                if rec.state in ACTIVE:
                    # The server stopped under it; a job the user had cancelled stays cancelled.
                    rec.state = CANCELLED if rec.cancel_requested else INTERRUPTED
                    rec.error = None if rec.cancel_requested else _interrupted_message(rec)
                    rec.finished = rec.finished or time.time()
                    rec.eta_seconds, rec.stage = None, None
                    self.store.write_status(rec, durable=True)
                elif rec.state == QUEUED:
                    self._queue.append(rec.id)
                self._records[rec.id] = rec
                self._seq = max(self._seq, rec.seq + 1)
            self._prune()
        self._stopping.clear()
        self._runner.start()
        self._threads = [
            threading.Thread(target=self._worker_loop, name="nfsd-gpu-worker", daemon=True),
            threading.Thread(target=self.monitor.loop, args=(self._stopping,), name="nfsd-job-monitor", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Stop the worker and the monitor. The running job is asked to stop; when it has not stopped
        within ``timeout`` s (a long step, a model still loading) its worker process is ended. The job is
        recorded as cancelled if the user had cancelled it, else as interrupted (re-submittable)."""
        self._stopping.set()
        with self._lock:
            if self._current_cancel is not None:
                self._current_cancel.set()
            self._wake.notify_all()
        worker = self._threads[:1]
        for t in worker:
            t.join(timeout)
        if any(t.is_alive() for t in worker):
            self._runner.kill()
            for t in worker:
                t.join(2.0)
        self._runner.close(timeout=1.0)
        for t in self._threads:
            t.join(timeout)
        self._threads = []

    # -- requests ----------------------------------------------------------------------------------
    def submit(self, mesh_npz: bytes, settings: dict, init_png: bytes | None = None,
               resubmitted_from: str | None = None) -> JobRecord:
        with self._lock:
            rec = JobRecord(id=new_job_id(), seq=self._seq, created=time.time(), settings=dict(settings),
                            total=int(settings.get("steps") or 0), has_init_texture=init_png is not None,
                            resubmitted_from=resubmitted_from)
            self._seq += 1
            self.store.create(rec, mesh_npz, init_png)
            self._records[rec.id] = rec
            self._queue.append(rec.id)
            self._wake.notify_all()
            return rec

    def resubmit(self, job_id: str) -> JobRecord:
        """A new job with the inputs of a finished (not done) job. KeyError if unknown, ValueError if not allowed."""
        with self._lock:
            rec = self._records[job_id]
            if rec.state not in (FAILED, CANCELLED, INTERRUPTED):
                raise ValueError(f"job {job_id} is {rec.state}; only failed, cancelled or interrupted jobs can be "
                                 "re-submitted (a done job: submit its mesh again with new settings)")
            mesh = self.store.read_bytes(job_id, "mesh.npz")
            init = self.store.read_bytes(job_id, "init_texture.png") if rec.has_init_texture else None
            settings = json.loads(self.store.read_bytes(job_id, "settings.json"))
        return self.submit(mesh, settings, init, resubmitted_from=job_id)

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            return self._records.get(job_id)

    def snapshot_record(self, job_id: str) -> tuple[JobRecord, int] | None:
        """A copy of the record and its queue position (1 = next to run, 0 = not queued)."""
        with self._lock:
            rec = self._records.get(job_id)
            if rec is None:
                return None
            return JobRecord(**rec.__dict__), self._position(job_id)

    def list(self) -> list[tuple[JobRecord, int]]:
        with self._lock:
            recs = sorted(self._records.values(), key=lambda r: r.seq, reverse=True)
            return [(JobRecord(**r.__dict__), self._position(r.id)) for r in recs]

    def _position(self, job_id: str) -> int:
        try:
            return self._queue.index(job_id) + 1
        except ValueError:
            return 0

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued job at once, or ask the running one to stop at its next step."""
        with self._lock:
            rec = self._records[job_id]
            if rec.state == QUEUED:
                self._queue.remove(job_id)
                self._finish(rec, CANCELLED, None)
            elif rec.state in ACTIVE:
                if not rec.cancel_requested:
                    rec.cancel_requested = True
                    self.store.write_status(rec, durable=True)
                if self._current_cancel is not None and self._current_id == job_id:
                    self._current_cancel.set()
            return rec

    def delete(self, job_id: str) -> None:
        """Remove a job and its files. KeyError if unknown; ValueError while it runs."""
        with self._lock:
            rec = self._records[job_id]
            if rec.state in ACTIVE:
                raise ValueError(f"job {job_id} is {rec.state}: cancel it first (POST /jobs/{job_id}/cancel)")
            if rec.state == QUEUED:
                self._queue.remove(job_id)
            del self._records[job_id]
            self.monitor.forget(job_id)
            self.store.delete(job_id)

    def queue_length(self) -> int:
        with self._lock:
            return len(self._queue)

    def running_id(self) -> str | None:
        with self._lock:
            return self._current_id

    def loading_model(self) -> str | None:
        """The model the running job is loading, or None when no job is in the loading phase."""
        with self._lock:
            rec = self._records.get(self._current_id) if self._current_id else None
            if rec is None or rec.state != LOADING:
                return None
            return rec.settings.get("model") or self.config.default_model

    def preview_cached(self, job_id: str) -> bytes | None:
        """The latest preview PNG of ``job_id`` if it is the job that wrote the last one (no disk access)."""
        return self.monitor.preview_cached(job_id)

    def preview_bytes(self, job_id: str) -> bytes | None:
        """The latest preview PNG of ``job_id`` or None."""
        return self.monitor.preview_bytes(job_id)

    def uvs_bytes(self, job_id: str) -> bytes | None:
        """The ``uvs.npz`` of ``job_id`` (see :func:`uvs_npz`), or None while its UVs are not known."""
        try:
            return self.store.read_bytes(job_id, "uvs.npz")
        except FileNotFoundError:
            return None

    def result_path(self, job_id: str) -> Path:
        return self.store.path(job_id, "result.npz")

    # -- the worker --------------------------------------------------------------------------------
    def _worker_loop(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                while not self._queue and not self._commands and not self._stopping.is_set():
                    self._wake.wait(1.0)
                    self._runner.idle()
                if self._stopping.is_set():
                    return
                command = self._commands.popleft() if self._commands else None
            if command is not None:
                self._run_command(*command)
                continue
            with self._lock:
                if not self._queue:
                    continue
                job_id = self._queue.popleft()
                rec = self._records[job_id]
                rec.state, rec.started, rec.progress = LOADING, time.time(), 0.0
                self._current_id, self._current_cancel = job_id, CancelSignal()
                if rec.cancel_requested or self._stopping.is_set():
                    self._current_cancel.set()
                cancel = self._current_cancel
                self.store.write_status(rec, durable=True)
            try:
                self._run(rec, cancel)
            except Exception:  # the worker must survive anything a job does
                log.exception("job %s: unexpected error outside the job", job_id)
            finally:
                with self._lock:
                    self._current_id, self._current_cancel = None, None
                    self._prune()

    def _run(self, rec: JobRecord, cancel: CancelSignal) -> None:
        out = self._runner.run(rec.id, self.store.dir(rec.id), rec.settings, rec.has_init_texture, cancel,
                               self.monitor.events(rec))
        if out.state == "done":
            rec.step, rec.progress = out.steps_done, 1.0
            if out.steps_per_s:
                rec.steps_per_second = float(out.steps_per_s)
                self.speeds.record(rec.settings, rec.steps_per_second)
            self._finish(rec, DONE, None)
        elif out.state == "failed":
            self._finish(rec, FAILED, out.error)
        elif out.state == "cancelled" or self._stopping.is_set() or rec.cancel_requested or \
                out.exit_code in _SHUTDOWN_CODES:
            # Ended by the user's cancel, or by a shutdown (the server stopping, its worker process
            # terminated with it): then interrupted, to be re-submitted, unless the user had cancelled it.
            stopped = self._stopping.is_set() or out.state == "died"
            state = INTERRUPTED if stopped and not rec.cancel_requested else CANCELLED
            self._finish(rec, state, _interrupted_message(rec) if state == INTERRUPTED else None)
        else:
            log.error("job %s: the worker process exited (code %s)", rec.id, out.exit_code)
            self._finish(rec, FAILED, f"the worker process stopped unexpectedly (exit code {out.exit_code}); if the "
                                      f"machine ran out of memory, {OOM_HINT.split(': ', 1)[1]}")

    def _run_command(self, name: str, done: threading.Event, box: list) -> None:
        """A command for the worker while no job runs (only ``unload`` so far)."""
        try:
            box.append(self._runner.unload())
        except Exception as exc:
            box.append(exc)
        finally:
            done.set()

    def unload_model(self, timeout: float = 60.0) -> bool:
        """Free the cached model in the worker; False when none was loaded. ValueError while a job runs."""
        done, box = threading.Event(), []
        with self._lock:
            if self._current_id is not None:
                raise ValueError("a job is running and uses the model; cancel it or wait, then unload")
            self._commands.append(("unload", done, box))
            self._wake.notify_all()
        if not done.wait(timeout):
            raise TimeoutError("the worker did not answer the unload request in time")
        if isinstance(box[0], Exception):
            raise box[0]
        return box[0]

    def device_and_models(self) -> dict:
        """``{"device", "gpu_name", "gpu_free_bytes", "models": [...]}`` as the worker last reported them."""
        return self._runner.device_and_models()

    def worker_pid(self) -> int | None:
        """The process id of the worker process, None when jobs run in this process or none is started."""
        return self._runner.pid()

    def _running_record(self) -> JobRecord | None:
        with self._lock:
            return self._records.get(self._current_id) if self._current_id else None

    def _finish(self, rec: JobRecord, state: str, error: str | None) -> None:
        with self._lock:
            rec.state, rec.error, rec.finished, rec.eta_seconds, rec.stage = state, error, time.time(), None, None
            if state == DONE:
                rec.eta_seconds = 0.0
            self.store.write_status(rec, durable=True)

    # -- pruning -----------------------------------------------------------------------------------
    def _prune(self) -> None:
        """Drop finished jobs beyond ``max_finished`` (oldest first) or older than ``max_age_days``."""
        finished = sorted((r for r in self._records.values() if r.state in FINISHED),
                          key=lambda r: (r.finished or r.created, r.seq), reverse=True)
        doomed = finished[self.config.max_finished:] if self.config.max_finished >= 0 else []
        if self.config.max_age_days is not None:
            cutoff = time.time() - self.config.max_age_days * 86400.0
            doomed += [r for r in finished[: self.config.max_finished] if (r.finished or r.created) < cutoff]
        for r in doomed:
            log.info("pruning job %s (%s)", r.id, r.state)
            self._records.pop(r.id, None)
            self.monitor.forget(r.id)
            try:
                self.store.delete(r.id)
            except OSError:
                log.exception("could not remove job folder %s", r.id)


def _interrupted_message(rec: JobRecord) -> str:
    return (f"the server stopped while this job ran (step {rec.step} of {rec.total}); re-submit it with "
            f"POST /jobs/{rec.id}/resubmit")
