"""The job manager's worker slots, and which queued job a free slot takes.

A slot is one runner (``nfsd.jobs.runner``'s worker process or test thread, or a Ray actor of
``nfsd.jobs.ray_runner``) served by a worker thread of its own; every slot takes its jobs from the
manager's one queue (``nfsd.jobs.queue``). A free slot prefers a queued job whose model it already
holds (no load), but looks only ``LOOKAHEAD`` jobs ahead and passes over the job at the head of the
queue at most ``LOOKAHEAD`` times, so no job waits for ever behind others that are cheaper to start.
"""

from __future__ import annotations

import collections
import threading
from typing import Callable, Iterable

from .events import CancelSignal

LOOKAHEAD = 4


class Slot:
    """One runner and what its worker thread is doing.

    Attributes:
        index: its place among the manager's slots (0..N-1).
        name: shown in ``/health`` (``workers[].name``) and in a job's ``worker``.
        runner: ``ProcessRunner`` | ``ThreadRunner`` | ``RayRunner`` (the same methods).
        job_id, cancel: the job it runs now and that job's cancel signal (None between jobs).
        commands: requests for the runner between jobs (``unload``), run by the slot's thread.
        jobs_done: jobs this slot finished (any end state), for ``/health``.
        up: its runner was ready when its thread last looked (a Ray actor may be starting).
    """

    def __init__(self, index: int, name: str, runner):
        self.index, self.name, self.runner = index, name, runner
        self.job_id: str | None = None
        self.cancel: CancelSignal | None = None
        self.commands: collections.deque = collections.deque()
        self.thread: threading.Thread | None = None
        self.jobs_done = 0
        self.up = False

    def models(self) -> list[str]:
        """The models its worker holds in memory, as it last reported them."""
        return list(self.runner.device_and_models().get("models") or [])

    def describe(self, executor: str) -> dict:
        """Its ``/health`` entry: ``{name, executor, device, gpu_name, gpu_free_bytes, models, model_loads,
        running_job, jobs_done, ready}`` (from what the slot's thread last saw: asking the runner from
        another thread could start a second Ray actor)."""
        info = self.runner.device_and_models()
        return {"name": self.name, "executor": executor, "device": info.get("device"),
                "gpu_name": info.get("gpu_name"), "gpu_free_bytes": info.get("gpu_free_bytes"),
                "models": list(info.get("models") or []), "model_loads": info.get("model_loads"),
                "running_job": self.job_id, "jobs_done": self.jobs_done, "ready": self.up}


def pick(queue: Iterable[str], model_of: Callable[[str], str], held: list[str], skips: dict[str, int],
         avoid: dict[str, int], slot_index: int, n_slots: int) -> str | None:
    """The id of the queued job a free slot should take, or None (nothing it may take now).

    Args:
        queue: job ids, first in first out.
        model_of: a job's model (its settings' ``model``, else the server's default).
        held: the models the slot holds.
        skips: how often each job was passed over at the head of the queue (updated here).
        avoid: job id -> the index of the slot whose worker was lost under it: that slot takes it only
            when it is the manager's one slot (the job re-runs on another worker where there is one).
    """
    window = [j for j in list(queue)[:LOOKAHEAD] if not (n_slots > 1 and avoid.get(j) == slot_index)]
    if not window:
        return None
    head = window[0]
    if model_of(head) in held or skips.get(head, 0) >= LOOKAHEAD:
        return head
    warm = next((j for j in window[1:] if model_of(j) in held), None)
    if warm is None:
        return head
    skips[head] = skips.get(head, 0) + 1
    return warm


class JobQueue:
    """The ids of the queued jobs, first in first out, and what ``pick`` keeps between calls (not
    thread-safe: the job manager holds its lock). ``avoid(job_id, slot_index)``: the worker of that
    slot was lost under the job, which runs again on another where there is one."""

    def __init__(self):
        self.ids: list[str] = []
        self._skips: dict[str, int] = {}
        self._avoid: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, job_id: str, front: bool = False) -> None:
        self.ids.insert(0, job_id) if front else self.ids.append(job_id)

    def avoid(self, job_id: str, slot_index: int) -> None:
        self._avoid[job_id] = slot_index

    def position(self, job_id: str) -> int:
        """1 = next to run, 0 = not queued."""
        return self.ids.index(job_id) + 1 if job_id in self.ids else 0

    def remove(self, job_id: str) -> None:
        if job_id in self.ids:
            self.ids.remove(job_id)
        self._skips.pop(job_id, None)
        self._avoid.pop(job_id, None)

    def take(self, model_of: Callable[[str], str], held: list[str], slot_index: int, n_slots: int) -> str | None:
        """Remove and return the job a free slot should run next (``pick``), or None."""
        job_id = pick(self.ids, model_of, held, self._skips, self._avoid, slot_index, n_slots)
        if job_id is not None:
            self.remove(job_id)
        return job_id
