"""Running one queued job and reporting what it does: in the worker process (the server), or in a
thread of the server's own process when a ``make_job`` factory is given (tests' fakes).

Both runners take a job's folder and settings and return an :class:`Outcome`; progress, the early
UVs and preview PNGs arrive through :class:`JobEvents` while the job runs. A job is asked to stop
through its :class:`CancelSignal`, which may fire before the job exists (it then stops at once).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import Cancelled
from .results import encode_png, result_npz, store_job_uvs
from .store import atomic_write
from .worker import WorkerProcess, failure_message, guess_device, make_texture_job

log = logging.getLogger("nfsd.jobs")


class CancelSignal:
    """A one-way flag with hooks: ``set`` runs every hook registered with ``on_set`` (once), and a hook
    registered after ``set`` runs at once, so a cancel can never fall between two checks."""

    def __init__(self):
        self._lock = threading.Lock()
        self._set = False
        self._hooks: list[Callable[[], None]] = []

    def set(self) -> None:
        with self._lock:
            if self._set:
                return
            self._set = True
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook()

    def is_set(self) -> bool:
        return self._set

    def on_set(self, hook: Callable[[], None]) -> None:
        with self._lock:
            if not self._set:
                self._hooks.append(hook)
                return
        hook()


@dataclass
class Outcome:
    """How a job ended. ``state``: ``done`` | ``cancelled`` | ``failed`` (``error`` says why) | ``died``
    (the worker process stopped under it; ``exit_code``)."""

    state: str
    steps_done: int = 0
    steps_per_s: float | None = None
    error: str | None = None
    exit_code: int | None = None


@dataclass
class JobEvents:
    """Where a running job reports. ``progress(nfsd.distill.engine.Progress)`` runs at every reported step: it
    must be cheap. ``uvs()``: ``uvs.npz`` is in the job folder. ``preview(png_bytes, step)``.
    ``stage(text, elapsed_seconds)``: what the job does before its model loads ("unwrapping N faces")."""

    progress: Callable
    uvs: Callable[[], None]
    preview: Callable[[bytes, int], None]
    stage: Callable[[str, float], None] = lambda text, elapsed: None


class ThreadRunner:
    """Runs ``make_job(mesh_npz, settings, init_png, config)`` jobs in the calling thread."""

    def __init__(self, config, make_job: Callable | None = None):
        self.config = config
        self._make_job = make_job or make_texture_job
        self._job = None

    def start(self) -> None:
        pass

    def close(self, timeout: float = 10.0) -> None:
        pass

    def kill(self) -> None:
        pass  # a job in this process can only be asked to stop

    def idle(self) -> None:
        pass

    def pid(self) -> None:
        return None

    def snapshot(self) -> np.ndarray | None:
        job = self._job
        return job.snapshot() if job is not None and hasattr(job, "snapshot") else None

    def run(self, job_id: str, folder: Path, settings: dict, has_init: bool, cancel: CancelSignal,
            events: JobEvents) -> Outcome:
        try:
            mesh_npz = (folder / "mesh.npz").read_bytes()
            init_png = (folder / "init_texture.png").read_bytes() if has_init else None
            job = self._make_job(mesh_npz, settings, init_png, self.config)
            if store_job_uvs(folder, job):
                events.uvs()
            self._job = job
            cancel.on_set(job.cancel)
            result = job.run(events.progress)
        except Cancelled:
            return Outcome("cancelled")
        except Exception as exc:
            return Outcome("failed", error=failure_message(exc, job_id))
        finally:
            self._job = None
        if result.texture is not None:
            events.preview(encode_png(np.asarray(result.texture)), int(result.steps_done))
        if result.cancelled:
            return Outcome("cancelled", steps_done=int(result.steps_done))
        try:
            if folder.is_dir():
                atomic_write(folder / "result.npz", result_npz(result, job_id))
        except Exception as exc:
            log.exception("job %s: could not write its result", job_id)
            return Outcome("failed", error=f"could not write the result: {type(exc).__name__}: {exc}")
        rate = result.timings.get("steps_per_s") if isinstance(result.timings, dict) else None
        return Outcome("done", steps_done=int(result.steps_done), steps_per_s=float(rate) if rate else None)

    def unload(self) -> bool:
        from ..priors.prior import unload_all

        return unload_all()

    def device_and_models(self) -> dict:
        from ..distill.engine import device_info
        from ..priors.prior import loaded_models

        return dict(device_info(), models=loaded_models())


class ProcessRunner:
    """Runs jobs in the worker process (``nfsd.jobs.worker``), started again after it dies."""

    def __init__(self, config):
        self.config = config
        self._child: WorkerProcess | None = None
        self._info: dict = {}

    def start(self) -> None:
        self._ensure_child()  # start-up (imports, CUDA init) overlaps with the server's own

    def close(self, timeout: float = 10.0) -> None:
        if self._child is not None:
            self._child.close(timeout)
            self._child = None

    def kill(self) -> None:
        """Stop the worker process now (a running job then ends as ``died``)."""
        child = self._child
        if child is not None and child.alive():
            child.process.terminate()

    def idle(self) -> None:
        """Read what an idle worker sent (its device report after start-up) so /health is current."""
        if self._child is not None:
            self._child.drain()

    def snapshot(self) -> None:
        return None  # previews arrive as messages

    def pid(self) -> int | None:
        return self._child.process.pid if self._child is not None else None

    def _ensure_child(self) -> WorkerProcess:
        if self._child is None or not self._child.alive():
            if self._child is not None:
                self._child.close()
            self._child = WorkerProcess(self.config, self._set_info)
        return self._child

    def _set_info(self, info: dict, partial: bool) -> None:
        self._info = dict(self._info, **info) if partial else info

    def run(self, job_id: str, folder: Path, settings: dict, has_init: bool, cancel: CancelSignal,
            events: JobEvents) -> Outcome:
        from ..distill.config import Progress

        child = self._ensure_child()
        child.start_job(job_id, str(folder), settings, has_init)
        cancel.on_set(child.cancel)

        def on_message(msg) -> None:
            if msg[0] == "progress":
                events.progress(Progress(*msg[1:]))
            elif msg[0] == "preview":
                events.preview(msg[2], msg[1])
            elif msg[0] == "uvs":
                events.uvs()
            elif msg[0] == "stage":
                events.stage(msg[1], msg[2])

        ended = child.wait_job(on_message)
        if ended is None:  # the process died: CUDA fatal error, killed for memory, segfault...
            code = child.exitcode()
            self._child = None
            return Outcome("died", exit_code=code)
        outcome, payload = ended
        if outcome == "failed":
            return Outcome("failed", error=payload["error"])
        return Outcome(outcome, steps_done=int(payload["steps_done"]), steps_per_s=payload.get("steps_per_s") or None)

    def unload(self) -> bool:
        if self._child is None or not self._child.alive():
            return False  # no process, no model
        had = self._child.unload()
        if had is None:
            self._child = None
        return bool(had)

    def device_and_models(self) -> dict:
        info = dict(self._info)
        if not info:
            info = {"device": guess_device(self.config.device), "gpu_name": None, "gpu_free_bytes": None, "models": []}
        return info
