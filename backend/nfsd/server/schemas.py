"""The pydantic models of the API's requests and responses (the contract of docs/API.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..jobs.store import CANCELLED, DONE, FAILED, INTERRUPTED, JobRecord
from ..limits import MAX_PROMPT_CHARS, SETTING_MULTIPLES, SETTING_RANGES


def _ranged(default, name: str, **kw):
    lo, hi = SETTING_RANGES[name]
    return Field(default, ge=lo, le=hi, **kw)


class JobSettings(BaseModel):
    """The ``settings`` JSON of ``POST /jobs``: the CLI's options with underscores. Unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), strict=False)

    prompt: str = Field(..., description="what the texture should show; non-empty, any length (encoded in windows)")
    negative_prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS, description="default: the NFSD paper's negative prompt")
    mode: Literal["nfsd", "sds", "csd", "dds"] = "nfsd"
    source_prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS,
                                      description="dds: what init_texture shows (the prompt it was made with)")
    steps: int = _ranged(400, "steps")
    texture_size: int = _ranged(1024, "texture_size", description=f"a multiple of {SETTING_MULTIPLES['texture_size']}")
    render_size: int | None = _ranged(None, "render_size", description=f"a multiple of {SETTING_MULTIPLES['render_size']}; "
                                      "default: the model's own (512, SDXL 1024)")
    batch: int = _ranged(1, "batch")
    guidance_scale: float | None = _ranged(None, "guidance_scale", description="default: the mode's own (7.5, 100, 7.5)")
    offsets: bool = False
    offset_strength: float = _ranged(0.1, "offset_strength")
    seed: int = _ranged(0, "seed")
    model: str | None = Field(None, max_length=1024, description="a model the server offers (GET /models: name or "
                                                                 "path); default: the server's --model")
    loras: list[dict | str] | None = Field(None, max_length=16, description="[{'name' or 'path', 'weight'}]: LoRAs "
                                           "from GET /models (kind lora)")
    encoder: Literal["full", "tiny"] = Field("full", description="tiny: the model folder's vae_tiny/ on the gradient path")
    negative_weight: float = Field(0.0, ge=0.0, le=100.0, description="csd: weight of the negative prompt")

    @field_validator("prompt")
    @classmethod
    def _prompt_not_empty(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("the prompt is empty: describe the texture, e.g. 'weathered bronze statue'")
        if len(v) > MAX_PROMPT_CHARS:
            raise ValueError(f"the prompt has {len(v)} characters; at most {MAX_PROMPT_CHARS} are accepted")
        return v

    @field_validator("texture_size", "render_size")
    @classmethod
    def _multiple(cls, v: int | None, info) -> int | None:
        m = SETTING_MULTIPLES[info.field_name]
        if v is not None and v % m:
            raise ValueError(f"{info.field_name} must be a multiple of {m} (e.g. {8 * m}, {16 * m}), got {v}")
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
    running_job: str | None = None


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
    }


def job_status(rec: JobRecord, position: int) -> JobStatus:
    return JobStatus(**status_dict(rec, position))
