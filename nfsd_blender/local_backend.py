# SPDX-License-Identifier: GPL-3.0-or-later
"""Start and stop a backend on this computer (``nfsd serve``) on the artist's request.

The backend has its own Python with torch; Blender's Python never imports it. The add-on only
runs the command the artist configured, writes its output to a log file, and stops it when the
add-on is disabled or Blender quits. One process at most (module state, guarded by a lock).
"""

from __future__ import annotations

import atexit
import os
import shlex
import subprocess
import tempfile
import threading
import time
import urllib.parse

from .client import BackendError, Client, is_loopback, normalize_url

_lock = threading.Lock()
_process: subprocess.Popen | None = None
_log_path = os.path.join(tempfile.gettempdir(), "nfsd-backend.log")


def executable_problem(path: str) -> str | None:
    """Why ``path`` cannot start a backend (one line for the artist), or None: it must be an
    existing, executable file named python* (the backend's virtual environment) or nfsd*."""
    if not path or not path.strip():
        return "Pick the backend's Python or nfsd program (in its virtual environment's bin/ folder)"
    path = os.path.abspath(os.path.expanduser(path.strip()))
    if not os.path.exists(path):
        return f"{path} does not exist; pick the backend's Python or nfsd program"
    if os.path.isdir(path):
        return (f"{path} is a folder; pick the python or nfsd program in its "
                f"{'Scripts' if os.name == 'nt' else 'bin'} folder")
    if os.name != "nt" and not os.access(path, os.X_OK):
        return f"{path} is not executable (chmod +x it, or pick the backend's Python)"
    name = os.path.basename(path).lower()
    if not (name.startswith("python") or name.startswith("nfsd")):
        return f"{os.path.basename(path)} is neither a Python nor the nfsd program"
    return None


def command_for_executable(path: str) -> str:
    """The start command for the backend's Python (``-m nfsd.cli serve``) or nfsd program (``serve``)."""
    path = os.path.abspath(os.path.expanduser(path.strip()))
    quoted = subprocess.list2cmdline([path]) if os.name == "nt" else shlex.quote(path)
    return quoted if os.path.basename(path).lower().startswith("python") else f"{quoted} serve"


def build_command(command: str, url: str) -> list[str]:
    """The argument list that starts a backend for ``url``.

    ``command`` is either a full command (``nfsd serve --model /models/sd15``) or just the path of
    the backend's Python (``/envs/nfsd/bin/python``), which becomes ``python -m nfsd.cli serve``.
    ``--host``/``--port`` are added from ``url`` unless the command names a port itself.
    """
    url = normalize_url(url)
    if not is_loopback(url):
        raise BackendError(f"The backend URL {url} is not on this computer, so the add-on cannot start it; "
                           "use 127.0.0.1 or start that backend yourself.", kind="url")
    args = shlex.split(command.strip(), posix=(os.name != "nt")) if command and command.strip() else []
    if not args:
        raise BackendError("Set the command that starts the backend in the add-on's preferences "
                           "(for example `nfsd serve` or the path of the backend's Python).", kind="url")
    if len(args) == 1 and os.path.basename(args[0]).lower().startswith("python"):
        args += ["-m", "nfsd.cli", "serve"]
    if "--port" not in args and not any(a.startswith("--port=") for a in args):
        parts = urllib.parse.urlsplit(url)
        args += ["--host", parts.hostname or "127.0.0.1", "--port", str(parts.port)]
    return args


def is_running() -> bool:
    """True while a backend started by the add-on is alive."""
    with _lock:
        return _process is not None and _process.poll() is None


def log_path() -> str:
    """Where the started backend's output goes."""
    return _log_path


def start(command: str, url: str) -> subprocess.Popen:
    """Start the backend (if the add-on's one is not already running); returns the process."""
    global _process
    args = build_command(command, url)
    with _lock:
        if _process is not None and _process.poll() is None:
            return _process
        try:
            log = open(_log_path, "wb")  # this start's output only: its tail explains a failure
        except OSError:
            log = subprocess.DEVNULL
        try:
            _process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        close_fds=True)
        except OSError as error:
            raise BackendError(f"Could not start the backend with {shlex.join(args)!r}: {error}. Check the "
                               "command in the add-on's preferences.", kind="unreachable") from None
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        return _process


def wait_until_up(url: str, token: str = "", timeout: float = 60.0, cancel: threading.Event | None = None) -> dict:
    """Poll ``/health`` until the backend answers; returns the health dict. Raises BackendError with
    the log's tail if the started process exits, or after ``timeout`` seconds. Worker threads only."""
    client = Client(url, token, timeout=2.0)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.health()
        except BackendError as error:
            if error.kind != "unreachable":
                raise
        with _lock:
            exited = _process is not None and _process.poll() is not None
        if exited or time.monotonic() > deadline:
            what = "exited" if exited else f"did not answer within {timeout:.0f} s"
            raise BackendError(f"The local backend {what}. Its output is in {_log_path}: {_log_tail()}",
                               kind="unreachable")
        if cancel is not None and cancel.wait(0.5):
            raise BackendError("Cancelled while waiting for the backend to start.", kind="unreachable")
        elif cancel is None:
            time.sleep(0.5)


def stop(timeout: float = 10.0) -> bool:
    """Stop the backend the add-on started; True if there was one."""
    global _process
    with _lock:
        process, _process = _process, None
    if process is None:
        return False
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return True


def log_tail(lines: int = 8) -> list[str]:
    """The last ``lines`` lines of the started backend's output ([] when there is none)."""
    try:
        with open(_log_path, encoding="utf-8", errors="replace") as file:
            return file.read().strip().splitlines()[-lines:]
    except OSError:
        return []


def _log_tail(lines: int = 5) -> str:
    return " | ".join(log_tail(lines)) or "(empty log)"


atexit.register(stop)
