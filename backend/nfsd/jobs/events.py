"""What one running job is given and gives back: its cancel signal, the callbacks it reports through,
and how it ended. Shared by ``nfsd.jobs.job_run.run_job`` (which runs a job, in the worker process or in
a test's thread), the runners and the monitor; it imports nothing of theirs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable


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

    def payload(self) -> dict:
        """The ``end`` message's payload (the worker's pipe protocol); ``Outcome(state, **payload)`` again."""
        return {"steps_done": self.steps_done, "steps_per_s": self.steps_per_s, "error": self.error}


@dataclass
class JobEvents:
    """Where a running job reports. ``progress(nfsd.distill.engine.Progress)`` runs at every reported step: it
    must be cheap. ``uvs()``: ``uvs.npz`` is in the job folder. ``preview(png_bytes, step)``.
    ``stage(text, elapsed_seconds)``: what the job does before its model loads ("unwrapping N faces");
    ``text`` None when that stage has ended (the line must not outlive it)."""

    progress: Callable
    uvs: Callable[[], None]
    preview: Callable[[bytes, int], None]
    stage: Callable[[str | None, float], None] = lambda text, elapsed: None


def message_events(send: Callable[[tuple], None], uvs_message: Callable[[], tuple] = lambda: ("uvs",)) -> JobEvents:
    """``JobEvents`` that turn each report into a message tuple for ``send``: the protocol of the worker
    process's pipe and of a Ray actor's poll (``deliver`` reads it back)::

        ("progress", phase, step, total, loss, elapsed, eta, fraction)   a Progress
        ("stage", text | None, elapsed)                                   preparing the mesh; None: ended
        ("uvs", ...)                                                      uvs.npz is written (``uvs_message()``)
        ("preview", step, png_bytes)
    """
    return JobEvents(
        progress=lambda p: send(("progress", p.phase, p.step, p.total, p.loss, p.elapsed, p.eta, p.fraction)),
        uvs=lambda: send(uvs_message()),
        preview=lambda png, step: send(("preview", step, png)),
        stage=lambda text, elapsed: send(("stage", text, elapsed)),
    )


def deliver(msg: tuple, events: JobEvents) -> None:
    """A ``message_events`` tuple -> the ``events`` call it stands for (other kinds are ignored)."""
    kind = msg[0]
    if kind == "progress":
        from ..distill.config import Progress

        events.progress(Progress(*msg[1:]))
    elif kind == "preview":
        events.preview(msg[2], msg[1])
    elif kind == "uvs":
        events.uvs()
    elif kind == "stage":
        events.stage(msg[1], msg[2])
