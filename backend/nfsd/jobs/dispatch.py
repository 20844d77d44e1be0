"""The job manager's worker threads: one per slot (``nfsd.jobs.slots``), all over the manager's one queue.

The manager (``nfsd.jobs.queue``) lends its lock and two functions: ``take(slot)``, called under the
lock when the slot is free and its runner ready, hands it the next job (or None); ``run(slot, rec,
cancel)`` runs it and records how it ended. Between jobs a slot's thread runs its commands (``unload``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from .slots import Slot

log = logging.getLogger("nfsd.jobs")


class SlotWorkers:
    """The worker threads of ``slots``; ``stopping`` is the manager's (set it, then call ``stop``)."""

    def __init__(self, slots: list[Slot], lock, stopping: threading.Event, take: Callable, run: Callable,
                 after: Callable[[], None]):
        self.slots = slots
        self.wake = threading.Condition(lock)
        self.stopping = stopping
        self._take, self._run, self._after = take, run, after

    def start(self) -> list[threading.Thread]:
        for slot in self.slots:
            slot.runner.start()
            slot.thread = threading.Thread(target=self._loop, args=(slot,), name=f"nfsd-{slot.name}", daemon=True)
            slot.thread.start()
        return [s.thread for s in self.slots]

    def notify(self) -> None:
        """Wake the free slots (a job was queued, a command sent, the manager is stopping)."""
        with self.wake:
            self.wake.notify_all()

    def stop(self, timeout: float) -> None:
        """Ask the running jobs to stop; a worker whose job has not stopped within ``timeout`` s is ended."""
        with self.wake:
            for slot in self.slots:
                if slot.cancel is not None:
                    slot.cancel.set()
            self.wake.notify_all()
        deadline = time.monotonic() + timeout
        for slot in self.slots:
            if slot.thread is not None:
                slot.thread.join(max(0.0, deadline - time.monotonic()))
        for slot in self.slots:
            if slot.thread is not None and slot.thread.is_alive():
                slot.runner.kill()
                slot.thread.join(2.0)
        for slot in self.slots:
            slot.runner.close(timeout=1.0)

    def running_ids(self) -> list[str]:
        return [s.job_id for s in self.slots if s.job_id is not None]

    def unload(self, timeout: float) -> bool:
        """Free the cached models of every worker; False when none was loaded. ValueError while a job runs."""
        asked = []
        with self.wake:
            if self.running_ids():
                raise ValueError("a job is running and uses the model; cancel it or wait, then unload")
            for slot in self.slots:
                asked.append((threading.Event(), []))
                slot.commands.append(("unload", *asked[-1]))
            self.wake.notify_all()
        deadline = time.monotonic() + timeout
        for done, box in asked:
            if not done.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError("a worker did not answer the unload request in time")
            if isinstance(box[0], Exception):
                raise box[0]
        return any(box[0] for _done, box in asked)

    # -- one slot's thread -------------------------------------------------------------------------
    def _loop(self, slot: Slot) -> None:
        while not self.stopping.is_set():
            with self.wake:
                taken = command = None
                while not self.stopping.is_set():
                    if slot.commands:
                        command = slot.commands.popleft()
                        break
                    slot.up = bool(slot.runner.ready())  # a Ray actor may still be starting, or waiting for room
                    taken = self._take(slot) if slot.up else None
                    if taken is not None:
                        break
                    self.wake.wait(1.0 if slot.up else 0.2)
                    slot.runner.idle()
                if self.stopping.is_set():
                    return
            if command is not None:
                self._command(slot, *command)
                continue
            rec, cancel = taken
            try:
                self._run(slot, rec, cancel)
            except Exception:  # the worker must survive anything a job does
                log.exception("job %s: unexpected error outside the job", rec.id)
            finally:
                with self.wake:
                    slot.job_id, slot.cancel = None, None
                    slot.jobs_done += 1
                    self._after()
                    self.wake.notify_all()  # a job queued again is for the other slots

    @staticmethod
    def _command(slot: Slot, name: str, done: threading.Event, box: list) -> None:
        """A command for a slot's worker while it runs no job (only ``unload`` so far)."""
        try:
            box.append(slot.runner.unload())
        except Exception as exc:
            box.append(exc)
        finally:
            done.set()
