# SPDX-License-Identifier: GPL-3.0-or-later
"""A scripted stand-in for `nfsd serve` (docs/API.md) whose answers are the server's own.

Scripted and deterministic: every ``GET /jobs/{id}`` advances a running job by one step, so tests
control progress by polling, not by sleeping; while ``hold`` is True queued jobs stay queued (a
backend busy with something else), and beyond ``max_queue`` waiting jobs a submission gets the
server's 429. Prompts steer it: "fail" fails the job with a
backend-style message. :meth:`FakeBackend.stop` / :meth:`FakeBackend.restart` take it away and bring
it back. Files the add-on sent are kept in ``jobs[id]`` for assertions (``request``: the settings
as sent; ``settings``: as the server stores them, resolved).

A contract, not a hand-written imitation: every JSON body is built by the backend's code, imported
here (after bpy: nothing below loads pymeshlab, see test_contract.py). Job statuses are
``nfsd.server.schemas.status_dict`` of a real ``JobRecord``; health is ``Health``; ``GET /models`` is
``ModelEntry.to_dict()`` plus ``nfsd.server.validation.model_defaults``; a submission's settings go
through the server's ``resolve_request(read_request(...))`` against a ``Catalog`` of the fake's models
(a key the server refuses gets the server's 422) and its files through ``nfsd.jobs.inputcheck``;
``POST /settings/resolve`` answers ``ResolvedSettings`` from a real ``SpeedBook`` that finished jobs
record into; errors are ``ErrorBody``; a result is ``nfsd.distill.outputs.result_npz`` of a ``TextureResult``
(a UDIM mesh's tiles in ``UdimTextures``, a pbr job's maps in ``maps``). A key renamed on the server
changes what this fake sends.
"""

from __future__ import annotations

import dataclasses
import email.parser
import email.policy
import io
import json
import shutil
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

from fastapi import HTTPException  # noqa: E402  (the backend's own exception, as its routes raise it)
from nfsd import __version__
from nfsd.distill.config import TextureResult
from nfsd.distill.outputs import result_npz
from nfsd.distill.tiles import UdimTextures
from nfsd.geometry.udim import join_tiles, udim_tiles
from nfsd.jobs import inputcheck
from nfsd.jobs.speeds import SpeedBook
from nfsd.jobs.store import JobRecord
from nfsd.limits import LIMITS
from nfsd.priors.catalog import Catalog
from nfsd.priors.model_files import ModelEntry
from nfsd.server.config import ServerConfig
from nfsd.server.routes import refuse_when_queue_full
from nfsd.server.schemas import (Deleted, ErrorBody, Health, JobList, JobStatus, ResolvedSettings, SubmitResponse,
                                 Unloaded, status_dict)
from nfsd.server.uploads import MAP_FIELDS
from nfsd.server.validation import check_init_maps, model_defaults, read_request, resolve_request

FAIL_MESSAGE = "CUDA out of memory at render_size 512: lower render_size or texture_size"
AUTH_MESSAGE = ("missing or wrong token: send 'Authorization: Bearer <token>' with the token the server was "
                "started with (--token)")  # nfsd.server.security.require_token's


def result_texture(size: int) -> np.ndarray:
    """The texture every fake result carries: uint8 [size, size, 4], row 0 (bottom) red, the
    last row (top) blue, green elsewhere."""
    texture = np.zeros((size, size, 4), np.uint8)
    texture[..., 1] = 255
    texture[..., 3] = 255
    texture[0] = (255, 0, 0, 255)
    texture[-1] = (0, 0, 255, 255)
    return texture


# A pbr result's maps (uint8, row 0 bottom): (bottom row, top row, every other row) of each.
MAP_ROWS = {"roughness": (30, 220, 128), "metallic": (255, 0, 64),
            "normal": ((255, 128, 128), (128, 255, 128), (128, 128, 255))}


def result_maps(size: int, normal_map: bool) -> dict:
    """``TextureResult.maps`` of a pbr job: roughness and metallic uint8 ``[size, size]``, with
    ``normal_map`` normal uint8 ``[size, size, 3]``; rows as :data:`MAP_ROWS` says."""
    maps = {}
    for name, (bottom, top, middle) in MAP_ROWS.items():
        if name == "normal" and not normal_map:
            continue
        shape = (size, size) if name != "normal" else (size, size, 3)
        image = np.empty(shape, np.uint8)
        image[...] = middle
        image[0], image[-1] = bottom, top
        maps[name] = image
    return maps


def preview_png(size: int) -> bytes:
    """A PNG (top row first, as PNG files are) of :func:`result_texture` as an image shows it."""
    buffer = io.BytesIO()
    Image.fromarray(result_texture(size)[::-1]).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclasses.dataclass
class FakeCatalog(Catalog):
    """The server's catalog (its allowlist, ``check_model``, ``entry_of``, ``check_loras``) over the
    fake's entries instead of folders on disk."""

    offered: list = dataclasses.field(default_factory=list)

    def models(self) -> list[ModelEntry]:
        return [e for e in self.offered if e.kind != "lora"]

    def loras(self) -> list[ModelEntry]:
        return [e for e in self.offered if e.kind == "lora"]


@dataclasses.dataclass
class FakeConfig(ServerConfig):
    """The server's config, its catalog being the fake's models."""

    offered: list = dataclasses.field(default_factory=list)

    def catalog(self) -> FakeCatalog:
        return FakeCatalog(default_model=self.model, offered=self.offered)


class FakeBackend:
    """``with FakeBackend(total_steps=4) as backend: backend.url ...``

    ``models``: the ``ModelEntry`` fields of each model it offers (dicts or entries); None: it has no
    ``GET /models`` (404) and offers its default model only. ``steps_per_second``: the speed a finished
    job records (what ``POST /settings/resolve`` then estimates from). ``max_queue``: the server's
    ``--max-queue``."""

    def __init__(self, total_steps: int = 4, token: str = "", models: list | None = None,
                 default_model: str = "builtin", steps_per_second: float = 2.0, max_queue: int = 100):
        self.total_steps = total_steps
        self.token = token
        self.models = None if models is None else [m if isinstance(m, ModelEntry) else ModelEntry(**m)
                                                    for m in models]
        self.steps_per_second = steps_per_second
        self._dir = Path(tempfile.mkdtemp(prefix="nfsd-fake-"))
        self.config = FakeConfig(model=default_model, token=token or None, data_dir=self._dir,
                                 offered=self.models or [], max_queue=max_queue)
        self.hold = False  # True: queued jobs stay queued
        self.refused = 0  # submissions refused because the queue was full (429)
        self.speeds = SpeedBook(self._dir / "speeds.json")
        self.jobs: dict[str, dict] = {}
        self.unloaded = 0
        self.cancels: list[str] = []  # the job ids POST /jobs/{id}/cancel was called for
        self.resolves: list[dict] = []  # the bodies POST /settings/resolve was called with
        self.mesh_warnings: list[str] = []  # what results report in meta["mesh"]["warnings"]
        self.lock = threading.Lock()
        self._seq = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeBackend":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        if self.server is not None:
            self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def stop(self) -> None:
        """The backend goes away (nothing listens on its port until :meth:`restart`)."""
        self.server.shutdown()
        self.server.server_close()
        self.server = None

    def restart(self) -> None:
        """Come back on the same port, as `nfsd serve` after a crash: running jobs are "interrupted"."""
        with self.lock:
            for job in self.jobs.values():
                if job["state"] in ("queued", "running"):
                    job["state"] = "interrupted"
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    # -- the scripted jobs ----------------------------------------------------------------------
    def _new_job(self, settings: dict, request: dict, mesh: dict, init_texture: bytes | None, **extra) -> dict:
        self._seq += 1
        job = {"id": uuid.uuid4().hex, "seq": self._seq, "created": time.time(), "state": "queued", "step": 0,
               "total": self.total_steps, "error": None, "started": None, "finished": None, "settings": settings,
               "request": request, "mesh": mesh, "init_texture": init_texture, "previews": 0, "uvs_requests": 0,
               "resubmitted_from": None, "init_maps": {}}
        job.update(extra)
        self.jobs[job["id"]] = job
        return job

    def queue_length(self) -> int:
        """Jobs waiting to run (JobManager.queue_length)."""
        return sum(j["state"] == "queued" for j in self.jobs.values())

    def _advance(self, job: dict) -> None:
        if job["state"] == "queued" and not self.hold:
            job["state"] = "running"
            job["started"] = job.get("started") or time.time()
        elif job["state"] == "running":
            job["step"] += 1
            if job["settings"]["prompt"].startswith("fail") and job["step"] >= 2:
                job["state"], job["error"] = "failed", FAIL_MESSAGE
            elif job["step"] >= job["total"]:
                job["state"] = "done"
                self.speeds.record(job["settings"], self.steps_per_second)  # as the server's worker does
            if job["state"] != "running":
                job["finished"] = time.time()

    def _position(self, job: dict) -> int:
        queued = sorted((j["seq"], j["id"]) for j in self.jobs.values() if j["state"] == "queued")
        return next((n for n, (_seq, ident) in enumerate(queued, start=1) if ident == job["id"]), 0)

    def record(self, job: dict) -> JobRecord:
        """The server's record of a scripted job."""
        step, total, state = job["step"], job["total"], job["state"]
        active = state in ("queued", "running")
        return JobRecord(
            id=job["id"], seq=job["seq"], created=job["created"], settings=job["settings"], state=state, step=step,
            total=total, loss=0.5 / (1 + step) if step else None, eta_seconds=2.0 * (total - step) if active else None,
            elapsed_seconds=1.0 * step, progress=step / total if total else 0.0,
            steps_per_second=self.steps_per_second if step else None, preview_step=step or None, error=job["error"],
            started=job.get("started"), finished=job.get("finished"), has_init_texture=job["init_texture"] is not None,
            has_uvs=state != "queued", resubmitted_from=job.get("resubmitted_from"),
            stage="optimizing" if state == "running" else None)

    def _status(self, job: dict) -> dict:
        return status_dict(self.record(job), self._position(job))  # what GET /jobs/{id} sends

    def uvs(self, job: dict) -> tuple[np.ndarray, bool]:
        """``(uvs [F, 3, 2], generated)`` of a job: the mesh's own, else a made-up unwrap in [0, 1]
        where each vertex has one UV (no seams, so every Blender loop gets one value)."""
        mesh = job["mesh"]
        if "uvs" in mesh:
            return mesh["uvs"].astype(np.float32), False
        vertex = np.arange(mesh["positions"].shape[0], dtype=np.float32)
        per_vertex = np.stack([(vertex * 0.37) % 1.0, (vertex * 0.61) % 1.0], axis=1)
        return per_vertex[mesh["triangles"]].astype(np.float32), True

    def _uvs_npz(self, job: dict) -> bytes:
        uvs, generated = self.uvs(job)
        buffer = io.BytesIO()
        np.savez(buffer, uvs=uvs, uvs_generated=np.array(generated))
        return buffer.getvalue()

    def _result(self, job: dict) -> bytes:
        """``GET /jobs/{id}/result``: the server's ``result_npz`` of a ``TextureResult`` holding
        :func:`result_texture` (a pbr job's maps: :func:`result_maps`). A mesh sent in UDIM tiles
        (``udim_tiles``, as the backend reads them) gets one texture per tile: inside its first and
        last rows tile k is 255 - 80 k green."""
        mesh, settings = job["mesh"], job["settings"]
        size = int(settings["texture_size"])
        uvs, generated = self.uvs(job)
        texture = result_texture(size)[..., :3]
        maps = result_maps(size, bool(settings.get("normal_map"))) if settings.get("material") == "pbr" else {}
        layout = None if generated else udim_tiles(uvs)
        udim = None
        if layout is not None:  # the engine's result is the atlas of the tiles, maps included
            tiles = {}
            for k, tile in enumerate(layout.tiles):
                tiles[tile] = texture.copy()
                tiles[tile][1:-1, :, 1] = 255 - 80 * k
            udim = UdimTextures(layout=layout, textures=tiles, uvs=uvs)
            texture = join_tiles(tiles, layout)
            maps = {name: join_tiles({tile: image for tile in layout.tiles}, layout) for name, image in maps.items()}
        offsets = None
        if settings.get("offsets"):
            offsets = np.tile(np.array([0.0, 0.0, 0.1], np.float32), (mesh["positions"].shape[0], 1))
        result = TextureResult(texture=texture, uvs=uvs, uvs_generated=generated, offsets=offsets, mesh=None,
                               config=None, udim=udim, maps=maps)
        meta = {"prompt": settings["prompt"], "config": settings, "mesh": {"warnings": self.mesh_warnings}}
        return result_npz(result, meta)

    # -- the answers, built by the server's code ---------------------------------------------------
    def health(self, authorized: bool) -> dict:
        if not authorized:
            return Health(status="ok", version=__version__, auth_required=True).model_dump(exclude_unset=True)
        running = next((j["id"] for j in self.jobs.values() if j["state"] == "running"), None)
        return Health(status="ok", version=__version__, device="cpu", gpu_name=None, gpu_free_bytes=None,
                      model_loaded=None, model_loading=None, default_model=self.config.model,
                      queue_length=sum(j["state"] == "queued" for j in self.jobs.values()), running_job=running,
                      auth_required=bool(self.token)).model_dump(exclude_unset=True)

    def models_answer(self) -> dict:
        entries = [entry.to_dict() for entry in self.config.catalog().entries()]
        for entry in entries:  # as routes.models
            entry["defaults"] = model_defaults(entry)
        return {"default_model": self.config.model, "models": entries}

    def resolve(self, text: str) -> dict:
        """``POST /settings/resolve`` as routes.resolve_settings answers it."""
        resolved = resolve_request(read_request(text), self.config)
        settings = resolved.settings
        return ResolvedSettings(settings=settings, model_family=resolved.family, render_size=resolved.render_size,
                                steps_per_second=self.speeds.steps_per_second(settings),
                                estimate_seconds=self.speeds.estimate(settings)).model_dump()

    def submit(self, fields: dict) -> dict:
        """``POST /jobs`` as routes.submit checks it (queue, settings, dds, files) and answers it."""
        with self.lock:
            try:
                refuse_when_queue_full(self, self.config)
            except HTTPException:
                self.refused += 1
                raise
        text = fields["settings"].decode("utf-8", errors="replace")
        settings = resolve_request(read_request(text), self.config).settings  # = validation.parse_settings
        init = fields.get("init_texture")
        if settings.get("mode") == "dds" and init is None:
            raise HTTPException(422, "mode dds edits a texture: send the current texture as init_texture")
        maps = {f: fields[f] for f in MAP_FIELDS if f in fields}  # a pbr run's init maps, as routes.submit
        check_init_maps(settings, init is not None, list(maps))
        spool = Path(tempfile.mkdtemp(dir=self._dir))
        try:
            (spool / "mesh.npz").write_bytes(fields["mesh"])
            if init is not None:
                (spool / "init.png").write_bytes(init)
            for f, data in maps.items():
                (spool / f"{f}.png").write_bytes(data)
            problem = inputcheck.check_files(str(spool / "mesh.npz"), str(spool / "init.png") if init else None,
                                             self.config.max_faces, self.config.max_vertices,
                                             int(LIMITS["max_init_texture_side"]),
                                             {f: str(spool / f"{f}.png") for f in maps})
        finally:
            shutil.rmtree(spool, ignore_errors=True)
        if problem:
            raise HTTPException(422, problem)
        with np.load(io.BytesIO(fields["mesh"]), allow_pickle=False) as npz:
            mesh = {key: npz[key] for key in npz.files}
        with self.lock:
            job = self._new_job(settings, json.loads(text), mesh, init, init_maps={MAP_FIELDS[f]: d for f, d in maps.items()})
            return SubmitResponse(id=job["id"], state=job["state"], queue_position=self._position(job)).model_dump()

    def _handler(self):
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args):  # keep test output quiet
                pass

            def _send(self, code: int, body, content_type: str = "application/json") -> None:
                data = json.dumps(body).encode() if content_type == "application/json" else body
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                return not backend.token or self.headers.get("Authorization") == f"Bearer {backend.token}"

            def _answer(self, route) -> None:
                """Run ``route`` (returns ``(code, body[, content type])``); the server's errors as it sends them."""
                try:
                    if self.path.strip("/") not in ("health", "explode") and not self._authorized():
                        raise HTTPException(401, AUTH_MESSAGE)
                    self._send(*route())
                except HTTPException as exc:
                    self._send(exc.status_code, ErrorBody(detail=exc.detail).model_dump())

            def _job(self, job_id: str) -> dict:
                job = backend.jobs.get(job_id)
                if job is None:
                    raise HTTPException(404, f"no job {job_id} on this server (it may have been deleted or pruned)")
                return job

            def do_GET(self):
                self._answer(self._get)

            def do_POST(self):
                self._answer(self._post)

            def do_DELETE(self):
                self._answer(self._delete)

            def _get(self):
                parts = self.path.strip("/").split("/")
                if parts == ["health"]:
                    return 200, backend.health(self._authorized())
                if parts == ["explode"]:  # a backend bug: HTTP 500 with no JSON detail
                    return 500, b"Internal Server Error", "text/plain"
                if parts == ["jobs"]:
                    with backend.lock:
                        jobs = sorted(backend.jobs.values(), key=lambda j: -j["seq"])
                        return 200, JobList(jobs=[JobStatus(**backend._status(j)) for j in jobs]).model_dump()
                if parts == ["models"]:
                    if backend.models is None:
                        raise HTTPException(404, "Not Found")
                    return 200, backend.models_answer()
                if len(parts) < 2 or parts[0] != "jobs":
                    raise HTTPException(404, "Not Found")
                with backend.lock:
                    job = self._job(parts[1])
                    if len(parts) == 2:
                        backend._advance(job)
                        return 200, backend._status(job)
                    if parts[2] == "preview.png":
                        if job["step"] == 0:
                            raise HTTPException(404, f"job {job['id']} has no preview yet")
                        job["previews"] += 1
                        return 200, preview_png(int(job["settings"]["texture_size"])), "image/png"
                    if parts[2] == "uvs":
                        if job["state"] == "queued":
                            raise HTTPException(404, f"job {job['id']} is queued: its UVs are known once its mesh "
                                                     "is prepared")
                        job["uvs_requests"] += 1
                        return 200, backend._uvs_npz(job), "application/octet-stream"
                    if parts[2] == "result":
                        if job["state"] != "done":
                            raise HTTPException(409, f"job {job['id']} is {job['state']}; its result exists once "
                                                     "it is done")
                        return 200, backend._result(job), "application/octet-stream"
                raise HTTPException(404, "Not Found")

            def _post(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                parts = self.path.strip("/").split("/")
                if parts == ["jobs"]:
                    return 202, backend.submit(self._fields(body))
                if parts == ["settings", "resolve"]:
                    text = body.decode("utf-8", errors="replace")
                    backend.resolves.append(json.loads(text))
                    return 200, backend.resolve(text)
                if parts == ["model", "unload"]:
                    backend.unloaded += 1
                    return 200, Unloaded(unloaded=True).model_dump()
                if len(parts) == 3 and parts[0] == "jobs" and parts[2] == "resubmit":
                    with backend.lock:
                        job = self._job(parts[1])
                        if job["state"] not in ("failed", "cancelled", "interrupted"):
                            raise HTTPException(409, f"job {job['id']} is {job['state']}: only failed, cancelled "
                                                     "or interrupted jobs run again")
                        new = backend._new_job(job["settings"], job["request"], job["mesh"], job["init_texture"],
                                               total=job["total"], resubmitted_from=job["id"],
                                               init_maps=job["init_maps"])
                        return 202, SubmitResponse(id=new["id"], state=new["state"],
                                                   queue_position=backend._position(new)).model_dump()
                if len(parts) == 3 and parts[0] == "jobs" and parts[2] == "cancel":
                    with backend.lock:
                        backend.cancels.append(parts[1])
                        job = self._job(parts[1])
                        if job["state"] in ("queued", "running"):
                            job["state"] = "cancelled"
                            job["finished"] = time.time()
                        return 200, JobStatus(**backend._status(job)).model_dump()
                raise HTTPException(404, "Not Found")

            def _delete(self):
                parts = self.path.strip("/").split("/")
                if len(parts) != 2 or parts[0] != "jobs":
                    raise HTTPException(404, "Not Found")
                with backend.lock:
                    job = self._job(parts[1])
                    if job["state"] in ("queued", "running"):
                        raise HTTPException(409, f"job {job['id']} is {job['state']}: cancel it first")
                    del backend.jobs[job["id"]]
                return 200, Deleted(deleted=job["id"]).model_dump()

            def _fields(self, body: bytes) -> dict:
                message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body)
                return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
                        for part in message.iter_parts()}

        return Handler
