"""Ctrl-C while a job runs in this process (``nfsd texture``, ``nfsd demo``, an in-process ``nfsd batch``)."""

from __future__ import annotations

import signal
import threading


class CtrlC:
    """SIGINT while a run is on: the first asks ``job`` (anything with ``cancel()``) to stop after its
    current step, so what exists is still written; a second raises ``KeyboardInterrupt`` at once.
    ``count`` says how many came. Installed in the main thread only (Python's rule); a no-op elsewhere.

        with CtrlC() as ctrl_c:
            ctrl_c.job = job
            job.run()
    """

    def __init__(self):
        self.count = 0
        self.job = None
        self._previous = None

    def __enter__(self) -> "CtrlC":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False

    def _handle(self, signum, frame) -> None:
        self.count += 1
        if self.count > 1:
            raise KeyboardInterrupt
        if self.job is not None:
            self.job.cancel()  # no printing here: the handler may have interrupted tqdm mid-write
