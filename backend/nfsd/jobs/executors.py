"""Where the server's jobs run: the job manager's slots (``nfsd.jobs.slots``) for ``nfsd serve``'s
``--executor``.

``local`` (the default): one worker process (``nfsd.jobs.runner.ProcessRunner``) per entry of
``--devices`` (``cuda:0,cuda:1``; ``cpu,cpu`` works too), else one on ``--device``. ``ray``: one
long-lived Ray actor per GPU of the cluster at ``--ray-address`` (a local Ray when none), or per CPU slot
of a CPU-only cluster, ``--ray-workers`` to set the count (``nfsd.jobs.ray_runner``). Either way the
server keeps the one queue, the job folders and the API; only where a job's steps run changes.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field, replace
from typing import Callable

from ..errors import ConfigError
from .runner import ProcessRunner, ThreadRunner
from .slots import Slot

EXECUTORS = ("local", "ray")
RAY_MISSING = ("--executor ray needs Ray: pip install 'ray>=2.9' (in a checkout: pip install -e \".[cluster]\"); "
               "or use --devices cuda:0,cuda:1 for several GPUs of this machine")


@dataclass
class Executor:
    """The slots of one job manager.

    Attributes:
        kind: ``local`` | ``ray``.
        slots: one per worker.
        retry_lost: a job whose worker was lost (an actor or node that died, a server restart) is queued
            again once rather than ended: on a cluster, workers come and go.
        close: called once the slots are closed (disconnects from Ray if it connected).
    """

    kind: str
    slots: list[Slot]
    retry_lost: bool = False
    close: Callable[[], None] = field(default=lambda: None)


def check_executor(executor: str, devices: tuple[str, ...], ray_address: str | None, ray_workers: int) -> None:
    """Raise ``ConfigError`` for options that cannot work together (before anything starts)."""
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    for d in devices:
        if d not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", d):
            raise ConfigError(f"--devices takes devices such as cuda:0,cuda:1 or cpu,cpu; {d!r} is not one")
    if executor == "ray":
        if devices:
            raise ConfigError("--devices is for --executor local; with Ray, one worker runs per GPU of the "
                              "cluster (--ray-workers N to set how many)")
        if ray_workers < 0:
            raise ConfigError(f"--ray-workers must be 0 (one per GPU) or more, got {ray_workers}")
        if importlib.util.find_spec("ray") is None:
            raise ConfigError(RAY_MISSING)
    elif ray_address or ray_workers:
        raise ConfigError("--ray-address and --ray-workers need --executor ray")


def make_executor(config, make_job: Callable | None = None) -> Executor:
    """The slots for a ``ManagerConfig``. ``make_job`` (tests' fakes): jobs run in threads of this
    process, one slot per device, whatever the executor."""
    if config.executor == "ray" and make_job is None:
        from .ray_runner import ray_runners

        runners, close = ray_runners(config)
        return Executor("ray", [Slot(i, f"ray-{i}", r) for i, r in enumerate(runners)], retry_lost=True, close=close)
    devices = tuple(config.devices) or (config.device,)
    slots = []
    for i, device in enumerate(devices):
        own = replace(config, device=device)
        runner = ProcessRunner(own) if make_job is None else ThreadRunner(own, make_job)
        slots.append(Slot(i, f"local-{i}", runner))
    return Executor("local", slots)
