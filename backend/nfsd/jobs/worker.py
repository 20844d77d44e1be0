"""The worker process that runs the server's jobs and its pipe protocol. Each job runs through
``nfsd.jobs.job_run.run_job``, the same function a test's thread (``nfsd.jobs.runner.ThreadRunner``) and a
Ray actor call.

Jobs run in a child process (spawned, never forked: the parent may hold CUDA or threads) so that no
GIL is shared with the HTTP server and a crash there (CUDA fatal error, a segfault, the OOM killer)
cannot take the server down. One job at a time; the model cache lives in the child. The child never
outlives the server: it exits when its pipe closes, and ``nfsd.processes.lifeline`` ends it when the server
dies (even by ``kill -9``).

The pipe protocol (tuples, pickled by ``multiprocessing.Connection``):

parent -> child
    ``("run", job_id, job_dir, settings, has_init)``  run one job (the child reads its inputs from job_dir)
    ``("cancel",)``   stop the running job (at its next check: within about one view's work)
    ``("unload",)``   free the cached models (answered by ``unloaded``)
    ``("exit",)``     cancel the running job and exit
child -> parent
    ``("info", {device, gpu_name, gpu_free_bytes, models, model_loads})``  after start-up, after each job and unload
    ``("device", {device, gpu_name, gpu_free_bytes})``  every ~5 s while a job runs (for /health)
    ``("stage", text | None, elapsed)``  preparing the mesh ("unwrapping N faces"); None: that stage ended
    ``("uvs",)``      ``uvs.npz`` is in the job folder
    ``("progress", phase, step, total, loss, elapsed, eta, fraction)``  a ``Progress``
    ``("preview", step, png_bytes)``
    ``("end", "done" | "cancelled" | "failed", {steps_done, steps_per_s, error})``  an ``Outcome``
    ``("unloaded", had_model)``
The child writes ``uvs.npz`` and ``result.npz`` into the job folder itself. EOF on the pipe, either
way, means the other side is gone.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Callable

from .events import CancelSignal, message_events
from .job_run import JobDefaults, run_job

log = logging.getLogger("nfsd.jobs")


def guess_device(device: str) -> str:
    if device != "auto":
        return "cuda" if device.startswith("cuda") else device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"

class WorkerProcess:
    """The worker process and the parent's end of its pipe. ``recv`` returns None once the process is gone.

    ``on_info(dict)`` receives the child's device and model reports (``info`` and ``device`` messages).
    """

    def __init__(self, config, on_info: Callable[[dict, bool], None]):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold CUDA or threads
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=_child_main, name="nfsd-gpu-worker",
            args=(child_conn, config.default_model, config.device, config.preview_interval, config.torch_threads),
            daemon=True,
        )
        self.process.start()
        child_conn.close()
        self._send_lock = threading.Lock()
        self._on_info = on_info

    def alive(self) -> bool:
        return self.process.is_alive()

    def send(self, msg) -> None:
        try:
            with self._send_lock:
                self.conn.send(msg)
        except (OSError, ValueError):
            pass  # the process is gone; recv() reports it

    def recv(self):
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            return None

    def cancel(self) -> None:
        self.send(("cancel",))

    def exitcode(self):
        self.process.join(2.0)
        return self.process.exitcode

    def close(self, timeout: float = 10.0) -> None:
        self.send(("exit",))
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5.0)
        self.conn.close()

    def _info(self, msg) -> bool:
        """Handle an ``info``/``device`` message; False for any other."""
        if msg[0] == "info":
            self._on_info(msg[1], False)
        elif msg[0] == "device":
            self._on_info(msg[1], True)
        else:
            return False
        return True

    def drain(self) -> None:
        """Read what an idle worker sent (its device report after start-up) so /health is current."""
        try:
            while self.conn.poll():
                msg = self.recv()
                if msg is None:
                    break
                self._info(msg)
        except (OSError, EOFError):
            pass

    def start_job(self, job_id: str, job_dir: str, settings: dict, has_init: bool) -> None:
        """Ask the child to run one job (then ``cancel`` may follow; ``wait_job`` collects the outcome)."""
        self.send(("run", job_id, job_dir, settings, has_init))

    def wait_job(self, on_message: Callable[[tuple], None]) -> tuple[str, dict] | None:
        """Until the job ends: ``on_message`` gets its progress/preview/uvs messages. Returns ``(outcome,
        payload)`` of its ``end`` message, or None when the process died (its exit code: ``exitcode()``)."""
        while True:
            msg = self.recv()
            if msg is None:
                return None
            if self._info(msg):
                continue
            if msg[0] == "end":
                return msg[1], msg[2]
            on_message(msg)

    def unload(self) -> bool | None:
        """Free the child's cached models: whether one was loaded; None if the process is gone."""
        self.send(("unload",))
        while True:
            msg = self.recv()
            if msg is None:
                return None
            if msg[0] == "unloaded":
                return bool(msg[1])
            self._info(msg)


def _child_info() -> dict:
    from ..distill.engine import device_info
    from ..priors.prior import load_count, loaded_models

    return dict(device_info(), models=loaded_models(), model_loads=load_count())



def _child_main(conn, default_model: str, device: str, preview_interval: float, torch_threads: int) -> None:
    """Entry point of the worker process: runs one job at a time as the parent asks; exits with the parent."""
    import signal

    import torch

    from ..processes.lifeline import die_with_parent

    die_with_parent()  # even when the server is killed with SIGKILL (the pipe's EOF needs a live reader)
    # Ctrl-C in the server's terminal reaches this process too: the server decides how its jobs end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    if torch_threads:
        torch.set_num_threads(torch_threads)
    if device.startswith("cuda:"):  # one of `nfsd serve --devices`: its reports (device_info) are of that GPU
        torch.cuda.set_device(torch.device(device))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    send_lock = threading.Lock()

    def send(msg) -> None:
        with send_lock:
            conn.send(msg)

    config = JobDefaults(default_model=default_model, device=device, preview_interval=preview_interval)
    cancel = CancelSignal()
    cancel.set()  # no job yet
    send(("info", _child_info()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            os._exit(0)  # the server is gone: never outlive it
        if msg[0] == "run":
            cancel = CancelSignal()
            threading.Thread(target=_child_run, args=(send, cancel, config, *msg[1:]), daemon=True).start()
        elif msg[0] == "cancel":
            cancel.set()
        elif msg[0] == "unload":
            from ..priors.prior import unload_all

            had = unload_all()
            send(("info", _child_info()))
            send(("unloaded", had))
        elif msg[0] == "exit":
            cancel.set()
            return


def _child_run(send, cancel: CancelSignal, config: JobDefaults, job_id: str, job_dir: str, settings: dict,
               has_init: bool) -> None:
    """One ``run`` message: ``run_job`` with events that become pipe messages, then ``info`` and ``end``."""
    from ..distill.engine import device_info

    events = message_events(send)
    running = threading.Event()

    def report_device() -> None:  # free GPU memory for /health, every ~5 s
        while not running.wait(5.0):
            send(("device", device_info()))

    threading.Thread(target=report_device, daemon=True).start()
    try:
        outcome = run_job(job_id, Path(job_dir), settings, has_init, cancel, events, config)
    finally:
        running.set()
    try:
        send(("info", _child_info()))
    except Exception:
        log.exception("could not report device info")
    send(("end", outcome.state, outcome.payload()))
