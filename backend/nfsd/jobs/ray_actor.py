"""The Ray actor that runs the server's jobs on a cluster's node: ``JobActor``, made remote by
``nfsd.jobs.ray_runner`` (this module imports nothing of Ray, so the base install never needs it).

One actor per GPU (or per CPU slot of a CPU-only cluster) lives as long as the server: it holds the model
cache (``nfsd.priors.prior``, in the actor's process) across jobs, so a model loads once per worker.
Nothing is shared through files: a job's inputs arrive as bytes, the actor runs ``nfsd.jobs.job_run.run_job``
(the code the local worker process runs) in a temporary folder of its own, and everything the job
reports is queued as messages the server collects with ``poll`` (a long poll):

    ``("progress", phase, step, total, loss, elapsed, eta, fraction)``  a ``Progress``
    ``("stage", text | None, elapsed)``      preparing the mesh; None: that stage ended
    ``("uvs", uvs_npz_bytes)``               the UVs are final (``uvs.npz``)
    ``("preview", step, png_bytes)``
    ``("end", state, payload, result_npz_bytes | None, info)``  an ``Outcome`` (``Outcome(state, **payload)``),
                                             the result when done, and the actor's ``info()``

The actor is threaded (``max_concurrency`` >= 2): ``cancel`` and ``poll`` are answered while a job runs,
so a cancel reaches the job within a step, as in the local worker process.
"""

from __future__ import annotations

import logging
import os
import queue
import tempfile
import threading
from pathlib import Path

from .events import CancelSignal, message_events
from .job_run import JobDefaults, run_job
from .store import write_init_maps

log = logging.getLogger("nfsd.jobs")

MAX_BATCH = 256  # messages handed over per poll


class JobActor:
    """Runs jobs one at a time in its own process and keeps their model loaded between them.

    Args:
        default_model: the model of jobs whose settings name none.
        device: ``cuda`` (the one GPU Ray gave the actor) or ``cpu``.
        preview_interval: seconds between preview snapshots while a job runs.
        torch_threads: CPU threads of torch (0: Ray's default for the actor, its ``num_cpus``).
    """

    def __init__(self, default_model: str, device: str, preview_interval: float, torch_threads: int = 0):
        import torch

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.config = JobDefaults(default_model=default_model, device=device, preview_interval=preview_interval)
        self._jobs: dict[str, tuple[queue.Queue, CancelSignal]] = {}
        self._lock = threading.Lock()

    def info(self) -> dict:
        """``{device, gpu_name, gpu_free_bytes, models, model_loads, pid, node}`` of this worker."""
        from ..distill.engine import device_info
        from ..priors.prior import load_count, loaded_models

        try:
            import ray

            node = ray.util.get_node_ip_address()
        except Exception:  # outside Ray (a test calling the class directly)
            node = None
        return dict(device_info(), models=loaded_models(), model_loads=load_count(), pid=os.getpid(), node=node)

    def start(self, job_id: str, mesh_npz: bytes, settings: dict, init_png: bytes | None,
              init_maps: dict[str, bytes] | None = None) -> None:
        """Start one job in a thread of its own; its messages wait for ``poll``. ``init_maps``: map name -> PNG
        bytes (``nfsd.jobs.store.INIT_MAPS``)."""
        messages: queue.Queue = queue.Queue()
        cancel = CancelSignal()
        with self._lock:
            self._jobs[job_id] = (messages, cancel)
        threading.Thread(target=self._run, args=(job_id, mesh_npz, settings, init_png, init_maps, messages, cancel),
                         name=f"nfsd-job-{job_id[:8]}", daemon=True).start()

    def poll(self, job_id: str, timeout: float) -> list[tuple]:
        """The job's messages since the last poll (waits up to ``timeout`` s for the first); the list ends
        with ``end`` once the job has ended."""
        with self._lock:
            entry = self._jobs.get(job_id)
        if entry is None:
            return [("end", "failed", {"steps_done": 0, "steps_per_s": None,
                                       "error": f"the worker has no job {job_id}"}, None, self.info())]
        messages = entry[0]
        try:
            out = [messages.get(timeout=timeout)]
        except queue.Empty:
            return []
        while len(out) < MAX_BATCH and out[-1][0] != "end":
            try:
                out.append(messages.get_nowait())
            except queue.Empty:
                break
        if out[-1][0] == "end":
            with self._lock:
                self._jobs.pop(job_id, None)
        return out

    def cancel(self, job_id: str) -> bool:
        """Ask the job to stop at its next cancel point; False when it is not running here."""
        with self._lock:
            entry = self._jobs.get(job_id)
        if entry is not None:
            entry[1].set()
        return entry is not None

    def unload(self) -> tuple[bool, dict]:
        """Free the cached models: whether one was loaded, and ``info()`` after."""
        from ..priors.prior import unload_all

        return unload_all(), self.info()

    def _run(self, job_id: str, mesh_npz: bytes, settings: dict, init_png: bytes | None, init_maps: dict | None,
             messages: queue.Queue, cancel: CancelSignal) -> None:
        put = messages.put
        with tempfile.TemporaryDirectory(prefix="nfsd-job-") as tmp:
            folder = Path(tmp)
            try:
                (folder / "mesh.npz").write_bytes(mesh_npz)
                if init_png is not None:
                    (folder / "init_texture.png").write_bytes(init_png)
                    write_init_maps(folder, init_maps)
                # the UVs travel as bytes: the server has no view of this folder
                events = message_events(put, lambda: ("uvs", (folder / "uvs.npz").read_bytes()))
                outcome = run_job(job_id, folder, settings, init_png is not None, cancel, events, self.config)
                result = (folder / "result.npz").read_bytes() if outcome.state == "done" else None
                put(("end", outcome.state, outcome.payload(), result, self.info()))
            except Exception as exc:  # run_job never raises; reading its files might
                log.exception("job %s: the worker could not hand over its result", job_id)
                put(("end", "failed", {"steps_done": 0, "steps_per_s": None,
                                       "error": f"the worker could not hand over the result: {exc}"}, None, self.info()))
