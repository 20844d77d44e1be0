"""The worker process that runs the server's jobs, its pipe protocol, and ``run_job``: one job, run the
same way in that process and in a test's thread (``nfsd.jobs.runner.ThreadRunner``).

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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import Cancelled, NfsdError, OutOfMemory
from ..distill.image_files import decode_png
from .events import CancelSignal, JobEvents, Outcome
from .results import encode_png, result_npz, store_job_uvs
from .store import atomic_write

log = logging.getLogger("nfsd.jobs")

OOM_HINT = ("the GPU ran out of memory: lower render_size or batch (then texture_size), close other GPU "
            "programs, or unload other models, and submit again")



def is_cuda_oom(exc: BaseException) -> bool:
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_gpu_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


def failure_message(exc: Exception, job_id: str) -> str:
    """The error line of a job that raised ``exc`` (GPU memory freed after an out-of-memory error)."""
    if isinstance(exc, NfsdError):
        if isinstance(exc, OutOfMemory):
            free_gpu_memory()
        return str(exc)
    if is_cuda_oom(exc):
        log.warning("job %s: CUDA out of memory", job_id)
        free_gpu_memory()
        return f"{OOM_HINT} ({str(exc).splitlines()[0] if str(exc) else 'OOM'})"
    log.exception("job %s failed", job_id, exc_info=exc)
    return f"{type(exc).__name__}: {exc}"


def make_texture_job(mesh_npz: bytes, settings: dict, init_png: bytes | None, config,
                     on_stage: Callable[[str, float], None] | None = None,
                     cancelled: Callable[[], bool] | None = None):
    """The engine's TextureJob for a job's stored inputs (the default ``make_job`` of JobManager).

    ``config``: anything with ``default_model`` and ``device`` (a ``ManagerConfig``). A mesh without
    UVs (or with ``uvs: unwrap``) is unwrapped here (``nfsd.geometry.unwrap.ensure_uvs``: ``on_stage("unwrapping N faces", elapsed)``
    while it runs; ``cancelled()`` polled, raising ``nfsd.errors.Cancelled`` within 50 ms)."""
    from ..distill.tiles import make_job
    from ..settings import resolve
    from ..geometry.wire import read_wire_npz

    # The server checked this mesh against its own --max-faces / --max-vertices at submission.
    mesh = read_wire_npz(mesh_npz, max_faces=2**31 - 1, max_vertices=2**31 - 1)
    # The stored settings are resolved at submission; resolving again (the same function) also reads
    # records of older servers, which stored only what the request named.
    cfg = resolve(settings, default_model=config.default_model, overrides={"device": config.device})
    init = decode_png(init_png) if init_png is not None else None
    if cancelled is not None and cancelled():
        raise Cancelled("cancelled before the job started")
    # uvs: unwrap drops the mesh's UVs before the unwrap; a UDIM mesh runs on an atlas (nfsd.distill.tiles)
    return make_job(mesh, cfg, init, on_progress=on_stage, cancelled=cancelled)


def run_job(job_id: str, folder: Path, settings: dict, has_init: bool, cancel: CancelSignal, events: JobEvents,
            config, make_job: Callable = make_texture_job) -> Outcome:
    """Run one job from its folder (``mesh.npz``, ``init_texture.png`` when ``has_init``) to its ``Outcome``,
    writing ``uvs.npz`` once the UVs are final and ``result.npz`` when it is done.

    ``make_job(mesh_npz, settings, init_png, config, on_stage=, cancelled=)`` builds the job (default: the
    engine's ``TextureJob``; tests pass fakes): anything with ``run(on_progress) -> TextureResult`` and
    ``cancel()``; optionally ``abort()`` (a cancel that wants no result: no finishing, no last preview)
    and ``snapshot() -> uint8 [H, W, 3]`` (previews every ``config.preview_interval`` s, from a thread
    of its own so the job never waits for PNG encoding). A cancel that arrives after the last step
    keeps the finished result (``done``). Never raises: a failure is ``Outcome("failed")``
    with a one-line error (an out-of-memory error names the setting to lower)."""
    finished = threading.Event()
    t0 = time.monotonic()
    job = snapshot = None
    try:
        init_png = (folder / "init_texture.png").read_bytes() if has_init else None
        job = make_job((folder / "mesh.npz").read_bytes(), settings, init_png, config,
                       on_stage=events.stage, cancelled=cancel.is_set)
        events.stage(None, time.monotonic() - t0)  # the mesh is ready: no stage line outlives its stage
        # The UVs are final once the job exists (unwrapped if the mesh had none): clients can lay the
        # live preview on the mesh from now on, long before the result.
        if store_job_uvs(folder, job):
            events.uvs()
        # A cancelled job's result is not kept: the engine may skip its finishing (abort), fakes cancel.
        cancel.on_set(getattr(job, "abort", job.cancel))
        last = {"step": 0, "sent": 0}

        def on_progress(p) -> None:
            last["step"] = p.step
            events.progress(p)

        snapshot = getattr(job, "snapshot", None)
        if snapshot is not None:
            threading.Thread(target=_previews, args=(snapshot, last, events.preview, finished,
                                                     float(getattr(config, "preview_interval", 2.0))),
                             name="nfsd-previews", daemon=True).start()
        result = job.run(on_progress)
    except Cancelled:
        finished.set()
        if job is not None and snapshot is not None and last["step"] != last["sent"]:
            snap = snapshot()  # an aborted job leaves no result: the preview shows where it stopped
            if snap is not None:
                events.preview(encode_png(snap), last["step"])
        return Outcome("cancelled")
    except Exception as exc:
        return Outcome("failed", error=failure_message(exc, job_id))
    finally:
        finished.set()
    if result.texture is not None:
        events.preview(encode_png(np.asarray(result.texture)), int(result.steps_done))
    if result.cancelled:
        return Outcome("cancelled", steps_done=int(result.steps_done))
    try:
        if folder.is_dir():  # deleted meanwhile: nothing to keep
            atomic_write(folder / "result.npz", result_npz(result, job_id))
    except Exception as exc:
        log.exception("job %s: could not write its result", job_id)
        return Outcome("failed", error=f"could not write the result: {type(exc).__name__}: {exc}")
    rate = result.timings.get("steps_per_s") if isinstance(result.timings, dict) else None
    return Outcome("done", steps_done=int(result.steps_done), steps_per_s=float(rate) if rate else None)


def _previews(snapshot: Callable, last: dict, preview: Callable[[bytes, int], None], finished: threading.Event,
              interval: float) -> None:
    """Every ``interval`` s until ``finished``: a PNG of ``snapshot()`` when the job has stepped since
    (``last["step"]``, the latest reported step; ``last["sent"]``, the step of the latest preview)."""
    while not finished.wait(interval):
        now = last["step"]
        if now != last["sent"]:
            snap = snapshot()
            if snap is not None and not finished.is_set():
                preview(encode_png(snap), now)
                last["sent"] = now


@dataclass
class JobDefaults:
    """What ``make_texture_job`` and the worker process need of the server's settings (a ``ManagerConfig``
    has the same attributes): the model of jobs that name none, the device, seconds between previews."""

    default_model: str = "builtin"
    device: str = "auto"
    preview_interval: float = 2.0


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

    events = JobEvents(
        progress=lambda p: send(("progress", p.phase, p.step, p.total, p.loss, p.elapsed, p.eta, p.fraction)),
        uvs=lambda: send(("uvs",)),
        preview=lambda png, step: send(("preview", step, png)),
        stage=lambda text, elapsed: send(("stage", text, elapsed)),
    )
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
