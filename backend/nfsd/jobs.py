"""The server's job queue: jobs kept on disk, run one at a time by a single GPU worker thread.

Every job lives in ``DATA_DIR/jobs/<id>/``::

    mesh.npz           the uploaded wire-format mesh, as received
    settings.json      the validated settings (model resolved to the server's default when absent)
    init_texture.png   optional texture to continue from
    status.json        JobRecord.to_dict(), rewritten at most every ``status_interval`` seconds while running
    uvs.npz            the per-corner UVs the texture is laid out on (``uvs_npz``), written as soon as the
                       job's mesh is prepared (its UVs unwrapped if it had none), before the model loads
    preview.png        the latest texture snapshot (top row first, as PNG files are)
    result.npz         the result (docs/API.md), written once when the job is done

Each file is written to a temporary name and renamed into place (``os.replace``), and a new job's
folder is assembled under a temporary name and renamed in one step, so a crash never leaves a half
written file under a real name.

After a restart, jobs that were ``loading`` or ``running`` are marked ``interrupted`` (re-submit them
with :meth:`JobManager.resubmit`), ``queued`` jobs are queued again in their original order, and
finished jobs keep serving their files. Pruning (after every job and at start): at most
``max_finished`` finished jobs are kept (the oldest go first) and finished jobs older than
``max_age_days`` go; queued and running jobs are never pruned.

The worker thread does no file I/O per step: the progress callback only updates the in-memory record;
a separate monitor thread writes ``status.json`` (every ``status_interval`` s) and ``preview.png``
(every ``preview_interval`` s) so that polling, snapshots and disk latency never slow the job down.
"""

from __future__ import annotations

import collections
import io
import json
import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import NfsdError, OutOfMemory
from .texture import atomic_write_bytes, decode_png, encode_png as _encode_png

log = logging.getLogger("nfsd.jobs")

QUEUED, LOADING, RUNNING = "queued", "loading", "running"
DONE, FAILED, CANCELLED, INTERRUPTED = "done", "failed", "cancelled", "interrupted"
STATES = (QUEUED, LOADING, RUNNING, DONE, FAILED, CANCELLED, INTERRUPTED)
ACTIVE = frozenset({LOADING, RUNNING})
FINISHED = frozenset({DONE, FAILED, CANCELLED, INTERRUPTED})

OOM_HINT = ("the GPU ran out of memory: lower render_size or batch (then texture_size), close other GPU "
            "programs, or unload other models, and submit again")


def new_job_id() -> str:
    """32 lowercase hex characters (a random UUID4)."""
    return uuid.uuid4().hex


def is_job_id(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def atomic_write(path: Path, data: bytes, durable: bool = True) -> None:
    """``nfsd.texture.atomic_write_bytes``, durable by default (job files must survive a crash)."""
    atomic_write_bytes(path, data, durable)


def encode_png(image: np.ndarray) -> bytes:
    """A preview PNG: ``nfsd.texture.encode_png`` at the fastest compression (polled, not kept)."""
    return _encode_png(image, compress_level=1)


def uvs_npz(uvs: np.ndarray, generated: bool) -> bytes:
    """Per-corner ``uvs`` float32 ``[F, 3, 2]`` -> the ``GET /jobs/{id}/uvs`` .npz bytes (docs/API.md):
    ``uvs`` float32 ``[F, 3, 2]`` and ``uvs_generated`` bool scalar (True: the backend unwrapped)."""
    uvs = np.asarray(uvs, dtype=np.float32)
    if uvs.ndim != 3 or uvs.shape[1:] != (3, 2):
        raise ValueError(f"uvs must be [F, 3, 2], got {list(uvs.shape)}")
    buf = io.BytesIO()
    np.savez(buf, uvs=uvs, uvs_generated=np.array(bool(generated)))
    return buf.getvalue()


def store_job_uvs(folder: Path, job) -> bool:
    """Write ``uvs.npz`` for a constructed job (anything with a ``mesh`` holding ``uvs`` and
    ``uvs_generated``, as ``nfsd.engine.TextureJob`` has) into its folder; False when it has none."""
    mesh = getattr(job, "mesh", None)
    uvs = getattr(mesh, "uvs", None)
    if uvs is None:
        return False
    try:
        atomic_write(Path(folder) / "uvs.npz", uvs_npz(uvs, bool(getattr(mesh, "uvs_generated", False))))
    except (OSError, NfsdError):  # only the early preview needs them; the result carries them again
        log.exception("could not write the UVs to %s", folder)
        return False
    return True


def result_npz(result, job_id: str) -> bytes:
    """A ``TextureResult`` -> the result .npz bytes of docs/API.md (``nfsd.outputs.result_npz``), meta with the job id."""
    from .outputs import report_dict, result_npz as encode

    meta = report_dict(result)
    meta["job_id"] = job_id
    return encode(result, meta)


@dataclass
class JobRecord:
    """What the server knows about a job; ``status.json`` holds ``to_dict()``.

    Times are Unix seconds (``created``, ``started``, ``finished``) or durations in seconds.
    ``seq`` orders jobs first-in first-out across restarts. ``has_uvs``: ``uvs.npz`` exists.
    """

    id: str
    seq: int
    created: float
    settings: dict
    state: str = QUEUED
    step: int = 0
    total: int = 0
    loss: float | None = None
    eta_seconds: float | None = None
    elapsed_seconds: float = 0.0
    progress: float = 0.0
    steps_per_second: float | None = None
    preview_step: int | None = None
    error: str | None = None
    started: float | None = None
    finished: float | None = None
    has_init_texture: bool = False
    has_uvs: bool = False
    resubmitted_from: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "JobRecord":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class JobStore:
    """The job folders under ``data_dir/jobs``: create, read, write atomically, delete."""

    def __init__(self, data_dir: Path):
        self.root = Path(data_dir).expanduser() / "jobs"
        self.root.mkdir(parents=True, exist_ok=True)

    def dir(self, job_id: str) -> Path:
        return self.root / job_id

    def path(self, job_id: str, name: str) -> Path:
        return self.root / job_id / name

    def create(self, record: JobRecord, mesh_npz: bytes, init_png: bytes | None) -> None:
        """Write a new job's inputs and status under a temporary folder, then rename it into place."""
        tmp = self.root / f".new-{record.id}"
        tmp.mkdir()
        try:
            (tmp / "mesh.npz").write_bytes(mesh_npz)
            (tmp / "settings.json").write_text(json.dumps(record.settings, indent=1))
            if init_png is not None:
                (tmp / "init_texture.png").write_bytes(init_png)
            (tmp / "status.json").write_text(json.dumps(record.to_dict(), indent=1))
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            os.replace(tmp, self.dir(record.id))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def write_status(self, record: JobRecord, durable: bool = False) -> None:
        if self.dir(record.id).is_dir():
            atomic_write(self.path(record.id, "status.json"), json.dumps(record.to_dict(), indent=1).encode(), durable)

    def write_file(self, job_id: str, name: str, data: bytes, durable: bool = True) -> None:
        if self.dir(job_id).is_dir():
            atomic_write(self.path(job_id, name), data, durable)

    def read_bytes(self, job_id: str, name: str) -> bytes:
        return self.path(job_id, name).read_bytes()

    def load_all(self) -> list[JobRecord]:
        """Every job on disk; folders with no readable status.json are logged and left alone."""
        records = []
        for d in sorted(self.root.iterdir()):
            if d.name.startswith(".") or not d.is_dir():
                if d.name.startswith((".new-", ".del-")):
                    shutil.rmtree(d, ignore_errors=True)  # a creation or deletion cut short by a crash
                continue
            try:
                rec = JobRecord.from_dict(json.loads((d / "status.json").read_text()))
                if rec.id != d.name:
                    raise ValueError(f"status.json names job {rec.id!r}")
            except (OSError, ValueError, TypeError) as exc:
                log.warning("skipping job folder %s: unreadable status.json (%s)", d, exc)
                continue
            records.append(rec)
        return records

    def delete(self, job_id: str) -> None:
        """Rename first so the job disappears at once, even if removing its files takes a while."""
        src = self.dir(job_id)
        if not src.is_dir():
            return
        trash = self.root / f".del-{job_id}-{uuid.uuid4().hex[:6]}"
        os.replace(src, trash)
        shutil.rmtree(trash, ignore_errors=True)


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
        # Jobs run in a child process (no GIL shared with the HTTP server, and a crash there cannot take
        # the server down) unless a ``make_job`` factory is given: then in a thread here (tests' fakes).
        self._isolated = make_job is None
        self._make_job = make_job or _make_texture_job
        self._child: _Child | None = None
        self._child_info: dict = {}
        self._commands: collections.deque = collections.deque()
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._records: dict[str, JobRecord] = {}
        self._queue: collections.deque[str] = collections.deque()
        self._seq = 0
        self._current_id: str | None = None
        self._current_job = None
        self._cancel_requested: set[str] = set()
        self._dirty = False
        self._preview_cache: tuple[str, bytes] | None = None  # (job id, PNG) of the latest snapshot
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- life cycle --------------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            for rec in sorted(self.store.load_all(), key=lambda r: r.seq):
                if rec.state in ACTIVE:
                    rec.state = INTERRUPTED
                    rec.error = (f"the server stopped while this job ran (step {rec.step} of {rec.total}); "
                                 f"re-submit it with POST /jobs/{rec.id}/resubmit")
                    rec.finished = rec.finished or time.time()
                    rec.eta_seconds = None
                    self.store.write_status(rec, durable=True)
                elif rec.state == QUEUED:
                    self._queue.append(rec.id)
                self._records[rec.id] = rec
                self._seq = max(self._seq, rec.seq + 1)
            self._prune()
        self._stopping.clear()
        if self._isolated:
            self._ensure_child()  # start-up (imports, CUDA init) overlaps with the server's own
        self._threads = [
            threading.Thread(target=self._worker_loop, name="nfsd-gpu-worker", daemon=True),
            threading.Thread(target=self._monitor_loop, name="nfsd-job-monitor", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        with self._lock:
            if self._current_job is not None:
                self._current_job.cancel()
            self._wake.notify_all()
        for t in self._threads[:1]:
            t.join(timeout)
        if self._child is not None:
            self._child.close()
            self._child = None
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
                self._cancel_requested.add(job_id)
                if self._current_job is not None and self._current_id == job_id:
                    self._current_job.cancel()
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
            if self._preview_cache is not None and self._preview_cache[0] == job_id:
                self._preview_cache = None
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
        cached = self._preview_cache
        return cached[1] if cached is not None and cached[0] == job_id else None

    def preview_bytes(self, job_id: str) -> bytes | None:
        """The latest preview PNG of ``job_id`` or None. Read whole: the file may be replaced meanwhile."""
        cached = self.preview_cached(job_id)
        if cached is not None:
            return cached
        try:
            return self.store.read_bytes(job_id, "preview.png")
        except FileNotFoundError:
            return None

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
                    self._drain_child()
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
                self._current_id = job_id
                self.store.write_status(rec, durable=True)
            try:
                self._run(rec)
            except Exception:  # the worker must survive anything a job does
                log.exception("job %s: unexpected error outside the job", job_id)
            finally:
                with self._lock:
                    self._current_id, self._current_job = None, None
                    self._cancel_requested.discard(job_id)
                    self._prune()

    def _run(self, rec: JobRecord) -> None:
        if self._isolated:
            self._run_in_child(rec)
        else:
            self._run_here(rec)

    def _run_here(self, rec: JobRecord) -> None:
        try:
            mesh_npz = self.store.read_bytes(rec.id, "mesh.npz")
            init_png = self.store.read_bytes(rec.id, "init_texture.png") if rec.has_init_texture else None
            job = self._make_job(mesh_npz, rec.settings, init_png, self.config)
            self._note_uvs(rec, store_job_uvs(self.store.dir(rec.id), job))
            with self._lock:
                self._current_job = job
                cancelled_early = rec.id in self._cancel_requested or self._stopping.is_set()
            if cancelled_early:
                job.cancel()
            result = job.run(lambda p: self._on_progress(rec, p))
        except NfsdError as exc:
            if isinstance(exc, OutOfMemory):
                _free_gpu_memory()
            self._finish(rec, FAILED, str(exc))
            return
        except Exception as exc:
            if _is_cuda_oom(exc):
                log.warning("job %s: CUDA out of memory", rec.id)
                _free_gpu_memory()
                self._finish(rec, FAILED, f"{OOM_HINT} ({str(exc).splitlines()[0] if str(exc) else 'OOM'})")
                return
            log.exception("job %s failed", rec.id)
            self._finish(rec, FAILED, f"{type(exc).__name__}: {exc}")
            return
        if result.texture is not None:
            self._write_preview(rec, np.asarray(result.texture), result.steps_done)
        if result.cancelled:
            state = INTERRUPTED if self._stopping.is_set() and rec.id not in self._cancel_requested else CANCELLED
            msg = (f"the server stopped while this job ran (step {rec.step} of {rec.total}); re-submit it with "
                   f"POST /jobs/{rec.id}/resubmit") if state == INTERRUPTED else None
            self._finish(rec, state, msg)
            return
        try:
            data = result_npz(result, rec.id)
            self.store.write_file(rec.id, "result.npz", data)
        except Exception as exc:
            log.exception("job %s: could not write its result", rec.id)
            self._finish(rec, FAILED, f"could not write the result: {type(exc).__name__}: {exc}")
            return
        rec.step = int(result.steps_done)
        rec.progress = 1.0
        rate = result.timings.get("steps_per_s") if isinstance(result.timings, dict) else None
        if rate:
            rec.steps_per_second = float(rate)
        self._finish(rec, DONE, None)

    # -- the worker process -------------------------------------------------------------------------
    def _ensure_child(self) -> "_Child":
        if self._child is None or not self._child.process.is_alive():
            if self._child is not None:
                self._child.close()
            self._child = _Child(self.config)
        return self._child

    def _drain_child(self) -> None:
        """Read what an idle worker sent (its device report after start-up) so /health is current."""
        child = self._child
        try:
            while child is not None and child.conn.poll():
                msg = child.recv()
                if msg is None:
                    break
                if msg[0] == "info":
                    self._child_info = msg[1]
        except (OSError, EOFError):
            pass

    def _run_in_child(self, rec: JobRecord) -> None:
        from .engine import Progress

        child = self._ensure_child()
        child.send(("run", rec.id, str(self.store.dir(rec.id)), rec.settings, rec.has_init_texture))
        with self._lock:
            self._current_job = child
            if rec.id in self._cancel_requested or self._stopping.is_set():
                child.cancel()
        while True:
            msg = child.recv()
            if msg is None:  # the process died: CUDA fatal error, killed for memory, segfault...
                code = child.exitcode()
                self._child = None
                if self._stopping.is_set():
                    self._finish(rec, INTERRUPTED, f"the server stopped while this job ran (step {rec.step} of "
                                                   f"{rec.total}); re-submit it with POST /jobs/{rec.id}/resubmit")
                else:
                    log.error("job %s: the worker process exited (code %s)", rec.id, code)
                    self._finish(rec, FAILED, f"the worker process stopped unexpectedly (exit code {code}); if the "
                                              f"machine ran out of memory, {OOM_HINT.split(': ', 1)[1]}")
                return
            kind = msg[0]
            if kind == "progress":
                self._on_progress(rec, Progress(*msg[1:]))
            elif kind == "preview":
                self._store_preview(rec, msg[2], msg[1])
            elif kind == "uvs":
                self._note_uvs(rec, True)
            elif kind == "info":
                self._child_info = msg[1]
            elif kind == "device":
                self._child_info = dict(self._child_info, **msg[1])
            elif kind == "end":
                outcome, payload = msg[1], msg[2]
                break
        if outcome == "failed":
            self._finish(rec, FAILED, payload["error"])
        elif outcome == "cancelled":
            state = INTERRUPTED if self._stopping.is_set() and rec.id not in self._cancel_requested else CANCELLED
            msg_ = (f"the server stopped while this job ran (step {rec.step} of {rec.total}); re-submit it with "
                    f"POST /jobs/{rec.id}/resubmit") if state == INTERRUPTED else None
            self._finish(rec, state, msg_)
        else:
            rec.step, rec.progress = int(payload["steps_done"]), 1.0
            if payload.get("steps_per_s"):
                rec.steps_per_second = float(payload["steps_per_s"])
            self._finish(rec, DONE, None)

    def _run_command(self, name: str, done: threading.Event, box: list) -> None:
        """A command for the worker process while no job runs (only ``unload`` so far)."""
        try:
            if not self._isolated:
                from .prior import unload_all

                box.append(unload_all())
                return
            if self._child is None or not self._child.process.is_alive():
                box.append(False)  # no process, no model
                return
            self._child.send(("unload",))
            while True:
                msg = self._child.recv()
                if msg is None:
                    self._child = None
                    box.append(False)
                    return
                if msg[0] == "info":
                    self._child_info = msg[1]
                elif msg[0] == "unloaded":
                    box.append(bool(msg[1]))
                    return
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
        if not self._isolated:
            from .engine import device_info
            from .prior import loaded_models

            return dict(device_info(), models=loaded_models())
        info = dict(self._child_info)
        if not info:
            info = {"device": _guess_device(self.config.device), "gpu_name": None, "gpu_free_bytes": None, "models": []}
        return info

    def _on_progress(self, rec: JobRecord, p) -> None:
        # Runs on the worker thread at every step: attribute stores only, no I/O, no locks.
        if p.phase == "loading":
            rec.state = LOADING
            rec.progress = float(p.fraction)
        else:
            rec.state = RUNNING
            rec.step, rec.total = int(p.step), int(p.total)
            rec.progress = float(p.fraction)
            rec.loss = None if p.loss is None else float(p.loss)
            rec.eta_seconds = None if p.eta is None else float(p.eta)
            if p.eta:  # the engine's eta is (total - step) / (its measured steps per second)
                rec.steps_per_second = (rec.total - rec.step) / p.eta
        rec.elapsed_seconds = float(p.elapsed)
        self._dirty = True

    def _note_uvs(self, rec: JobRecord, stored: bool) -> None:
        if stored:
            rec.has_uvs = True
            self._dirty = True

    def _finish(self, rec: JobRecord, state: str, error: str | None) -> None:
        with self._lock:
            rec.state, rec.error, rec.finished, rec.eta_seconds = state, error, time.time(), None
            if state == DONE:
                rec.eta_seconds = 0.0
            self.store.write_status(rec, durable=True)

    # -- the monitor: status.json and preview.png off the worker thread ---------------------------
    def _monitor_loop(self) -> None:
        last_preview = 0.0
        while not self._stopping.wait(self.config.status_interval):
            try:
                with self._lock:
                    job_id, job = self._current_id, self._current_job
                    rec = self._records.get(job_id) if job_id else None
                if rec is None:
                    continue
                if self._dirty:
                    self._dirty = False
                    self.store.write_status(rec)
                now = time.monotonic()
                if job is not None and rec.state == RUNNING and now - last_preview >= self.config.preview_interval:
                    step = rec.step
                    if step != rec.preview_step:
                        snap = job.snapshot()
                        if snap is not None:
                            self._write_preview(rec, snap, step)
                    last_preview = now
            except Exception:
                log.exception("job monitor: could not write status or preview")

    def _write_preview(self, rec: JobRecord, texture: np.ndarray, step: int) -> None:
        self._store_preview(rec, encode_png(texture), step)

    def _store_preview(self, rec: JobRecord, data: bytes, step: int) -> None:
        try:
            self.store.write_file(rec.id, "preview.png", data, durable=False)
            self._preview_cache = (rec.id, data)
            rec.preview_step = int(step)
        except (OSError, NfsdError):
            log.exception("job %s: could not write its preview", rec.id)

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
            if self._preview_cache is not None and self._preview_cache[0] == r.id:
                self._preview_cache = None
            try:
                self.store.delete(r.id)
            except OSError:
                log.exception("could not remove job folder %s", r.id)


def _is_cuda_oom(exc: BaseException) -> bool:
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _free_gpu_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


def _make_texture_job(mesh_npz: bytes, settings: dict, init_png: bytes | None, config: ManagerConfig):
    """The engine's TextureJob for a job's stored inputs (the default ``make_job`` of JobManager)."""
    from .engine import TextureConfig, TextureJob
    from .wire import read_wire_npz

    mesh = read_wire_npz(mesh_npz)
    cfg = TextureConfig.from_dict(job_config_dict(settings, config.default_model, config.device))
    cfg.validate()
    init = decode_png(init_png) if init_png is not None else None
    return TextureJob(mesh, cfg, init_texture=init)


def job_config_dict(settings: dict, default_model: str, device: str) -> dict:
    """Job settings (docs/API.md keys) -> the keyword arguments of ``TextureConfig``."""
    d = {k: v for k, v in settings.items() if v is not None}
    d["model"] = d.get("model") or default_model
    d["device"] = device
    return d


# ---------------------------------------------------------------------------------------------
# The worker process

def _guess_device(device: str) -> str:
    if device != "auto":
        return "cuda" if device.startswith("cuda") else device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class _Child:
    """The worker process and the parent's end of its pipe. ``recv`` returns None once the process is gone."""

    def __init__(self, config: ManagerConfig):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold CUDA or threads
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=_child_main, name="nfsd-gpu-worker",
            args=(child_conn, config.default_model, config.device, config.preview_interval, config.torch_threads),
            daemon=True,
        )
        self.process.start()
        child_conn.close()
        self._send_lock = threading.Lock()

    def send(self, msg) -> None:
        try:
            with self._send_lock:
                self.conn.send(msg)
        except (OSError, ValueError):
            pass  # the process is gone; recv() reports it

    def recv(self):
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            return None

    def cancel(self) -> None:
        self.send(("cancel",))

    def snapshot(self):
        return None  # previews arrive as messages

    def exitcode(self):
        self.process.join(2.0)
        return self.process.exitcode

    def close(self, timeout: float = 10.0) -> None:
        self.send(("exit",))
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5.0)
        self.conn.close()


def _child_info() -> dict:
    from .engine import device_info
    from .prior import loaded_models

    return dict(device_info(), models=loaded_models())


def _child_main(conn, default_model: str, device: str, preview_interval: float, torch_threads: int) -> None:
    """Entry point of the worker process: runs one job at a time as the parent asks; exits with the parent."""
    import torch

    if torch_threads:
        torch.set_num_threads(torch_threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    send_lock = threading.Lock()
    state: dict = {"job": None, "cancel": False}

    def send(msg) -> None:
        with send_lock:
            conn.send(msg)

    config = ManagerConfig(data_dir=Path("."), default_model=default_model, device=device,
                           preview_interval=preview_interval)
    send(("info", _child_info()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            os._exit(0)  # the server is gone: never outlive it
        if msg[0] == "run":
            state["job"], state["cancel"] = None, False
            threading.Thread(target=_child_run, args=(send, state, config, *msg[1:]), daemon=True).start()
        elif msg[0] == "cancel":
            state["cancel"] = True
            if state["job"] is not None:
                state["job"].cancel()
        elif msg[0] == "unload":
            from .prior import unload_all

            had = unload_all()
            send(("info", _child_info()))
            send(("unloaded", had))
        elif msg[0] == "exit":
            if state["job"] is not None:
                state["job"].cancel()
            return


def _child_run(send, state: dict, config: ManagerConfig, job_id: str, job_dir: str, settings: dict,
               has_init: bool) -> None:
    folder = Path(job_dir)
    finished = threading.Event()
    try:
        init_png = (folder / "init_texture.png").read_bytes() if has_init else None
        job = _make_texture_job((folder / "mesh.npz").read_bytes(), settings, init_png, config)
        # The UVs are final once the job exists (unwrapped if the mesh had none): clients can lay the
        # live preview on the mesh from now on, long before the result.
        if store_job_uvs(folder, job):
            send(("uvs",))
        state["job"] = job
        if state["cancel"]:
            job.cancel()
        last = {"step": -1, "value": 0}

        def on_progress(p) -> None:
            last["value"] = p.step
            send(("progress", p.phase, p.step, p.total, p.loss, p.elapsed, p.eta, p.fraction))

        def previews() -> None:
            from .engine import device_info

            ticks = 0
            while not finished.wait(config.preview_interval):
                ticks += 1
                if ticks * config.preview_interval >= 5.0:  # free GPU memory for /health, every ~5 s
                    ticks = 0
                    send(("device", device_info()))
                step = last["value"]
                if step != last["step"]:
                    snap = job.snapshot()
                    if snap is not None:
                        send(("preview", step, encode_png(snap)))
                        last["step"] = step

        threading.Thread(target=previews, daemon=True).start()
        result = job.run(on_progress)
        finished.set()
        send(("preview", int(result.steps_done), encode_png(np.asarray(result.texture))))
        if result.cancelled:
            outcome = ("cancelled", {"steps_done": int(result.steps_done)})
        else:
            atomic_write(folder / "result.npz", result_npz(result, job_id))
            outcome = ("done", {"steps_done": int(result.steps_done),
                                "steps_per_s": float(result.timings.get("steps_per_s") or 0.0)})
    except NfsdError as exc:
        if isinstance(exc, OutOfMemory):
            _free_gpu_memory()
        outcome = ("failed", {"error": str(exc)})
    except Exception as exc:
        if _is_cuda_oom(exc):
            _free_gpu_memory()
            outcome = ("failed", {"error": f"{OOM_HINT} ({str(exc).splitlines()[0] if str(exc) else 'OOM'})"})
        else:
            log.exception("job %s failed", job_id)
            outcome = ("failed", {"error": f"{type(exc).__name__}: {exc}"})
    finally:
        finished.set()
        state["job"] = None
    try:
        send(("info", _child_info()))
    except Exception:
        log.exception("could not report device info")
    send(("end", *outcome))
