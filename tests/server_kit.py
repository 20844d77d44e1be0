"""Helpers of the server tests: wire-format meshes, multipart submits, a live uvicorn server."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import uvicorn
from PIL import Image

from nfsd.server import ServerConfig, create_app, uvicorn_config

PROMPT = "red brick wall"
FAST = {"prompt": PROMPT, "steps": 5, "render_size": 32, "texture_size": 64}
BACKEND = Path(__file__).resolve().parents[1] / "backend"


# ---------------------------------------------------------------------------------------------
# meshes in the wire format

def cube():
    """8 shared vertices, 12 triangles, per-corner UVs (each side a full 0..1 square)."""
    pos = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float32)
    tri = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                    [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]], np.int32)
    uvs = np.tile(np.array([[[0, 0], [1, 0], [1, 1]], [[0, 0], [1, 1], [0, 1]]], np.float32), (6, 1, 1))
    return {"positions": pos, "triangles": tri, "uvs": uvs}


def octahedron():
    """6 vertices, 8 triangles, no UVs (the backend unwraps it)."""
    pos = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float32)
    tri = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]], np.int32)
    return {"positions": pos, "triangles": tri}


def pyramid():
    """5 vertices, 6 triangles, no UVs, moved by a world matrix."""
    pos = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0], [0, 0, 1.5]], np.float32)
    tri = np.array([[0, 2, 1], [0, 3, 2], [0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]], np.int32)
    wm = np.eye(4, dtype=np.float32)
    wm[:3, 3] = (2.0, 0.0, 1.0)
    return {"positions": pos, "triangles": tri, "world_matrix": wm}


def icosphere_npz(subdivisions: int) -> bytes:
    """A wire .npz of a trimesh icosphere without UVs (20 * 4**subdivisions faces: the worker unwraps it)."""
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=subdivisions)
    return npz(positions=np.asarray(sphere.vertices, np.float32), triangles=np.asarray(sphere.faces, np.int32))


def npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def png(h=16, w=16) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), 120, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def submit(client, mesh: dict | bytes, settings: dict, init: bytes | None = None) -> httpx.Response:
    files = {"mesh": ("mesh.npz", mesh if isinstance(mesh, bytes) else npz(**mesh), "application/octet-stream")}
    if init is not None:
        files["init_texture"] = ("init.png", init, "image/png")
    return client.post("/jobs", files=files, data={"settings": json.dumps(settings)})


def wait_for(client, job_id, states=("done", "failed", "cancelled", "interrupted"), timeout=90.0,
             min_step=0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = client.get(f"/jobs/{job_id}").json()
        if s["state"] in states and s["step"] >= min_step:
            return s
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not reach {states} in {timeout}s: {s}")


# ---------------------------------------------------------------------------------------------
# servers

class LiveServer:
    """``create_app(config)`` served by uvicorn in a thread on 127.0.0.1, port chosen by the OS."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.app = create_app(config)
        self.server = uvicorn.Server(uvicorn_config(self.app, "127.0.0.1", 0, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {self.config.token}"} if self.config.token else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        return self

    def __exit__(self, *exc):
        self.client.close()
        self.server.should_exit = True
        self.thread.join(30)


def config(tiny_model, data_dir, **kw) -> ServerConfig:
    kw.setdefault("preview_interval", 0.1)
    kw.setdefault("torch_threads", 1)
    return ServerConfig(data_dir=data_dir, model=tiny_model, device="cpu", **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(client: httpx.Client, proc, timeout: float, what: str = "server subprocess") -> None:
    """Poll ``/health`` until the server started as ``proc`` (a ``subprocess.Popen``) answers; fail
    if the process ends first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.get("/health")
            return
        except httpx.TransportError:
            assert proc.poll() is None and time.monotonic() < deadline, f"{what} did not start"
            time.sleep(0.1)
