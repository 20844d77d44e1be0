"""The local HTTP API (FastAPI + uvicorn) that the Blender add-on talks to: see docs/API.md.

``create_app(ServerConfig(...))`` builds the app (tests run it with uvicorn on an ephemeral loopback
port); ``serve(...)`` is what ``nfsd serve`` calls. One :class:`nfsd.jobs.JobManager` per app runs the
jobs on a single worker thread; every request is answered from memory or from files on disk, so
polling never waits for the GPU.
"""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import os
import secrets
import zipfile
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from . import __version__
from .errors import ConfigError, NfsdError
from .jobs import DONE, CANCELLED, FAILED, INTERRUPTED, JobManager, JobRecord, ManagerConfig, is_job_id

log = logging.getLogger("nfsd.server")

DEFAULT_PORT = 7870
MAX_UPLOAD_BYTES = 256 * 1024 * 1024
MAX_FACES = 500_000
MAX_PROMPT_CHARS = 2000


def default_data_dir() -> Path:
    """``$NFSD_DATA_DIR``, else ``$XDG_DATA_HOME/nfsd`` (``~/.local/share/nfsd``), or ``%LOCALAPPDATA%\\nfsd`` on Windows."""
    if os.environ.get("NFSD_DATA_DIR"):
        return Path(os.environ["NFSD_DATA_DIR"]).expanduser()
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "nfsd"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "nfsd"


@dataclass
class ServerConfig:
    """Everything ``nfsd serve`` can set.

    Attributes:
        host, port: where to listen; anything but a loopback address requires ``token``.
        token: when set, every request but ``GET /health`` (and the docs pages) needs
            ``Authorization: Bearer <token>``. The docs pages are served on loopback only.
        data_dir: jobs live in ``data_dir/jobs/<id>/``; default :func:`default_data_dir`.
        model: the model of jobs whose settings name none.
        device: ``auto`` | ``cpu`` | ``cuda``.
        max_jobs: finished jobs kept on disk (oldest pruned first).
        max_age_days: finished jobs older than this are pruned (None: never by age).
        max_upload_bytes: largest accepted ``POST /jobs`` body (413 beyond).
        max_faces: largest accepted mesh, in triangles (422 beyond).
        torch_threads: CPU threads of torch in the worker process (0: torch's default).
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    data_dir: Path | None = None
    model: str = "builtin"
    device: str = "auto"
    max_jobs: int = 50
    max_age_days: float | None = 30.0
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_faces: int = MAX_FACES
    preview_interval: float = 2.0
    status_interval: float = 0.5
    torch_threads: int = 0

    def check(self) -> None:
        """Raise ``ConfigError`` for a configuration that must not start (e.g. a public host with no token)."""
        if self.token is not None and not self.token.strip():
            raise ConfigError("--token is empty: pass a non-empty token or leave the option out")
        if not is_loopback_host(self.host) and not self.token:
            raise ConfigError(
                f"refusing to listen on {self.host!r} without a token: anyone who can reach this machine could "
                "run jobs and read results. Pass --token <secret> (and set the same token in the add-on), "
                "or listen on 127.0.0.1"
            )
        if not (0 <= int(self.port) <= 65535):
            raise ConfigError(f"--port {self.port} is out of range 0..65535")
        if self.max_jobs < 0:
            raise ConfigError(f"max_jobs must be >= 0, got {self.max_jobs}")


def is_loopback_host(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 and ``::1``; ``0.0.0.0`` and every other address are not."""
    host = (host or "").strip().strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# Models of requests and responses

class JobSettings(BaseModel):
    """The ``settings`` JSON of ``POST /jobs``: the CLI's options with underscores. Unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), strict=False)

    prompt: str = Field(..., description="what the texture should show; non-empty, within the model's token limit")
    negative_prompt: str | None = Field(None, description="default: the NFSD paper's negative prompt")
    mode: Literal["nfsd", "sds", "csd"] = "nfsd"
    steps: int = Field(400, ge=1, le=10000)
    texture_size: int = Field(1024, ge=64, le=4096, description="a multiple of 64")
    render_size: int = Field(512, ge=32, le=1024, description="a multiple of 8")
    batch: int = Field(1, ge=1, le=16)
    guidance_scale: float | None = Field(None, ge=0.0, le=200.0, description="default: the mode's own (7.5, 100, 7.5)")
    offsets: bool = False
    offset_strength: float = Field(0.03, ge=0.0, le=0.2)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    model: str | None = Field(None, description="model id or path on the server; default: the server's --model")

    @field_validator("prompt")
    @classmethod
    def _prompt_not_empty(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("the prompt is empty: describe the texture, e.g. 'weathered bronze statue'")
        if len(v) > MAX_PROMPT_CHARS:
            raise ValueError(f"the prompt has {len(v)} characters; at most {MAX_PROMPT_CHARS} are accepted")
        return v

    @field_validator("texture_size")
    @classmethod
    def _texture_multiple(cls, v: int) -> int:
        if v % 64:
            raise ValueError(f"texture_size must be a multiple of 64 (e.g. 512, 1024, 2048), got {v}")
        return v

    @field_validator("render_size")
    @classmethod
    def _render_multiple(cls, v: int) -> int:
        if v % 8:
            raise ValueError(f"render_size must be a multiple of 8 (e.g. 256, 512), got {v}")
        return v


class SubmitResponse(BaseModel):
    id: str = Field(..., description="32 lowercase hex characters")
    state: str
    queue_position: int


class JobStatus(BaseModel):
    id: str
    state: Literal["queued", "loading", "running", "done", "failed", "cancelled", "interrupted"]
    queue_position: int = Field(..., description="1 = next to run; 0 = running or not queued")
    step: int
    total: int
    progress: float = Field(..., description="0..1 within the current phase (loading or optimizing)")
    eta_seconds: float | None
    elapsed_seconds: float
    steps_per_second: float | None
    loss: float | None
    error: str | None
    created: float = Field(..., description="Unix time")
    started: float | None
    finished: float | None
    settings: dict
    preview_step: int | None = Field(..., description="step of the latest preview.png; None before the first")
    has_result: bool
    has_uvs: bool = Field(..., description="GET /jobs/{id}/uvs is ready: the UVs the texture is laid out on")
    resubmit_hint: str | None = Field(..., description="how to run the job again when it failed, was cancelled or interrupted")
    resubmitted_from: str | None
    stage: str | None = Field(None, description="what an active job does now: 'unwrapping 81,920 faces', "
                                                "'loading the model' or 'optimizing'")


class JobList(BaseModel):
    jobs: list[JobStatus]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    device: str
    gpu_name: str | None
    gpu_free_bytes: int | None
    model_loaded: str | None = Field(..., description="model held in memory, if any")
    model_loading: str | None = Field(..., description="model being loaded by the running job, if any")
    default_model: str
    queue_length: int = Field(..., description="jobs waiting (the running one not counted)")
    running_job: str | None
    auth_required: bool


class Unloaded(BaseModel):
    unloaded: bool


class Deleted(BaseModel):
    deleted: str


class ErrorBody(BaseModel):
    detail: str


def _status_dict(rec: JobRecord, position: int) -> dict:
    """The ``JobStatus`` fields as a plain dict (status polls skip pydantic: they must stay cheap)."""
    hint = f"POST /jobs/{rec.id}/resubmit" if rec.state in (FAILED, CANCELLED, INTERRUPTED) else None
    return {
        "id": rec.id, "state": rec.state, "queue_position": position, "step": rec.step, "total": rec.total,
        "progress": rec.progress, "eta_seconds": rec.eta_seconds, "elapsed_seconds": rec.elapsed_seconds,
        "steps_per_second": rec.steps_per_second, "loss": rec.loss, "error": rec.error, "created": rec.created,
        "started": rec.started, "finished": rec.finished, "settings": rec.settings,
        "preview_step": rec.preview_step, "has_result": rec.state == DONE, "has_uvs": rec.has_uvs,
        "resubmit_hint": hint,
        "resubmitted_from": rec.resubmitted_from,
        "stage": rec.stage,
    }


def _status(rec: JobRecord, position: int) -> JobStatus:
    return JobStatus(**_status_dict(rec, position))


# ---------------------------------------------------------------------------------------------
# Validation of a submission (runs in a worker thread of the server, never on the event loop)

def _format_validation(exc: ValidationError, prefix: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = (f"unknown setting; allowed: {', '.join(JobSettings.model_fields)}")
        elif err.get("type") not in ("missing",) and "input" in err:
            msg += f" (got {err['input']!r})"
        parts.append(f"{prefix}{loc}: {msg}" if loc else f"{prefix.rstrip('.')}: {msg}")
    return "; ".join(parts)


def validate_submission(mesh_npz: bytes, settings_text: str, init_png: bytes | None,
                        config: ServerConfig) -> dict:
    """Check a submission the way the job will read it; returns the settings to store.

    Raises ``HTTPException(422)`` naming what is wrong (settings, prompt length, model, mesh, texture).
    """
    try:
        raw = json.loads(settings_text)
    except ValueError as exc:
        raise HTTPException(422, f"settings is not valid JSON ({exc}); send a JSON object such as "
                                 '{"prompt": "rusty metal", "steps": 400}') from None
    if not isinstance(raw, dict):
        raise HTTPException(422, f"settings must be a JSON object, got {type(raw).__name__}")
    try:
        settings = JobSettings.model_validate(raw)
    except ValidationError as exc:
        raise HTTPException(422, _format_validation(exc, "settings.")) from None
    model = settings.model or config.model
    try:
        from .prior import check_prompt_length, resolve_model

        resolve_model(model)
        check_prompt_length(model, settings.prompt)
        if settings.negative_prompt:
            check_prompt_length(model, settings.negative_prompt, what="negative_prompt")
    except NfsdError as exc:
        raise HTTPException(422, str(exc)) from None
    stored = settings.model_dump()
    stored["model"] = model
    try:
        from .engine import TextureConfig
        from .jobs import job_config_dict

        TextureConfig.from_dict(job_config_dict(stored, config.model, config.device)).validate()
    except ImportError:  # the engine is optional for validation; the job checks again
        pass
    except NfsdError as exc:
        raise HTTPException(422, str(exc)) from None

    _validate_mesh(mesh_npz, config)
    if init_png is not None:
        _validate_png(init_png)
    return stored


def _validate_mesh(data: bytes, config: ServerConfig) -> None:
    from .errors import MeshError
    from .mesh import read_wire_npz

    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise HTTPException(422, "mesh is not an .npz file (numpy.savez output): the upload is not a zip archive")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            tri = z["triangles"] if "triangles" in z.files else None
            if tri is not None and tri.ndim == 2 and tri.shape[0] > config.max_faces:
                raise HTTPException(422, f"mesh has {tri.shape[0]} triangles; this server accepts at most "
                                         f"{config.max_faces} (decimate the mesh, e.g. with a Decimate modifier)")
    except HTTPException:
        raise
    except Exception as exc:  # np.load raises several kinds for corrupt archives or object arrays
        raise HTTPException(422, f"mesh .npz cannot be read ({type(exc).__name__}: {exc})") from None
    try:
        read_wire_npz(data)
    except MeshError as exc:
        raise HTTPException(422, f"mesh: {exc}") from None


def _validate_png(data: bytes) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "PNG":
                raise HTTPException(422, f"init_texture must be a PNG image, got {img.format}")
            img.load()
            w, h = img.size
    except HTTPException:
        raise
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise HTTPException(422, f"init_texture is not a readable PNG image ({exc})") from None
    if not (1 <= w <= 8192 and 1 <= h <= 8192):
        raise HTTPException(422, f"init_texture is {w}x{h}; at most 8192x8192 is accepted")


# ---------------------------------------------------------------------------------------------
# The app

def create_app(config: ServerConfig | None = None) -> FastAPI:
    """The FastAPI app; its lifespan starts and stops the job worker (one per app)."""
    config = config or ServerConfig()
    config.check()
    data_dir = Path(config.data_dir).expanduser() if config.data_dir else default_data_dir()
    try:
        manager = JobManager(ManagerConfig(
            data_dir=data_dir, default_model=config.model, device=config.device, max_finished=config.max_jobs,
            max_age_days=config.max_age_days, status_interval=config.status_interval,
            preview_interval=config.preview_interval, torch_threads=config.torch_threads,
        ))
    except OSError as exc:
        raise ConfigError(f"cannot use the data dir {data_dir} ({exc}); pass a writable folder with --data-dir") from exc

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        manager.start()
        log.info("nfsd server: jobs in %s, default model %s", manager.store.root, config.model)
        try:
            yield
        finally:
            await run_in_threadpool(manager.stop)

    # The documentation pages are for the artist's own machine: on a public address they would hand
    # the API's whole surface to anyone who can reach it (docs/API.md is the contract there).
    docs = is_loopback_host(config.host)
    app = FastAPI(
        title="nfsd backend", version=__version__, lifespan=lifespan,
        docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
        description="Textures a mesh from a text prompt with Noise-Free Score Distillation. See docs/API.md.",
        responses={401: {"model": ErrorBody}, 422: {"model": ErrorBody}},
    )
    app.state.manager = manager
    app.state.config = config

    bearer = HTTPBearer(auto_error=False, description="the token the server was started with (--token)")
    expected = config.token.encode() if config.token else None

    def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if expected is None:
            return
        given = credentials.credentials.encode() if credentials else b""
        if not secrets.compare_digest(given, expected):
            raise HTTPException(401, "missing or wrong token: send 'Authorization: Bearer <token>' with the token "
                                     "the server was started with (--token)",
                                headers={"WWW-Authenticate": "Bearer"})

    auth = [Depends(require_token)]

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{loc}: {err.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(parts)}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}: {exc}); see the server log"},
                            status_code=500)

    def lookup(job_id: str) -> tuple[JobRecord, int]:
        if not is_job_id(job_id):
            raise HTTPException(422, f"malformed job id {job_id[:80]!r}: a job id is 32 lowercase hex characters")
        found = manager.snapshot_record(job_id)
        if found is None:
            raise HTTPException(404, f"no job {job_id} on this server (it may have been deleted or pruned)")
        return found

    @app.get("/health", response_model=Health, summary="server, device and queue status (no token needed)")
    async def health() -> Health:
        info = manager.device_and_models()
        loading = manager.loading_model()
        running = manager.running_id()
        loaded = [] if loading else info.get("models") or []
        if running and not loading:  # the worker reports its cache between jobs; a running job holds its model
            rec = manager.get(running)
            loaded = [rec.settings.get("model") or config.model] if rec else loaded
        return Health(
            version=__version__, device=info.get("device", "unknown"), gpu_name=info.get("gpu_name"),
            gpu_free_bytes=info.get("gpu_free_bytes"), model_loaded=loaded[0] if loaded else None,
            model_loading=loading,
            default_model=config.model, queue_length=manager.queue_length(), running_job=manager.running_id(),
            auth_required=expected is not None,
        )

    @app.post("/jobs", status_code=202, response_model=SubmitResponse, dependencies=auth,
              summary="submit a job (multipart: mesh, settings, optional init_texture)",
              responses={411: {"model": ErrorBody}, 413: {"model": ErrorBody}, 415: {"model": ErrorBody}},
              openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                  "type": "object", "required": ["mesh", "settings"],
                  "properties": {
                      "mesh": {"type": "string", "format": "binary",
                               "description": "wire-format .npz (positions, triangles, optional uvs, world_matrix)"},
                      "settings": {"type": "string", "description": "JSON object, see JobSettings",
                                   "example": '{"prompt": "weathered bronze", "steps": 400}'},
                      "init_texture": {"type": "string", "format": "binary", "description": "optional PNG"},
                  }}}}}})
    async def submit(request: Request) -> SubmitResponse:
        ctype = request.headers.get("content-type", "")
        if not ctype.lower().startswith("multipart/form-data"):
            raise HTTPException(415, f"POST /jobs takes multipart/form-data (fields mesh, settings, optional "
                                     f"init_texture), got content type {ctype or 'none'!r}")
        length = request.headers.get("content-length")
        if length is None:
            raise HTTPException(411, "POST /jobs needs a Content-Length header (chunked uploads are not accepted)")
        try:
            n = int(length)
        except ValueError:
            raise HTTPException(400, f"bad Content-Length {length!r}") from None
        if n > config.max_upload_bytes:
            raise HTTPException(413, f"upload of {n} bytes is over this server's limit of {config.max_upload_bytes} "
                                     "bytes; decimate the mesh or send a smaller init_texture")
        try:
            form = await request.form(max_files=4, max_fields=8)
        except Exception as exc:
            raise HTTPException(400, f"malformed multipart body ({exc})") from None
        try:
            unknown = sorted(set(form.keys()) - {"mesh", "settings", "init_texture"})
            if unknown:
                raise HTTPException(422, f"unknown form field(s) {unknown}: send mesh, settings and optionally "
                                         "init_texture")
            mesh = form.get("mesh")
            if not isinstance(mesh, UploadFile):
                raise HTTPException(422, "form field 'mesh' is missing or not a file: attach the wire-format .npz")
            settings_field = form.get("settings")
            if settings_field is None:
                raise HTTPException(422, "form field 'settings' is missing: send a JSON object with at least 'prompt'")
            if isinstance(settings_field, UploadFile):
                settings_text = (await settings_field.read()).decode("utf-8", "replace")
            else:
                settings_text = settings_field
            init = form.get("init_texture")
            if init is not None and not isinstance(init, UploadFile):
                raise HTTPException(422, "form field 'init_texture' must be a PNG file")
            mesh_bytes = await mesh.read()
            init_bytes = await init.read() if init is not None else None
        finally:
            await form.close()
        settings = await run_in_threadpool(validate_submission, mesh_bytes, settings_text, init_bytes, config)
        rec = await run_in_threadpool(manager.submit, mesh_bytes, settings, init_bytes)
        found = manager.snapshot_record(rec.id)
        return SubmitResponse(id=rec.id, state=found[0].state if found else rec.state,
                              queue_position=found[1] if found else 0)

    @app.get("/jobs", response_model=JobList, dependencies=auth, summary="all jobs, newest first")
    async def list_jobs() -> JobList:
        return JobList(jobs=[_status(r, pos) for r, pos in manager.list()])

    @app.get("/jobs/{job_id}", response_model=JobStatus, dependencies=auth, summary="one job's status",
             responses={404: {"model": ErrorBody}})
    async def job_status(job_id: str) -> JobStatus:
        return JSONResponse(_status_dict(*lookup(job_id)))  # same fields as JobStatus (tested), no re-validation

    @app.get("/jobs/{job_id}/preview.png", dependencies=auth, response_class=Response,
             summary="latest texture snapshot (PNG, top row first)",
             responses={200: {"content": {"image/png": {}}}, 404: {"model": ErrorBody}})
    async def preview(job_id: str):
        lookup(job_id)
        data = manager.preview_cached(job_id)
        if data is None:
            data = await run_in_threadpool(manager.preview_bytes, job_id)
        if data is None:
            raise HTTPException(404, f"job {job_id} has no preview yet (the first one comes a few seconds into "
                                     "the optimization)")
        return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/jobs/{job_id}/uvs", dependencies=auth, response_class=Response,
             summary="the per-corner UVs the texture is laid out on (.npz: uvs, uvs_generated), known before "
                     "the optimization starts",
             responses={200: {"content": {"application/octet-stream": {}}}, 404: {"model": ErrorBody}})
    async def uvs(job_id: str):
        rec, _ = lookup(job_id)
        data = await run_in_threadpool(manager.uvs_bytes, job_id) if rec.has_uvs else None
        if data is None:
            if rec.state in (FAILED, CANCELLED, INTERRUPTED):
                msg = f"job {job_id} is {rec.state} and its UVs were never known"
                if rec.error:
                    msg += f" (error: {rec.error})"
            else:
                msg = (f"job {job_id} is {rec.state}: its UVs are known once its mesh is prepared, when it "
                       "leaves the queue; poll GET /jobs/{id} until has_uvs is true")
            raise HTTPException(404, msg)
        return Response(data, media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="nfsd-{job_id}-uvs.npz"'})

    @app.get("/jobs/{job_id}/result", dependencies=auth, response_class=FileResponse,
             summary="the result .npz (texture, uvs, uvs_generated, offsets, meta)",
             responses={200: {"content": {"application/octet-stream": {}}}, 404: {"model": ErrorBody},
                        409: {"model": ErrorBody}})
    async def result(job_id: str):
        rec, _ = lookup(job_id)
        path = manager.result_path(job_id)
        if rec.state != DONE or not path.is_file():
            msg = f"job {job_id} is {rec.state}; its result exists once it is done"
            if rec.error:
                msg += f" (error: {rec.error})"
            raise HTTPException(409, msg)
        return FileResponse(path, media_type="application/octet-stream", filename=f"nfsd-{job_id}.npz")

    @app.post("/jobs/{job_id}/cancel", response_model=JobStatus, dependencies=auth,
              summary="cancel a queued or running job", responses={404: {"model": ErrorBody}})
    async def cancel(job_id: str) -> JobStatus:
        lookup(job_id)
        manager.cancel(job_id)
        return _status(*lookup(job_id))

    @app.post("/jobs/{job_id}/resubmit", status_code=202, response_model=SubmitResponse, dependencies=auth,
              summary="run a failed, cancelled or interrupted job again (new id, same inputs)",
              responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}})
    async def resubmit(job_id: str) -> SubmitResponse:
        lookup(job_id)
        try:
            rec = await run_in_threadpool(manager.resubmit, job_id)
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None
        except KeyError:
            raise HTTPException(404, f"no job {job_id} on this server") from None
        found = manager.snapshot_record(rec.id)
        return SubmitResponse(id=rec.id, state=found[0].state if found else rec.state,
                              queue_position=found[1] if found else 0)

    @app.delete("/jobs/{job_id}", response_model=Deleted, dependencies=auth,
                summary="remove a job that is not running, and its files",
                responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}})
    async def delete(job_id: str) -> Deleted:
        lookup(job_id)
        try:
            await run_in_threadpool(manager.delete, job_id)
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None
        except KeyError:
            raise HTTPException(404, f"no job {job_id} on this server") from None
        return Deleted(deleted=job_id)

    @app.post("/model/unload", response_model=Unloaded, dependencies=auth,
              summary="free the cached model (after the running job, if any, it is loaded again)")
    async def unload() -> Unloaded:
        try:
            return Unloaded(unloaded=await run_in_threadpool(manager.unload_model))
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None
        except TimeoutError as exc:
            raise HTTPException(503, str(exc)) from None

    return app


def serve(host: str = "127.0.0.1", port: int = DEFAULT_PORT, token: str | None = None,
          data_dir: str | Path | None = None, model: str = "builtin", max_jobs: int = 50,
          max_age_days: float | None = 30.0, device: str = "auto", log_level: str = "info",
          torch_threads: int = 0) -> None:
    """Run the server until interrupted (what ``nfsd serve`` calls).

    Raises:
        ConfigError: a non-loopback ``host`` without ``token``, an empty token, a bad port.
    """
    import uvicorn

    config = ServerConfig(host=host, port=port, token=token, data_dir=Path(data_dir) if data_dir else None,
                          model=model, device=device, max_jobs=max_jobs, max_age_days=max_age_days,
                          torch_threads=torch_threads)
    app = create_app(config)
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # SIGTERM / Ctrl-C: open requests get 2 s, then the job manager stops its worker within ~3 s.
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, timeout_graceful_shutdown=2)
