"""The server's side of ``nfsd serve --executor ray``: ``RayRunner``, one slot of the job manager backed
by one long-lived Ray actor (``nfsd.jobs.ray_actor.JobActor``), and ``ray_runners``, which connects to
the cluster and makes one runner per GPU (or per CPU slot of a CPU-only cluster).

Ray places the actors (``num_gpus=1`` each); the server stays the one endpoint and keeps every job
folder: a job's inputs go to its actor as bytes, and its UVs, previews and result come back as bytes
that the runner writes into the job folder here, so the nodes need no shared file system (only
the project's ``cluster`` extra, i.e. Ray, and the models they run). Ray is imported lazily: the base install does
not need it.

A lost actor (killed, crashed, its node gone: a ``RayError`` while the job runs) ends the job as
``died``; the runner replaces the actor (a new one, placed by Ray, loads the model again) and the job
manager queues the job again once (``nfsd.jobs.queue``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ConfigError
from .events import CancelSignal, JobEvents, Outcome, deliver
from .store import atomic_write, read_init_maps

log = logging.getLogger("nfsd.jobs")

POLL_S = 0.5          # a long poll: the actor answers as soon as the job reports
MAX_CONCURRENCY = 4   # the actor's threads: a job, its polls, a cancel, an unload or info


@dataclass
class Placement:
    """What each actor asks of Ray, and how many actors there are."""

    workers: int
    options: dict
    device: str


def plan(resources: dict, requested: int = 0, device: str = "auto") -> Placement:
    """One actor per GPU of the cluster (``num_gpus=1``), else one per CPU slot (``num_cpus=1``);
    ``requested`` > 0 sets the count (actors beyond the cluster's resources wait until Ray can place
    them). ``device="cpu"`` places CPU actors even where there are GPUs."""
    gpus = int(resources.get("GPU", 0)) if device != "cpu" else 0
    if gpus:
        return Placement(requested or gpus, {"num_gpus": 1, "num_cpus": 1}, "cuda")
    return Placement(requested or max(1, int(resources.get("CPU", 1))), {"num_cpus": 1}, "cpu")


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """A ``host:port`` cluster address that takes no TCP connection is a ``ConfigError`` within ``timeout`` s
    (``ray.init`` would retry for a minute or more). Other forms (``ray://``, ``auto``, None) are left to Ray."""
    import re
    import socket

    found = re.fullmatch(r"\[?([^\[\]/]+?)\]?:(\d+)", address or "")
    if found is None:
        return
    try:
        socket.create_connection((found.group(1), int(found.group(2))), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"nothing answers at the Ray address {address} ({exc}); start the head there with "
                          "`ray start --head --port=6379`, or pass its address (IP:6379) with --ray-address") from None


def ray_runners(config) -> tuple[list["RayRunner"], Callable[[], None]]:
    """Connect to Ray (``config.ray_address``; a local Ray is started when None and none is running in
    this process) and make the runners; the function returned disconnects again if this call connected."""
    import ray

    connected_here = not ray.is_initialized()
    if connected_here:
        check_reachable(config.ray_address)
        try:
            ray.init(address=config.ray_address, include_dashboard=False, logging_level=logging.WARNING)
        except Exception as exc:  # ConnectionError, a version mismatch, a bad address...
            where = f"the Ray cluster at {config.ray_address}" if config.ray_address else "a local Ray"
            raise ConfigError(f"could not start or join {where} ({type(exc).__name__}: {exc}); start the head with "
                              "`ray start --head` and pass its address with --ray-address") from exc
    placement = plan(ray.cluster_resources(), config.ray_workers, config.device)
    log.info("Ray executor: %d workers, each %s", placement.workers, placement.options)
    runners = [RayRunner(config, i, placement) for i in range(placement.workers)]

    def close() -> None:
        if connected_here and ray.is_initialized():
            ray.shutdown()

    return runners, close


class RayRunner:
    """One slot of the job manager backed by one Ray actor (the same methods as ``nfsd.jobs.runner``'s)."""

    def __init__(self, config, index: int, placement: Placement):
        self.config = config
        self.index = index
        self.placement = placement
        self.actor = None        # the actor's handle (tests kill it with ray.kill)
        self._ready_ref = None   # its first info() while it starts
        self._info: dict = {"device": placement.device, "gpu_name": None, "gpu_free_bytes": None, "models": [],
                            "model_loads": 0}

    # -- the actor's life --------------------------------------------------------------------------
    def _spawn(self) -> None:
        import ray

        from .ray_actor import JobActor

        cls = ray.remote(JobActor).options(max_concurrency=MAX_CONCURRENCY, **self.placement.options)
        self.actor = cls.remote(self.config.default_model, self.placement.device, self.config.preview_interval,
                                self.config.torch_threads)
        self._ready_ref = self.actor.info.remote()
        self._info = dict(self._info, models=[], model_loads=0)

    def start(self) -> None:
        self._spawn()

    def ready(self) -> bool:
        """Whether the actor is up (never waits: a new actor may wait for Ray to place it)."""
        import ray
        from ray.exceptions import RayError

        if self.actor is None:
            self._spawn()
        if self._ready_ref is not None:
            done, _ = ray.wait([self._ready_ref], timeout=0)
            if not done:
                return False
            try:
                self._info = ray.get(self._ready_ref)
            except RayError as exc:
                log.warning("Ray worker %d did not start (%s); starting another", self.index, exc)
                self.actor = None
                return False
            finally:
                self._ready_ref = None
        return True

    def kill(self) -> None:
        """End the actor now (a running job then ends as ``died``)."""
        import ray

        if self.actor is not None:
            ray.kill(self.actor)

    def close(self, timeout: float = 10.0) -> None:
        self.kill()
        self.actor = None

    def idle(self) -> None:
        pass

    def pid(self) -> int | None:
        return self._info.get("pid")

    def device_and_models(self) -> dict:
        return dict(self._info)

    def unload(self) -> bool:
        import ray
        from ray.exceptions import RayError

        if self.actor is None or not self.ready():
            return False
        try:
            had, self._info = ray.get(self.actor.unload.remote())
        except RayError:
            self.actor = None
            return False
        return bool(had)

    # -- one job -----------------------------------------------------------------------------------
    def run(self, job_id: str, folder: Path, settings: dict, has_init: bool, cancel: CancelSignal,
            events: JobEvents) -> Outcome:
        import ray
        from ray.exceptions import RayError

        actor = self.actor
        mesh = (folder / "mesh.npz").read_bytes()
        init = (folder / "init_texture.png").read_bytes() if has_init else None
        maps = read_init_maps(folder) if has_init else {}
        try:
            ray.get(actor.start.remote(job_id, mesh, settings, init, maps))
            cancel.on_set(lambda: actor.cancel.remote(job_id))
            while True:
                batch = ray.get(actor.poll.remote(job_id, POLL_S))
                latest = max((i for i, m in enumerate(batch) if m[0] == "progress"), default=-1)
                for i, msg in enumerate(batch):
                    if msg[0] == "end":
                        return self._end(job_id, folder, *msg[1:])
                    if msg[0] != "progress" or i == latest:  # a batch's older progress is already stale
                        self._deliver(msg, folder, events)
        except RayError as exc:
            log.warning("job %s: Ray worker %d was lost (%s)", job_id, self.index, type(exc).__name__)
            self.actor, self._ready_ref = None, None
            return Outcome("died", error=f"the Ray worker running it was lost ({type(exc).__name__})")

    def _deliver(self, msg: tuple, folder: Path, events: JobEvents) -> None:
        if msg[0] == "uvs":  # its bytes become the job folder's uvs.npz first
            if not folder.is_dir():
                return
            atomic_write(folder / "uvs.npz", msg[1])
        deliver(msg, events)

    def _end(self, job_id: str, folder: Path, state: str, payload: dict, result: bytes | None, info: dict) -> Outcome:
        self._info = info
        if state == "done":
            try:
                if folder.is_dir():  # deleted meanwhile: nothing to keep
                    atomic_write(folder / "result.npz", result)
            except OSError as exc:
                log.exception("job %s: could not write its result", job_id)
                return Outcome("failed", error=f"could not write the result: {type(exc).__name__}: {exc}")
        return Outcome(state, **payload)
