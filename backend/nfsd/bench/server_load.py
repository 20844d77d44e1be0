"""The load ``nfsd bench server`` puts on a running server: a light HTTP client, jobs, bursts of polls.

Stdlib HTTP only, so that the polling clients (separate processes) stay light beside the job. Every
call takes the server's loopback ``port`` and gives up at ``deadline`` (``time.time()`` seconds).
"""

from __future__ import annotations

import http.client
import io
import json
import multiprocessing
import os
import time
import uuid

import numpy as np


class Http:
    """A keep-alive HTTP/1.1 connection to the server (stdlib only, so clients stay light)."""

    def __init__(self, port: int, timeout: float = 30.0):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            r = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # uvicorn closes connections idle for 5 s; open a new one once.
            self.conn.close()
            self.conn.request(method, path, body=body, headers=headers or {})
            r = self.conn.getresponse()
        return r.status, r.read()

    def json(self, method: str, path: str, **kw):
        status, data = self.request(method, path, **kw)
        if status >= 400:
            raise RuntimeError(f"{method} {path} -> {status}: {data[:300]!r}")
        return json.loads(data)

    def close(self):
        self.conn.close()


def burst_client(port: int, job_id: str, requests: int, with_preview: bool, deadline: float,
                 rate: float, cpus: set | None = None) -> list[float]:
    """One client process: up to ``requests`` polls, ``rate`` per second (0: back to back); returns latencies in s."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    http_ = Http(port)
    paths = [f"/jobs/{job_id}"] + ([f"/jobs/{job_id}/preview.png"] if with_preview else [])
    latencies = []
    next_at = time.perf_counter()
    try:
        for i in range(requests):
            if time.time() > deadline:
                break
            if rate > 0:
                next_at += 1.0 / rate
                time.sleep(max(0.0, next_at - time.perf_counter()))
            path = paths[i % len(paths)]
            t0 = time.perf_counter()
            status, data = http_.request("GET", path)
            latencies.append(time.perf_counter() - t0)
            if path == paths[0] and status == 200 and json.loads(data)["state"] not in ("queued", "loading", "running"):
                break
    finally:
        http_.close()
    return latencies


def submit(http_: Http, mesh_npz: bytes, settings: dict) -> str:
    boundary = "nfsd-bench-" + uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"settings\"\r\n\r\n{json.dumps(settings)}\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"mesh\"; filename=\"mesh.npz\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + mesh_npz + f"\r\n--{boundary}--\r\n".encode()
    answer = http_.json("POST", "/jobs", body=body,
                        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    return answer["id"]


def wait(http_: Http, job_id: str, deadline: float, states=("done", "failed", "cancelled", "interrupted"),
         interval: float = 0.5) -> dict:
    while True:
        s = http_.json("GET", f"/jobs/{job_id}")
        if s["state"] in states:
            return s
        if time.time() > deadline:
            raise TimeoutError(f"job {job_id} still {s['state']} at the benchmark's time limit (--timeout)")
        time.sleep(interval)


def run_job(port: int, mesh_npz: bytes, settings: dict, deadline: float, clients: int = 0,
            requests: int = 0, with_preview: bool = False, rate: float = 0.0, cpus: set | None = None) -> dict:
    http_ = Http(port)
    try:
        job_id = submit(http_, mesh_npz, settings)
        latencies: list[float] = []
        burst_s = 0.0
        if clients:
            wait(http_, job_id, deadline, states=("running", "done", "failed"), interval=0.02)
            ctx = multiprocessing.get_context("spawn")
            t0 = time.perf_counter()
            with ctx.Pool(clients) as pool:
                handles = [pool.apply_async(burst_client, (port, job_id, requests, with_preview, deadline, rate, cpus))
                           for _ in range(clients)]
                for h in handles:
                    latencies += h.get(timeout=max(1.0, deadline - time.time() + 5))
            burst_s = time.perf_counter() - t0
        status = wait(http_, job_id, deadline)
        if status["state"] != "done":
            raise RuntimeError(f"benchmark job ended {status['state']}: {status['error']}")
        return {"steps_per_second": status["steps_per_second"], "latencies": latencies, "burst_s": burst_s,
                "elapsed_s": status["elapsed_seconds"]}
    finally:
        http_.close()


def poll_health(port: int, rate: float, stop, out) -> None:
    """A process polling ``GET /health`` ``rate`` times a second until ``stop`` is set; puts its
    ``(start time, latency s)`` pairs on ``out``."""
    http_ = Http(port)
    samples = []
    next_at = time.perf_counter()
    while not stop.is_set():
        next_at += 1.0 / rate
        time.sleep(max(0.0, next_at - time.perf_counter()))
        t0, p0 = time.time(), time.perf_counter()
        http_.request("GET", "/health")
        samples.append((t0, time.perf_counter() - p0))
    http_.close()
    out.put(samples)


def grid_mesh_npz(n: int) -> tuple[bytes, int, int]:
    """A valid n x n vertex grid (a gently curved sheet) with per-corner UVs as an uncompressed wire
    .npz; returns (bytes, vertices, triangles)."""
    u, v = np.meshgrid(np.linspace(0, 1, n, dtype=np.float32), np.linspace(0, 1, n, dtype=np.float32))
    pos = np.stack([u, v, 0.1 * np.sin(6 * u) * np.cos(6 * v)], -1).reshape(-1, 3)
    i = np.arange(n * n, dtype=np.int32).reshape(n, n)
    a, b, c, d = i[:-1, :-1].ravel(), i[:-1, 1:].ravel(), i[1:, :-1].ravel(), i[1:, 1:].ravel()
    tri = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    uvs = pos[:, :2][tri]
    buf = io.BytesIO()
    np.savez(buf, positions=pos, triangles=tri, uvs=uvs)
    return buf.getvalue(), len(pos), len(tri)


def health_during_upload(port: int, n: int, uploads: int, rate: float, idle_s: float, settings: dict,
                         deadline: float) -> dict:
    """Latencies of /health while ``uploads`` grid meshes are submitted one after another, and while idle."""
    mesh_npz, n_vertices, n_faces = grid_mesh_npz(n)
    ctx = multiprocessing.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    poller = ctx.Process(target=poll_health, args=(port, rate, stop, out))
    poller.start()
    windows = []
    http_ = Http(port, timeout=300)
    try:
        time.sleep(idle_s)
        for _ in range(uploads):
            if time.time() > deadline:
                break
            t0 = time.time()
            job_id = submit(http_, mesh_npz, settings)
            windows.append((t0, time.time()))
            http_.json("POST", f"/jobs/{job_id}/cancel")
            time.sleep(idle_s / 2)
    finally:
        stop.set()
        samples = out.get(timeout=60)
        poller.join(30)
        http_.close()
    busy = [lat for t, lat in samples if any(a <= t <= b for a, b in windows)]
    idle = [lat for t, lat in samples if not any(a - 0.5 <= t <= b + 0.5 for a, b in windows)]
    return {"bytes": len(mesh_npz), "vertices": n_vertices, "faces": n_faces, "busy": busy, "idle": idle,
            "submit_s": [b - a for a, b in windows]}
