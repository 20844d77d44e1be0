"""Children die with their parent: a child process calls :func:`die_with_parent` first thing.

The backend starts children (the job worker, the uploaded-file checker, the xatlas unwrap); when the
server dies without cleaning up (``kill -9``, the OOM killer), each must exit on its own rather than
hold memory, a GPU or a port for nobody. Two mechanisms, both always armed:

- Linux: ``prctl(PR_SET_PDEATHSIG)`` through ctypes: the kernel signals the child when its parent
  dies, even while the child's main thread sits in C code. The kernel sends it when the *thread* that
  started the child ends, not only the process, so unless that thread outlives the child
  (``hard=True``: the signal is SIGKILL) the signal is SIGUSR2 and its handler exits only when the
  parent really changed (``os.getppid()``, the child having been re-parented).
- Everywhere: a daemon thread that polls ``os.getppid()`` every ``poll_s`` seconds (a POSIX child
  is re-parented when its parent dies).

A process exits with code ``ORPHANED`` (``os._exit``: no cleanup that could hang on the dead parent).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

ORPHANED = 3
PR_SET_PDEATHSIG = 1


def parent_death_signal(signum: int) -> bool:
    """Ask the kernel to send ``signum`` to this process when its parent dies; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(parent: int | None = None, hard: bool = False, poll_s: float = 0.5) -> None:
    """Exit (code ``ORPHANED``) once the parent process ``parent`` (default: the current one) is gone.

    ``hard``: the thread that started this process waits for it (or lives as long as its process), so
    the kernel's signal may be SIGKILL, which works even while this process runs C code that holds the
    GIL. Call from the main thread (a signal handler is installed) before anything else."""
    parent = os.getppid() if parent is None else parent

    def orphaned() -> bool:
        return os.getppid() != parent

    if hard:
        parent_death_signal(signal.SIGKILL)
    elif threading.current_thread() is threading.main_thread():  # only there can a handler be installed
        signal.signal(signal.SIGUSR2, lambda signum, frame: os._exit(ORPHANED) if orphaned() else None)
        parent_death_signal(signal.SIGUSR2)
    if orphaned():  # the parent died before the signal was armed
        os._exit(ORPHANED)

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if orphaned():
                os._exit(ORPHANED)

    threading.Thread(target=watch, name="nfsd-lifeline", daemon=True).start()
