"""The pydantic models of the API's requests and responses (the contract of docs/API.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from ..jobs.store import CANCELLED, DONE, FAILED, INTERRUPTED, JobRecord
from ..settings import API, exposed


_PY_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def job_settings_model() -> type[BaseModel]:
    """``POST /jobs``'s ``settings``: one optional key per setting the API offers (``nfsd.settings``,
    face ``api``), with its type, range and help; ``prompt`` required; unknown keys refused. Only the
    shape is checked here: ``nfsd.settings.resolve`` fills what is left out and checks the values."""
    fields = {}
    for s in exposed(API):
        kw = {"description": s.help + (f" (None: {s.none_means})" if s.none_means else "")}
        if s.range:
            kw.update(ge=s.range[0], le=s.range[1])
        if s.max_chars:
            kw["max_length"] = s.max_chars
        if s.name == "loras":
            annotation = list[dict | str] | None
            kw["max_length"] = 16
        elif s.choices:
            annotation = Literal[s.choices] | None
        else:
            annotation = _PY_TYPES[s.kind] | None
        fields[s.name] = (str if s.name == "prompt" else annotation, Field(... if s.name == "prompt" else None, **kw))
    return create_model("JobSettings", __config__=ConfigDict(extra="forbid", protected_namespaces=(), strict=False),
                        __doc__=job_settings_model.__doc__, **fields)


JobSettings = job_settings_model()


class ResolvedSettings(BaseModel):
    """``POST /settings/resolve``: what a job with these settings would run, and how long it may take."""

    settings: dict = Field(..., description="every settings key, resolved for the model (what the job runs)")
    model_family: str | None = Field(None, description="the model's family: builtin, sd1, sd2, sdxl; None: unknown")
    render_size: int | None = Field(None, description="the render size the job will use (the model's own when the "
                                                      "settings leave it None), if known before loading")
    steps_per_second: float | None = Field(None, description="this server's measured speed for this model, render "
                                                             "size, batch and texture size; None before such a job ran")
    estimate_seconds: float | None = Field(None, description="steps / steps_per_second; None when not measured yet")


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
    worker: str | None = Field(None, description="the worker that runs or ran it (/health's workers[].name)")
    retries: int = Field(0, description="times it was queued again after its worker was lost (Ray executor; at "
                                        "most once)")


class JobList(BaseModel):
    jobs: list[JobStatus]


class WorkerHealth(BaseModel):
    """One worker of the server (``nfsd serve --devices`` or ``--executor ray``): a slot of the one queue."""

    name: str = Field(..., description="local-0, local-1... or ray-0, ray-1...")
    executor: Literal["local", "ray"]
    device: str | None = None
    gpu_name: str | None = None
    gpu_free_bytes: int | None = None
    models: list[str] = Field(default_factory=list, description="models it holds in memory")
    model_loads: int | None = Field(None, description="models its process has loaded so far (a warm worker "
                                                      "loads a model once for all the jobs that use it)")
    running_job: str | None = None
    jobs_done: int = Field(0, description="jobs it ended (any end state) since the server started")
    ready: bool = Field(True, description="false while the worker starts (a Ray actor waiting to be placed)")


class Health(BaseModel):
    """Without the token (when one is set) only ``status``, ``version`` and ``auth_required``."""

    status: Literal["ok"] = "ok"
    version: str
    auth_required: bool
    device: str | None = None
    gpu_name: str | None = None
    gpu_free_bytes: int | None = None
    model_loaded: str | None = Field(None, description="model held in memory, if any")
    model_loading: str | None = Field(None, description="model being loaded by the running job, if any")
    default_model: str | None = None
    queue_length: int | None = Field(None, description="jobs waiting (the running one not counted)")
    running_job: str | None = Field(None, description="the first worker's running job (workers[] for each)")
    workers: list[WorkerHealth] | None = Field(None, description="every worker, each with its device, models "
                                                                 "and running job")


class Unloaded(BaseModel):
    unloaded: bool


class Deleted(BaseModel):
    deleted: str


class ErrorBody(BaseModel):
    detail: str


def status_dict(rec: JobRecord, position: int) -> dict:
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
        "worker": rec.worker,
        "retries": rec.retries,
    }


def job_status(rec: JobRecord, position: int) -> JobStatus:
    return JobStatus(**status_dict(rec, position))
