"""The endpoints of docs/API.md. Each reads the app's :class:`~nfsd.jobs.queue.JobManager` and config from
``request.app.state``; slow work (validation, disk) runs in the thread pool."""

from __future__ import annotations

import logging
import math
import os
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..limits import LIMITS
from ..jobs.store import CANCELLED, DONE, FAILED, INTERRUPTED, JobRecord, is_job_id
from ..jobs.queue import JobManager
from .config import ServerConfig
from .schemas import (Deleted, ErrorBody, Health, JobList, JobStatus, ResolvedSettings, SubmitResponse, Unloaded,
                      status_dict)
from .security import bearer, require_token, token_ok
from .uploads import DISK_FULL, MAP_FIELDS, disk_full, read_submission
from .validation import FileChecker, check_init_maps, model_defaults, parse_settings, read_request, resolve_request


def _manager(request: Request) -> JobManager:
    return request.app.state.manager


def _config(request: Request) -> ServerConfig:
    return request.app.state.config


def _checker(request: Request) -> FileChecker:
    return request.app.state.checker


Manager = Annotated[JobManager, Depends(_manager)]
Config = Annotated[ServerConfig, Depends(_config)]
Checker = Annotated[FileChecker, Depends(_checker)]

log = logging.getLogger("nfsd.server")

router = APIRouter()
private = APIRouter(dependencies=[Depends(require_token)])

NOT_FOUND = {404: {"model": ErrorBody}}
BINARY = {"application/octet-stream": {}}


def lookup(manager: JobManager, job_id: str) -> tuple[JobRecord, int]:
    if not is_job_id(job_id):
        raise HTTPException(422, f"malformed job id {job_id[:80]!r}: a job id is 32 lowercase hex characters")
    found = manager.snapshot_record(job_id)
    if found is None:
        raise HTTPException(404, f"no job {job_id} on this server (it may have been deleted or pruned)")
    return found


def json_safe(value, depth: int = 0):
    """``value`` with everything JSON cannot carry made harmless: text that UTF-8 cannot encode (a lone
    surrogate stored by an older server) escaped as ``\\udXXX``, NaN and infinities as null, other
    objects as their text. A record that cannot be listed would make every listing a 500."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth > 32:
        return "..."
    if isinstance(value, dict):
        return {json_safe(str(k)): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, depth + 1) for v in value]
    return json_safe(str(value))


def listed(rec: JobRecord, position: int) -> dict:
    """``status_dict`` made JSON-safe; a record that cannot even be read into one is listed as failed
    with an error saying so (never a 500 for every listing)."""
    try:
        return json_safe(status_dict(rec, position))
    except Exception as exc:  # a record on disk of another version, hand-edited, half-corrupt
        log.warning("job %r: its record cannot be listed (%s: %s)", getattr(rec, "id", "?"), type(exc).__name__, exc)
        job_id = json_safe(str(getattr(rec, "id", "")))
        return {"id": job_id, "state": FAILED, "queue_position": 0, "step": 0, "total": 0, "progress": 0.0,
                "eta_seconds": None, "elapsed_seconds": 0.0, "steps_per_second": None, "loss": None,
                "error": "this job's record on the server cannot be read; delete the job (DELETE /jobs/{id})",
                "created": 0.0, "started": None, "finished": None, "settings": {}, "preview_step": None,
                "has_result": False, "has_uvs": False, "resubmit_hint": None, "resubmitted_from": None, "stage": None,
                "worker": None, "retries": 0}


def _submitted(manager: JobManager, rec: JobRecord) -> SubmitResponse:
    found = manager.snapshot_record(rec.id)
    return SubmitResponse(id=rec.id, state=found[0].state if found else rec.state,
                          queue_position=found[1] if found else 0)


@router.get("/health", response_model=Health, response_model_exclude_unset=True,
            summary="up, version and whether a token is needed; device, model and queue with the token")
async def health(request: Request, manager: Manager, config: Config,
                 credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Health:
    if not token_ok(request, credentials):  # what is running, and on what, is for the token's holders
        return Health(status="ok", version=__version__, auth_required=True)
    info = manager.device_and_models()
    loading = manager.loading_model()
    running = manager.running_id()
    loaded = [] if loading else info.get("models") or []
    if running and not loading:  # the worker reports its cache between jobs; a running job holds its model
        rec = manager.get(running)
        loaded = [rec.settings.get("model") or config.model] if rec else loaded
    return Health(
        status="ok", version=__version__, device=info.get("device", "unknown"), gpu_name=info.get("gpu_name"),
        gpu_free_bytes=info.get("gpu_free_bytes"), model_loaded=loaded[0] if loaded else None,
        model_loading=loading,
        default_model=config.model, queue_length=manager.queue_length(), running_job=manager.running_id(),
        auth_required=bool(config.token), workers=manager.workers(),
    )


SUBMIT_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["mesh", "settings"],
    "properties": {
        "mesh": {"type": "string", "format": "binary",
                 "description": "wire-format .npz (positions, triangles, optional uvs, world_matrix)"},
        "settings": {"type": "string", "description": "JSON object, see JobSettings",
                     "example": '{"prompt": "weathered bronze", "steps": 400}'},
        "init_texture": {"type": "string", "format": "binary", "description": "optional PNG"},
        **{f: {"type": "string", "format": "binary",
               "description": f"optional PNG, the {name} map of a pbr texture to continue (with init_texture, its size)"}
           for f, name in MAP_FIELDS.items()},
    }}}}}}


@private.post("/jobs", status_code=202, response_model=SubmitResponse,
              summary="submit a job (multipart: mesh, settings, optional init_texture)",
              responses={code: {"model": ErrorBody} for code in (408, 411, 413, 415, 429, 507)},
              openapi_extra=SUBMIT_BODY)
async def submit(request: Request, manager: Manager, config: Config, checker: Checker) -> SubmitResponse:
    refuse_when_queue_full(manager, config)  # before reading a byte of the body
    spool = manager.store.root.parent / "uploads"
    sub = await read_submission(request, config, spool)
    try:
        settings = await run_in_threadpool(parse_settings, sub.settings_text, config)
        if settings.get("mode") == "dds" and sub.init_path is None:
            raise HTTPException(422, "mode dds edits a texture: send the current texture as init_texture")
        check_init_maps(settings, sub.init_path is not None, list(sub.map_paths))
        await checker.check(sub.mesh_path, sub.init_path, sub.map_paths)
        mesh = await run_in_threadpool(sub.mesh_path.read_bytes)
        init = await run_in_threadpool(sub.init_path.read_bytes) if sub.init_path else None
        maps = {MAP_FIELDS[f]: await run_in_threadpool(p.read_bytes) for f, p in sub.map_paths.items()}
        refuse_when_queue_full(manager, config)
        try:
            rec = await run_in_threadpool(manager.submit, mesh, settings, init, init_maps=maps or None)
        except OSError as exc:
            if exc.errno in DISK_FULL:
                raise disk_full(exc, manager.store.root) from None
            raise
    finally:
        await run_in_threadpool(sub.remove)
    return _submitted(manager, rec)


def refuse_when_queue_full(manager: JobManager, config: ServerConfig) -> None:
    """HTTP 429 when ``config.max_queue`` jobs already wait (the add-on's tests' fake backend refuses with it too)."""
    waiting = manager.queue_length()
    if waiting >= config.max_queue:
        raise HTTPException(429, f"the queue is full ({waiting} jobs waiting, this server's limit is "
                                 f"{config.max_queue}): submit again when a job has finished, or cancel one",
                            headers={"Retry-After": "30"})


@private.get("/jobs", response_model=JobList, summary="all jobs, newest first")
async def list_jobs(manager: Manager) -> JobList:
    return JSONResponse({"jobs": [listed(r, pos) for r, pos in manager.list()]})  # JobList's fields, made JSON-safe


@private.get("/jobs/{job_id}", response_model=JobStatus, summary="one job's status", responses=NOT_FOUND)
async def get_job(job_id: str, manager: Manager) -> JobStatus:
    return JSONResponse(listed(*lookup(manager, job_id)))  # same fields as JobStatus (tested), no re-validation


@private.get("/jobs/{job_id}/preview.png", response_class=Response,
             summary="latest texture snapshot (PNG, top row first)",
             responses={200: {"content": {"image/png": {}}}, **NOT_FOUND})
async def preview(job_id: str, manager: Manager):
    lookup(manager, job_id)
    data = manager.preview_cached(job_id)
    if data is None:
        data = await run_in_threadpool(manager.preview_bytes, job_id)
    if data is None:
        raise HTTPException(404, f"job {job_id} has no preview yet (the first one comes a few seconds into "
                                 "the optimization)")
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})


@private.get("/jobs/{job_id}/uvs", response_class=Response,
             summary="the per-corner UVs the texture is laid out on (.npz: uvs, uvs_generated), known before "
                     "the optimization starts",
             responses={200: {"content": BINARY}, **NOT_FOUND})
async def uvs(job_id: str, manager: Manager):
    rec, _ = lookup(manager, job_id)
    data = await run_in_threadpool(manager.uvs_bytes, job_id) if rec.has_uvs else None
    if data is None:
        if rec.state in (FAILED, CANCELLED, INTERRUPTED):
            msg = f"job {job_id} is {rec.state} and its UVs were never known"
            if rec.error:
                msg += f" (error: {json_safe(rec.error)})"
        else:
            msg = (f"job {job_id} is {rec.state}: its UVs are known once its mesh is prepared, when it "
                   "leaves the queue; poll GET /jobs/{id} until has_uvs is true")
        raise HTTPException(404, msg)
    return Response(data, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="nfsd-{job_id}-uvs.npz"'})


@private.get("/jobs/{job_id}/result", response_class=FileResponse,
             summary="the result .npz (texture, uvs, uvs_generated, offsets, meta)",
             responses={200: {"content": BINARY}, **NOT_FOUND, 409: {"model": ErrorBody}})
async def result(job_id: str, manager: Manager):
    rec, _ = lookup(manager, job_id)
    path = manager.result_path(job_id)
    if rec.state != DONE:
        msg = f"job {job_id} is {rec.state}; its result exists once it is done"
        if rec.error:
            msg += f" (error: {json_safe(rec.error)})"
        raise HTTPException(409, msg)
    # Opened here, streamed from the open file: a DELETE that removes the job in between cannot turn
    # the download into a 500 ("result.npz does not exist"); it is a 404 before the open, whole after.
    try:
        handle = await run_in_threadpool(open, path, "rb")
    except FileNotFoundError:
        raise HTTPException(404, f"job {job_id} was deleted (or pruned) while its result was requested; "
                                 "its result is gone") from None
    size = os.fstat(handle.fileno()).st_size
    return StreamingResponse(_chunks(handle), media_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="nfsd-{job_id}.npz"', "Content-Length": str(size)})


def _chunks(handle, size: int = 1 << 20):
    """The bytes of an open file in pieces (starlette iterates a plain generator in its thread pool)."""
    try:
        while chunk := handle.read(size):
            yield chunk
    finally:
        handle.close()


@private.post("/jobs/{job_id}/cancel", response_model=JobStatus, summary="cancel a queued or running job",
              responses=NOT_FOUND)
async def cancel(job_id: str, manager: Manager) -> JobStatus:
    lookup(manager, job_id)
    manager.cancel(job_id)
    return JSONResponse(listed(*lookup(manager, job_id)))


@private.post("/jobs/{job_id}/resubmit", status_code=202, response_model=SubmitResponse,
              summary="run a failed, cancelled or interrupted job again (new id, same inputs)",
              responses={**NOT_FOUND, 409: {"model": ErrorBody}})
async def resubmit(job_id: str, manager: Manager) -> SubmitResponse:
    lookup(manager, job_id)
    try:
        rec = await run_in_threadpool(manager.resubmit, job_id)
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    except KeyError:
        raise HTTPException(404, f"no job {job_id} on this server") from None
    return _submitted(manager, rec)


@private.delete("/jobs/{job_id}", response_model=Deleted, summary="remove a job that is not running, and its files",
                responses={**NOT_FOUND, 409: {"model": ErrorBody}})
async def delete(job_id: str, manager: Manager) -> Deleted:
    lookup(manager, job_id)
    try:
        await run_in_threadpool(manager.delete, job_id)
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    except KeyError:
        raise HTTPException(404, f"no job {job_id} on this server") from None
    return Deleted(deleted=job_id)


@private.get("/models", summary="the models and LoRAs this server offers (nfsd.priors.catalog)")
async def models(config: Config) -> dict:
    entries = await run_in_threadpool(lambda: [e.to_dict() for e in config.catalog().entries()])
    for entry in entries:
        entry["defaults"] = model_defaults(entry)
    return {"default_model": config.model, "models": entries}


@private.post("/settings/resolve", response_model=ResolvedSettings,
              summary="what a job with these settings would run (every key resolved for its model) and the time "
                      "it may take on this server; nothing runs",
              responses={code: {"model": ErrorBody} for code in (411, 413, 422)})
async def resolve_settings(request: Request, manager: Manager, config: Config) -> ResolvedSettings:
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise HTTPException(411, "send the settings JSON with a Content-Length header")
    if int(length) > LIMITS["max_settings_bytes"]:
        raise HTTPException(413, f"settings is {int(length):,} bytes; at most {LIMITS['max_settings_bytes']:,} are "
                                 "accepted")
    text = (await request.body()).decode("utf-8", errors="replace")
    resolved = await run_in_threadpool(lambda: resolve_request(read_request(text), config))
    settings, speeds = resolved.settings, manager.speeds  # keyed by the stored settings, as jobs record them
    return ResolvedSettings(settings=settings, model_family=resolved.family, render_size=resolved.render_size,
                            steps_per_second=speeds.steps_per_second(settings), estimate_seconds=speeds.estimate(settings))


@private.post("/model/unload", response_model=Unloaded,
              summary="free the cached model (after the running job, if any, it is loaded again)")
async def unload(manager: Manager) -> Unloaded:
    try:
        return Unloaded(unloaded=await run_in_threadpool(manager.unload_model))
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    except TimeoutError as exc:
        raise HTTPException(503, str(exc)) from None


router.include_router(private)
