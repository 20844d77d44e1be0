"""Running one job: ``run_job`` takes a job folder (``mesh.npz``, ``init_texture.png``) to its ``Outcome``,
reporting through ``JobEvents`` and stopping at a ``CancelSignal``; ``make_texture_job`` builds the engine's
``TextureJob`` from the stored inputs. The same code runs a job in the worker process
(``nfsd.jobs.worker``), in a test's thread (``nfsd.jobs.runner.ThreadRunner``) and in a Ray actor
(``nfsd.jobs.ray_actor``).

Conventions: ``run_job`` never raises: a failure is ``Outcome("failed")`` with a one-line error
(``failure_message``; an out-of-memory error names the settings to lower, ``OOM_HINT``). Files it writes
into the folder: ``uvs.npz`` once the UVs are final, ``result.npz`` when the job is done (atomically).
Previews are PNG bytes of ``snapshot()`` (uint8 ``[H, W, 3]``) with the step they show.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..distill.image_files import decode_png
from ..errors import Cancelled, NfsdError, OutOfMemory
from .events import CancelSignal, JobEvents, Outcome
from .results import encode_png, result_npz, store_job_uvs
from .store import atomic_write, read_init_maps

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
                     cancelled: Callable[[], bool] | None = None, init_maps: dict[str, bytes] | None = None):
    """The engine's TextureJob for a job's stored inputs (the default ``make_job`` of JobManager).

    ``config``: anything with ``default_model`` and ``device`` (a ``ManagerConfig``). A mesh without
    UVs (or with ``uvs: unwrap``) is unwrapped here (``nfsd.geometry.unwrap.ensure_uvs``: ``on_stage("unwrapping N faces", elapsed)``
    while it runs; ``cancelled()`` polled, raising ``nfsd.errors.Cancelled`` within 50 ms). ``init_maps``: a pbr
    job's init maps (map name -> PNG bytes, ``nfsd.jobs.store.INIT_MAPS``), decoded as the init texture is."""
    from ..distill.tiles import make_job
    from ..settings import resolve
    from ..geometry.wire import read_wire_npz

    # The server checked this mesh against its own --max-faces / --max-vertices at submission.
    mesh = read_wire_npz(mesh_npz, max_faces=2**31 - 1, max_vertices=2**31 - 1)
    # The stored settings are resolved at submission; resolving again (the same function) also reads
    # records of older servers, which stored only what the request named.
    cfg = resolve(settings, default_model=config.default_model, overrides={"device": config.device})
    init = decode_png(init_png) if init_png is not None else None
    maps = {name: decode_png(data) for name, data in (init_maps or {}).items()} or None
    if cancelled is not None and cancelled():
        raise Cancelled("cancelled before the job started")
    # uvs: unwrap drops the mesh's UVs before the unwrap; a UDIM mesh runs on an atlas (nfsd.distill.tiles)
    return make_job(mesh, cfg, init, on_progress=on_stage, cancelled=cancelled, init_maps=maps)


def run_job(job_id: str, folder: Path, settings: dict, has_init: bool, cancel: CancelSignal, events: JobEvents,
            config, make_job: Callable = make_texture_job) -> Outcome:
    """Run one job from its folder (``mesh.npz``, ``init_texture.png`` and any init maps when ``has_init``) to its ``Outcome``,
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
        maps = read_init_maps(folder) if has_init else {}
        job = make_job((folder / "mesh.npz").read_bytes(), settings, init_png, config, on_stage=events.stage,
                       cancelled=cancel.is_set, **({"init_maps": maps} if maps else {}))
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
