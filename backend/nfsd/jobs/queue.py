"""The server's job queue: jobs kept on disk (``nfsd.jobs.store``), run by one worker thread per slot
(``nfsd.jobs.slots``: a worker process per device, or a Ray actor per GPU: ``nfsd.jobs.executors``).

After a restart, jobs that were ``loading`` or ``running`` are marked ``interrupted`` (re-submit them
with :meth:`JobManager.resubmit`) - under the Ray executor they are queued again, once - ``queued`` jobs
are queued again in their original order, and finished jobs keep serving their files. Pruning (after
every job and at start): at most ``max_finished`` finished jobs are kept (the oldest go first) and
finished jobs older than ``max_age_days`` go; queued and running jobs are never pruned.

The worker threads do no file I/O per step: progress only updates the in-memory record;
``nfsd.jobs.monitor`` writes ``status.json`` and ``preview.png`` from its own thread, so that polling,
snapshots and disk latency never slow a job down.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .dispatch import SlotWorkers
from .events import CancelSignal
from .executors import make_executor
from .job_run import OOM_HINT
from .monitor import JobMonitor
from .outcomes import REQUEUE, after_restart, settle
from .slots import JobQueue, Slot
from .speeds import SpeedBook
from .store import (ACTIVE, CANCELLED, DONE, FAILED, INTERRUPTED, LOADING, QUEUED, JobRecord, JobStore, new_job_id,
                    prunable, read_init_maps)

log = logging.getLogger("nfsd.jobs")


@dataclass
class ManagerConfig:
    """Settings of the job manager.

    Attributes:
        data_dir: where ``jobs/`` lives.
        default_model: model used when a job's settings name none.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` for every job (of the one local worker).
        max_finished: keep at most this many finished (done/failed/cancelled/interrupted) jobs.
        max_age_days: remove finished jobs older than this (None: no age limit).
        status_interval: seconds between ``status.json`` writes while a job runs.
        preview_interval: seconds between preview snapshots while a job runs.
        torch_threads: CPU threads of torch in each worker (0: torch's default).
        executor: ``local`` (worker processes here) | ``ray`` (actors on a Ray cluster).
        devices: local: one worker process per entry (``("cuda:0", "cuda:1")``); empty: one on ``device``.
        ray_address: the cluster to connect to (None: start a local Ray).
        ray_workers: Ray actors (0: one per GPU of the cluster, or per CPU on a CPU-only one).
    """

    data_dir: Path
    default_model: str = "builtin"
    device: str = "auto"
    max_finished: int = 50
    max_age_days: float | None = 30.0
    status_interval: float = 0.5
    preview_interval: float = 2.0
    torch_threads: int = 0
    executor: str = "local"
    devices: tuple[str, ...] = ()
    ray_address: str | None = None
    ray_workers: int = 0


class JobManager:
    """The job queue and one worker thread per slot. Thread-safe; one per server.

    ``start()`` loads the jobs on disk and starts the workers (the slots are made with the manager); ``stop()`` interrupts the
    running jobs (they are marked ``interrupted``) and joins the threads. Queued jobs run first-in
    first-out, but a free slot may take a job a few places back whose model it holds (``slots.pick``).
    """

    def __init__(self, config: ManagerConfig, make_job: Callable | None = None):
        self.config = config
        self.store = JobStore(config.data_dir)
        self.speeds = SpeedBook(Path(config.data_dir) / "speeds.json")  # the time estimate before a job
        # Jobs run in child processes or Ray actors (no GIL shared with the HTTP server, and a crash there
        # cannot take the server down) unless a ``make_job`` factory is given: then in threads here (tests).
        # Made here, so that a Ray cluster that cannot be reached is a ConfigError before the server starts.
        self.executor = make_executor(config, make_job)
        self.slots: list[Slot] = self.executor.slots
        self._lock = threading.RLock()
        self._records: dict[str, JobRecord] = {}
        self._queue = JobQueue()
        self._seq = 0
        self.monitor = JobMonitor(self.store, self._running_records, config.status_interval)
        self._stopping = threading.Event()
        self._workers = SlotWorkers(self.slots, self._lock, self._stopping, self._take, self._run, self._prune)
        self._threads: list[threading.Thread] = []

    # -- life cycle --------------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            for rec in sorted(self.store.load_all(), key=lambda r: r.seq):
                if rec.state in ACTIVE:  # the server stopped under it: queued again (once, on Ray) or ended
                    state, error = after_restart(rec, self.executor.retry_lost)
                    if state == REQUEUE:
                        self._requeue(rec, front=False)
                    else:
                        rec.state, rec.error, rec.eta_seconds, rec.stage = state, error, None, None
                        rec.finished = rec.finished or time.time()
                        self.store.write_status(rec, durable=True)
                elif rec.state == QUEUED:
                    self._queue.add(rec.id)
                self._records[rec.id] = rec
                self._seq = max(self._seq, rec.seq + 1)
            self._prune()
        self._stopping.clear()
        monitor = threading.Thread(target=self.monitor.loop, args=(self._stopping,), name="nfsd-job-monitor", daemon=True)
        monitor.start()
        self._threads = self._workers.start() + [monitor]

    def stop(self, timeout: float = 3.0) -> None:
        """Stop the workers and the monitor. Running jobs are asked to stop; a worker whose job has not
        stopped within ``timeout`` s (a long step, a model still loading) is ended. Each job is recorded
        as cancelled if the user had cancelled it, else as interrupted (re-submittable)."""
        self._stopping.set()
        self._workers.stop(timeout)
        for t in self._threads:
            t.join(timeout)
        self._threads = []
        self.executor.close()

    # -- requests ----------------------------------------------------------------------------------
    def submit(self, mesh_npz: bytes, settings: dict, init_png: bytes | None = None,
               resubmitted_from: str | None = None, init_maps: dict[str, bytes] | None = None) -> JobRecord:
        with self._lock:
            rec = JobRecord(id=new_job_id(), seq=self._seq, created=time.time(), settings=dict(settings),
                            total=int(settings.get("steps") or 0), has_init_texture=init_png is not None,
                            resubmitted_from=resubmitted_from)
            self._seq += 1
            self.store.create(rec, mesh_npz, init_png, init_maps)
            self._records[rec.id] = rec
            self._queue.add(rec.id)
            self._workers.notify()
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
            maps = read_init_maps(self.store.dir(job_id)) if rec.has_init_texture else None
            settings = json.loads(self.store.read_bytes(job_id, "settings.json"))
        return self.submit(mesh, settings, init, resubmitted_from=job_id, init_maps=maps)

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            return self._records.get(job_id)

    def snapshot_record(self, job_id: str) -> tuple[JobRecord, int] | None:
        """A copy of the record and its queue position (1 = next to run, 0 = not queued)."""
        with self._lock:
            rec = self._records.get(job_id)
            if rec is None:
                return None
            return JobRecord(**rec.__dict__), self._queue.position(job_id)

    def list(self) -> list[tuple[JobRecord, int]]:
        with self._lock:
            recs = sorted(self._records.values(), key=lambda r: r.seq, reverse=True)
            return [(JobRecord(**r.__dict__), self._queue.position(r.id)) for r in recs]

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
                for slot in self.slots:
                    if slot.job_id == job_id and slot.cancel is not None:
                        slot.cancel.set()
            return rec

    def delete(self, job_id: str) -> None:
        """Remove a job and its files. KeyError if unknown; ValueError while it runs."""
        with self._lock:
            rec = self._records[job_id]
            if rec.state in ACTIVE:
                raise ValueError(f"job {job_id} is {rec.state}: cancel it first (POST /jobs/{job_id}/cancel)")
            self._queue.remove(job_id)
            del self._records[job_id]
            self.monitor.forget(job_id)
            self.store.delete(job_id)

    def queue_length(self) -> int:
        with self._lock:
            return len(self._queue)

    def running_id(self) -> str | None:
        """The running job of the first busy slot (``running_ids`` for all)."""
        ids = self.running_ids()
        return ids[0] if ids else None

    def running_ids(self) -> list[str]:
        with self._lock:
            return self._workers.running_ids()

    def loading_model(self) -> str | None:
        """The model a running job is loading, or None when no job is in the loading phase."""
        with self._lock:
            for rec in self._running_records():
                if rec.state == LOADING:
                    return self._model_of(rec.id)
            return None

    def workers(self) -> list[dict]:
        """Every slot's ``/health`` entry (``nfsd.jobs.slots.Slot.describe``)."""
        with self._lock:
            return [s.describe(self.executor.kind) for s in self.slots]

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

    # -- what the slots' threads call (nfsd.jobs.dispatch), under the lock but ``_run`` --------------
    def _take(self, slot: Slot) -> tuple[JobRecord, CancelSignal] | None:
        """Hand ``slot`` the job it should run next (``slots.pick``), marked loading; None if none."""
        others_up = any(s.up for s in self.slots if s is not slot)
        job_id = self._queue.take(self._model_of, slot.models(), slot.index, len(self.slots) if others_up else 1)
        if job_id is None:
            return None
        rec = self._records[job_id]
        rec.state, rec.started, rec.progress, rec.worker = LOADING, time.time(), 0.0, slot.name
        slot.job_id, slot.cancel = job_id, CancelSignal()
        if rec.cancel_requested:
            slot.cancel.set()
        self.store.write_status(rec, durable=True)
        return rec, slot.cancel

    def _model_of(self, job_id: str) -> str:
        return self._records[job_id].settings.get("model") or self.config.default_model

    def _run(self, slot: Slot, rec: JobRecord, cancel: CancelSignal) -> None:
        out = slot.runner.run(rec.id, self.store.dir(rec.id), rec.settings, rec.has_init_texture, cancel,
                              self.monitor.events(rec))
        state, error = settle(rec, out, self._stopping.is_set(), self.executor.retry_lost, OOM_HINT.split(": ", 1)[1])
        if state == REQUEUE:
            with self._lock:
                if not rec.cancel_requested:  # (a cancel may have come in meanwhile)
                    log.warning("job %s: %s; it runs again on another worker", rec.id, out.error or "its worker was lost")
                    self._queue.avoid(rec.id, slot.index)
                    self._requeue(rec, front=True)
                    return
            state, error = CANCELLED, None
        if state == DONE:
            rec.step, rec.progress = out.steps_done, 1.0
            if out.steps_per_s:
                rec.steps_per_second = float(out.steps_per_s)
                self.speeds.record(rec.settings, rec.steps_per_second)
        elif out.state == "died" and state != INTERRUPTED:
            log.error("job %s: the worker process exited (code %s)", rec.id, out.exit_code)
        self._finish(rec, state, error)

    def _requeue(self, rec: JobRecord, front: bool) -> None:
        """Queue a job again whose worker was lost (counted in ``rec.retries``, kept on disk)."""
        rec.retries += 1
        rec.state, rec.step, rec.progress, rec.loss, rec.eta_seconds, rec.stage = QUEUED, 0, 0.0, None, None, None
        rec.started = rec.finished = rec.error = rec.worker = None
        self.store.write_status(rec, durable=True)
        self._queue.add(rec.id, front)

    def unload_model(self, timeout: float = 60.0) -> bool:
        """Free the cached models of every worker; False when none was loaded. ValueError while a job runs."""
        return self._workers.unload(timeout)

    def device_and_models(self) -> dict:
        """``{"device", "gpu_name", "gpu_free_bytes", "models": [...]}`` of the first worker, as it last
        reported them (``workers()`` for every worker)."""
        return self.slots[0].runner.device_and_models() if self.slots else {}

    def worker_pid(self) -> int | None:
        """The process id of the first worker, None when jobs run in this process or none is started."""
        return self.slots[0].runner.pid() if self.slots else None

    def _running_records(self) -> list[JobRecord]:
        with self._lock:
            return [self._records[s.job_id] for s in self.slots if s.job_id in self._records]

    def _finish(self, rec: JobRecord, state: str, error: str | None) -> None:
        with self._lock:
            rec.state, rec.error, rec.finished, rec.eta_seconds, rec.stage = state, error, time.time(), None, None
            if state == DONE:
                rec.eta_seconds = 0.0
            self.store.write_status(rec, durable=True)

    # -- pruning -----------------------------------------------------------------------------------
    def _prune(self) -> None:
        """Drop finished jobs beyond ``max_finished`` (oldest first) or older than ``max_age_days``."""
        doomed = prunable(self._records.values(), self.config.max_finished, self.config.max_age_days, time.time())
        for r in doomed:
            log.info("pruning job %s (%s)", r.id, r.state)
            self._records.pop(r.id, None)
            self.monitor.forget(r.id)
            try:
                self.store.delete(r.id)
            except OSError:
                log.exception("could not remove job folder %s", r.id)

