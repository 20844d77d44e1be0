"""The job folders on disk and what the server knows about each job (``JobRecord``).

Every job lives in ``DATA_DIR/jobs/<id>/``::

    mesh.npz           the uploaded wire-format mesh, as received
    settings.json      the validated settings (model resolved to the server's default when absent)
    init_texture.png   optional texture to continue from
    init_roughness.png, init_metallic.png, init_normal.png
                       optional maps of a pbr texture to continue from (``INIT_MAPS``), only with init_texture.png
    status.json        JobRecord.to_dict(), rewritten at most every ``status_interval`` seconds while running
    uvs.npz            the per-corner UVs the texture is laid out on (``nfsd.jobs.results.uvs_npz``), written
                       as soon as the job's mesh is prepared (its UVs unwrapped if it had none)
    preview.png        the latest texture snapshot (top row first, as PNG files are)
    result.npz         the result (docs/API.md), written once when the job is done

Each file is written to a temporary name and renamed into place (``os.replace``), and a new job's
folder is assembled under a temporary name and renamed in one step, so a crash never leaves a half
written file under a real name.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..distill.image_files import atomic_write_bytes

log = logging.getLogger("nfsd.jobs")

INIT_MAPS = ("roughness", "metallic", "normal")  # a pbr job's optional maps beside its init texture


def init_map_file(name: str) -> str:
    """The file (and the ``POST /jobs`` form field, without ``.png``) of init map ``name``: ``init_<name>.png``."""
    return f"init_{name}.png"


def read_init_maps(folder: Path) -> dict[str, bytes]:
    """The init maps stored in a job folder: map name -> PNG bytes (empty when none)."""
    return {name: (Path(folder) / init_map_file(name)).read_bytes() for name in INIT_MAPS
            if (Path(folder) / init_map_file(name)).is_file()}


def write_init_maps(folder: Path, maps: dict[str, bytes] | None) -> None:
    for name, data in (maps or {}).items():
        (Path(folder) / init_map_file(name)).write_bytes(data)

QUEUED, LOADING, RUNNING = "queued", "loading", "running"
DONE, FAILED, CANCELLED, INTERRUPTED = "done", "failed", "cancelled", "interrupted"
STATES = (QUEUED, LOADING, RUNNING, DONE, FAILED, CANCELLED, INTERRUPTED)
ACTIVE = frozenset({LOADING, RUNNING})
FINISHED = frozenset({DONE, FAILED, CANCELLED, INTERRUPTED})


def new_job_id() -> str:
    """32 lowercase hex characters (a random UUID4)."""
    return uuid.uuid4().hex


def prunable(records, max_finished: int, max_age_days: float | None, now: float) -> list["JobRecord"]:
    """The finished jobs to remove: beyond the ``max_finished`` newest, or finished before ``max_age_days``
    (None: no age limit). Queued and running jobs are never among them."""
    finished = sorted((r for r in records if r.state in FINISHED), key=lambda r: (r.finished or r.created, r.seq),
                      reverse=True)
    doomed = finished[max_finished:] if max_finished >= 0 else []
    if max_age_days is not None:
        cutoff = now - max_age_days * 86400.0
        doomed += [r for r in finished[:max_finished] if (r.finished or r.created) < cutoff]
    return doomed


def is_job_id(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def atomic_write(path: Path, data: bytes, durable: bool = True) -> None:
    """``nfsd.distill.image_files.atomic_write_bytes``, durable by default (job files must survive a crash)."""
    atomic_write_bytes(path, data, durable)


@dataclass
class JobRecord:
    """What the server knows about a job; ``status.json`` holds ``to_dict()``.

    Times are Unix seconds (``created``, ``started``, ``finished``) or durations in seconds.
    ``seq`` orders jobs first-in first-out across restarts. ``has_uvs``: ``uvs.npz`` exists.
    ``stage``: what an active job is doing, one line ("unwrapping 81,920 faces", "loading the model",
    "optimizing"). ``cancel_requested``: the user asked to cancel it (kept on disk at once, so a job the
    user cancelled is recorded as cancelled even if the server stops before the job does).
    ``worker``: the name of the worker that runs (or ran) it. ``retries``: how many times it was queued
    again after its worker was lost (a Ray actor or node that died, a server restart under the Ray
    executor); kept on disk so that a job is re-run automatically once at most.
    """

    id: str
    seq: int
    created: float
    settings: dict
    state: str = QUEUED
    step: int = 0
    total: int = 0
    loss: float | None = None
    eta_seconds: float | None = None
    elapsed_seconds: float = 0.0
    progress: float = 0.0
    steps_per_second: float | None = None
    preview_step: int | None = None
    error: str | None = None
    started: float | None = None
    finished: float | None = None
    has_init_texture: bool = False
    has_uvs: bool = False
    resubmitted_from: str | None = None
    stage: str | None = None
    cancel_requested: bool = False
    worker: str | None = None
    retries: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "JobRecord":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class JobStore:
    """The job folders under ``data_dir/jobs``: create, read, write atomically, delete."""

    def __init__(self, data_dir: Path):
        self.root = Path(data_dir).expanduser() / "jobs"
        self.root.mkdir(parents=True, exist_ok=True)

    def dir(self, job_id: str) -> Path:
        return self.root / job_id

    def path(self, job_id: str, name: str) -> Path:
        return self.root / job_id / name

    def create(self, record: JobRecord, mesh_npz: bytes, init_png: bytes | None,
               init_maps: dict[str, bytes] | None = None) -> None:
        """Write a new job's inputs (``init_maps``: map name -> PNG bytes) and status under a temporary
        folder, then rename it into place."""
        tmp = self.root / f".new-{record.id}"
        tmp.mkdir()
        try:
            (tmp / "mesh.npz").write_bytes(mesh_npz)
            (tmp / "settings.json").write_text(json.dumps(record.settings, indent=1))
            if init_png is not None:
                (tmp / "init_texture.png").write_bytes(init_png)
                write_init_maps(tmp, init_maps)
            (tmp / "status.json").write_text(json.dumps(record.to_dict(), indent=1))
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            os.replace(tmp, self.dir(record.id))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def write_status(self, record: JobRecord, durable: bool = False) -> None:
        if self.dir(record.id).is_dir():
            atomic_write(self.path(record.id, "status.json"), json.dumps(record.to_dict(), indent=1).encode(), durable)

    def write_file(self, job_id: str, name: str, data: bytes, durable: bool = True) -> None:
        if self.dir(job_id).is_dir():
            atomic_write(self.path(job_id, name), data, durable)

    def read_bytes(self, job_id: str, name: str) -> bytes:
        return self.path(job_id, name).read_bytes()

    def load_all(self) -> list[JobRecord]:
        """Every job on disk; folders with no readable status.json are logged and left alone."""
        records = []
        for d in sorted(self.root.iterdir()):
            if d.name.startswith(".") or not d.is_dir():
                if d.name.startswith((".new-", ".del-")):
                    shutil.rmtree(d, ignore_errors=True)  # a creation or deletion cut short by a crash
                continue
            try:
                rec = JobRecord.from_dict(json.loads((d / "status.json").read_text()))
                if rec.id != d.name:
                    raise ValueError(f"status.json names job {rec.id!r}")
            except (OSError, ValueError, TypeError) as exc:
                log.warning("skipping job folder %s: unreadable status.json (%s)", d, exc)
                continue
            records.append(rec)
        return records

    def delete(self, job_id: str) -> None:
        """Rename first so the job disappears at once, even if removing its files takes a while."""
        src = self.dir(job_id)
        if not src.is_dir():
            return
        trash = self.root / f".del-{job_id}-{uuid.uuid4().hex[:6]}"
        os.replace(src, trash)
        shutil.rmtree(trash, ignore_errors=True)


