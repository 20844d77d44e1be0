"""Running the server's jobs: in the worker process (``ProcessRunner``, the server), or in a thread of the
server's own process when a ``make_job`` factory is given (``ThreadRunner``: tests' fake engines).

Both run a job with the one :func:`nfsd.jobs.job_run.run_job` (the worker process calls it too), so a
test of cancel, out-of-memory or a late result goes through the code that runs in production. Both take
a job's folder and settings and return an :class:`~nfsd.jobs.events.Outcome`; progress, the early UVs
and preview PNGs arrive through :class:`~nfsd.jobs.events.JobEvents` while the job runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .events import CancelSignal, JobEvents, Outcome, deliver
from .job_run import make_texture_job, run_job
from .worker import WorkerProcess, guess_device

class ThreadRunner:
    """Runs ``make_job(mesh_npz, settings, init_png, config, on_stage=, cancelled=)`` jobs in the calling
    thread, through ``run_job`` (previews come from its own thread, as in the worker process)."""

    def __init__(self, config, make_job: Callable | None = None):
        self.config = config
        self._make_job = make_job or make_texture_job

    def start(self) -> None:
        pass

    def ready(self) -> bool:
        return True

    def close(self, timeout: float = 10.0) -> None:
        pass

    def kill(self) -> None:
        pass  # a job in this process can only be asked to stop

    def idle(self) -> None:
        pass

    def pid(self) -> None:
        return None

    def run(self, job_id: str, folder: Path, settings: dict, has_init: bool, cancel: CancelSignal,
            events: JobEvents) -> Outcome:
        return run_job(job_id, folder, settings, has_init, cancel, events, self.config, self._make_job)

    def unload(self) -> bool:
        from ..priors.prior import unload_all

        return unload_all()

    def device_and_models(self) -> dict:
        from ..distill.engine import device_info
        from ..priors.prior import load_count, loaded_models

        return dict(device_info(), models=loaded_models(), model_loads=load_count())


class ProcessRunner:
    """Runs jobs in the worker process (``nfsd.jobs.worker``), started again after it dies."""

    def __init__(self, config):
        self.config = config
        self._child: WorkerProcess | None = None
        self._info: dict = {}

    def start(self) -> None:
        self._ensure_child()  # start-up (imports, CUDA init) overlaps with the server's own

    def ready(self) -> bool:
        return True  # a job waits for the process's start-up in run()

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
        child = self._ensure_child()
        child.start_job(job_id, str(folder), settings, has_init)
        cancel.on_set(child.cancel)

        ended = child.wait_job(lambda msg: deliver(msg, events))
        if ended is None:  # the process died: CUDA fatal error, killed for memory, segfault...
            code = child.exitcode()
            self._child = None
            return Outcome("died", exit_code=code)
        state, payload = ended
        return Outcome(state, **payload)

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
            info = {"device": guess_device(self.config.device), "gpu_name": None, "gpu_free_bytes": None, "models": [],
                    "model_loads": 0}
        return info
