# SPDX-License-Identifier: GPL-3.0-or-later
"""A scripted stand-in for `nfsd serve` (docs/API.md), standard library + numpy + PIL.

Deterministic: every ``GET /jobs/{id}`` advances a running job by one step, so tests control
progress by polling, not by sleeping. Prompts steer it: "fail" fails the job with a
backend-style message. Files the add-on sent are kept in ``jobs[id]`` for assertions.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

FAIL_MESSAGE = "CUDA out of memory at render_size 512: lower render_size or texture_size"


def result_texture(size: int) -> np.ndarray:
    """The texture every fake result carries: uint8 [size, size, 4], row 0 (bottom) red, the
    last row (top) blue, green elsewhere."""
    texture = np.zeros((size, size, 4), np.uint8)
    texture[..., 1] = 255
    texture[..., 3] = 255
    texture[0] = (255, 0, 0, 255)
    texture[-1] = (0, 0, 255, 255)
    return texture


def preview_png(size: int) -> bytes:
    """A PNG (top row first, as PNG files are) of :func:`result_texture` as an image shows it."""
    buffer = io.BytesIO()
    Image.fromarray(result_texture(size)[::-1]).save(buffer, format="PNG")
    return buffer.getvalue()


class FakeBackend:
    """``with FakeBackend(total_steps=4) as backend: backend.url ...``"""

    def __init__(self, total_steps: int = 4, token: str = "", models: list[dict] | None = None):
        self.total_steps = total_steps
        self.token = token
        # The entries GET /models serves, with the server's keys (backend/nfsd/model_files.py ModelEntry:
        # name, kind, path, family, prediction_type, text_window, render_size, supported, note), wrapped
        # as the server does: {"default_model": ..., "models": [...]}. None: the route does not exist (404).
        self.models = models
        self.jobs: dict[str, dict] = {}
        self.unloaded = 0
        self.cancels: list[str] = []  # the job ids POST /jobs/{id}/cancel was called for
        self.mesh_warnings: list[str] = []  # what results report in meta["mesh"]["warnings"]
        self.lock = threading.Lock()
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

    def _advance(self, job: dict) -> None:
        if job["state"] == "queued":
            job["state"] = "running"
            job["started"] = job.get("started") or time.time()
        elif job["state"] == "running":
            job["step"] += 1
            if job["settings"]["prompt"].startswith("fail") and job["step"] >= 2:
                job["state"], job["error"] = "failed", FAIL_MESSAGE
            elif job["step"] >= job["total"]:
                job["state"] = "done"
            if job["state"] != "running":
                job["finished"] = time.time()

    def _status(self, job: dict) -> dict:
        return {"id": job["id"], "state": job["state"], "queue_position": 0, "step": job["step"],
                "total": job["total"], "eta_seconds": 2.0 * (job["total"] - job["step"]),
                "elapsed_seconds": 1.0 * job["step"], "loss": 0.5 / (1 + job["step"]), "error": job["error"],
                "created": 0.0, "started": job.get("started"), "finished": job.get("finished"),
                "settings": job["settings"], "progress": job["step"] / job["total"],
                "has_uvs": job["state"] != "queued", "resubmit_hint": None}

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
        mesh = job["mesh"]
        size = int(job["settings"].get("texture_size", 64))
        uvs, generated = self.uvs(job)
        texture = result_texture(size)
        cells = np.floor(uvs.mean(axis=1)).astype(np.int64)  # UDIM tiles as the backend reads them
        tiles = np.unique(1001 + cells[:, 0] + 10 * cells[:, 1])
        udim = len(tiles) > 1 and (cells[:, 0] >= 0).all() and (cells[:, 0] <= 9).all() and (cells[:, 1] >= 0).all()
        if udim:  # one texture per tile (docs/API.md); inside its first and last rows tile k is 255 - 80 k green
            texture = np.stack([texture] * len(tiles))
            for k in range(len(tiles)):
                texture[k, 1:-1, :, 1] = 255 - 80 * k
        arrays = {"texture": texture, "uvs": uvs,
                  "uvs_generated": np.array(generated),
                  "meta": np.array(json.dumps({"prompt": job["settings"]["prompt"],
                                               "mesh": {"warnings": self.mesh_warnings}}))}
        if udim:
            arrays["tiles"] = tiles.astype(np.int32)
        if job["settings"].get("offsets"):
            count = mesh["positions"].shape[0]
            arrays["offsets"] = np.tile(np.array([0.0, 0.0, 0.1], np.float32), (count, 1))
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

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
                if backend.token and self.headers.get("Authorization") != f"Bearer {backend.token}":
                    self._send(401, {"detail": "missing or wrong bearer token"})
                    return False
                return True

            def _job(self, job_id: str):
                job = backend.jobs.get(job_id)
                if job is None:
                    self._send(404, {"detail": f"no job {job_id}"})
                return job

            def do_GET(self):
                parts = self.path.strip("/").split("/")
                if parts == ["health"]:
                    return self._send(200, {"status": "ok", "version": "0.1.0", "device": "cpu", "gpu_name": None,
                                            "gpu_free_bytes": None, "model_loaded": False, "queue_length": 0,
                                            "auth_required": bool(backend.token)})
                if parts == ["explode"]:  # a backend bug: HTTP 500 with no JSON detail
                    return self._send(500, b"Internal Server Error", "text/plain")
                if not self._authorized():
                    return
                if parts == ["jobs"]:
                    with backend.lock:
                        return self._send(200, {"jobs": [backend._status(j) for j in backend.jobs.values()]})
                if parts == ["models"]:
                    if backend.models is None:
                        return self._send(404, {"detail": "Not Found"})
                    return self._send(200, {"default_model": "builtin", "models": backend.models})
                with backend.lock:
                    job = self._job(parts[1]) if len(parts) >= 2 and parts[0] == "jobs" else None
                    if job is None:
                        return None if len(parts) >= 2 else self._send(404, {"detail": "not found"})
                    if len(parts) == 2:
                        backend._advance(job)
                        return self._send(200, backend._status(job))
                    if parts[2] == "preview.png":
                        if job["step"] == 0:
                            return self._send(404, {"detail": "no snapshot yet"})
                        job["previews"] += 1
                        return self._send(200, preview_png(int(job["settings"].get("texture_size", 64))),
                                          "image/png")
                    if parts[2] == "uvs":
                        if job["state"] == "queued":
                            return self._send(404, {"detail": "UVs not known yet"})
                        job["uvs_requests"] += 1
                        return self._send(200, backend._uvs_npz(job), "application/octet-stream")
                    if parts[2] == "result":
                        if job["state"] != "done":
                            return self._send(409, {"detail": "job not done"})
                        return self._send(200, backend._result(job), "application/octet-stream")
                self._send(404, {"detail": "not found"})

            def do_POST(self):
                if not self._authorized():
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                parts = self.path.strip("/").split("/")
                if parts == ["jobs"]:
                    return self._submit(body)
                if parts == ["model", "unload"]:
                    backend.unloaded += 1
                    return self._send(200, {"unloaded": True})
                if len(parts) == 3 and parts[0] == "jobs" and parts[2] == "resubmit":
                    with backend.lock:
                        job = self._job(parts[1])
                        if job is None:
                            return None
                        if job["state"] not in ("failed", "cancelled", "interrupted"):
                            return self._send(409, {"detail": f"job {job['id']} is {job['state']}"})
                        new_id = uuid.uuid4().hex
                        backend.jobs[new_id] = dict(job, id=new_id, state="queued", step=0, error=None, started=None, finished=None,
                                                    previews=0, uvs_requests=0, resubmitted_from=job["id"])
                    return self._send(202, {"id": new_id, "state": "queued", "queue_position": 1})
                if len(parts) == 3 and parts[0] == "jobs" and parts[2] == "cancel":
                    with backend.lock:
                        backend.cancels.append(parts[1])
                        job = self._job(parts[1])
                        if job is not None:
                            if job["state"] in ("queued", "running"):
                                job["state"] = "cancelled"
                            self._send(200, backend._status(job))
                    return None
                self._send(404, {"detail": "not found"})

            def _submit(self, body: bytes) -> None:
                message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body)
                fields = {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
                          for part in message.iter_parts()}
                settings = json.loads(fields["settings"])
                unknown = set(settings) - {"prompt", "negative_prompt", "mode", "steps", "texture_size",
                                           "render_size", "batch", "guidance_scale", "offsets",
                                           "offset_strength", "seed", "model", "source_prompt"}
                if unknown:
                    return self._send(422, {"detail": f"unknown settings {sorted(unknown)}"})
                if not settings.get("prompt", "").strip():
                    return self._send(422, {"detail": "prompt is empty: type what the texture should show"})
                with np.load(io.BytesIO(fields["mesh"]), allow_pickle=False) as npz:
                    mesh = {key: npz[key] for key in npz.files}
                mask = mesh.get("face_mask")
                if mask is not None and (mask.dtype != np.bool_ or mask.shape != mesh["triangles"].shape[:1]):
                    return self._send(422, {"detail": f"face_mask must be bool [F], got {mask.dtype} {list(mask.shape)}"})
                job_id = uuid.uuid4().hex
                with backend.lock:
                    backend.jobs[job_id] = {"id": job_id, "state": "queued", "step": 0, "total": backend.total_steps,
                                            "error": None, "settings": settings, "mesh": mesh, "previews": 0, "uvs_requests": 0,
                                            "init_texture": fields.get("init_texture")}
                self._send(202, {"id": job_id})

        return Handler
