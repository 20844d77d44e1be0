"""The job manager's races and faults, driven directly (no HTTP): cancels that arrive late keep the
finished work, cancels during mesh preparation take effect at once, a stopped server records what the
user asked for."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import numpy as np

from server_kit import BACKEND, free_port, icosphere_npz, wait_until_serving

from nfsd.jobs.store import JobRecord, JobStore
from nfsd.jobs.queue import JobManager, ManagerConfig
from nfsd.jobs.job_run import make_texture_job


FAST = {"prompt": "red brick wall", "steps": 3, "render_size": 32, "texture_size": 32}


def octahedron_npz(uvs: bool = True) -> bytes:
    pos = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float32)
    tri = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]], np.int32)
    arrays = {"positions": pos, "triangles": tri}
    if uvs:
        arrays["uvs"] = (pos[tri][:, :, :2] * 0.45 + 0.5).astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def wait_until_finished(manager: JobManager, job_id: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while manager.get(job_id).state not in ("done", "failed", "cancelled", "interrupted"):
        assert time.monotonic() < deadline, f"job still {manager.get(job_id).state}"
        time.sleep(0.02)
    return manager.get(job_id)


class LateCancel:
    """A real TextureJob whose manager gets a cancel for it at a chosen moment of the run."""

    def __init__(self, job, cancel, when: str):
        self.job, self.cancel_job, self.when = job, cancel, when

    def run(self, on_progress):
        def progress(p):
            on_progress(p)
            if self.when == "last step" and p.phase == "optimizing" and p.step == p.total:
                self.cancel_job()  # the last step is done; the finishing (dilation...) is not

        result = self.job.run(progress)
        if self.when == "after run":
            self.cancel_job()
        return result

    def cancel(self):
        self.job.cancel()

    def snapshot(self):
        return self.job.snapshot()


def test_cancel_arriving_after_the_last_step_keeps_the_finished_result(tiny_model, tmp_path):
    holder: dict = {}

    def make_job(mesh_npz, settings, init_png, config, **hooks):
        settings = dict(settings)
        when = settings.pop("when")
        job = make_texture_job(mesh_npz, settings, init_png, config, **hooks)
        return LateCancel(job, lambda: holder["manager"].cancel(holder["ids"][settings["seed"]]), when)

    manager = JobManager(ManagerConfig(data_dir=tmp_path, default_model=str(tiny_model), device="cpu"),
                         make_job=make_job)
    holder["manager"] = manager
    # "when" rides along in the settings only to tell the fake which race to stage.
    settings = [dict(FAST, seed=0, progress_every=1, when="last step"), dict(FAST, seed=1, when="after run")]
    manager.start()
    try:
        holder["ids"] = {}
        for s in settings:
            holder["ids"][s["seed"]] = manager.submit(octahedron_npz(), s).id
        for s in settings:
            job_id = holder["ids"][s["seed"]]
            rec = wait_until_finished(manager, job_id)
            assert rec.state == "done" and rec.step == 3, (s["when"], rec)
            z = np.load(manager.result_path(job_id), allow_pickle=False)
            assert z["texture"].shape == (32, 32, 4)
            assert json.loads(str(z["meta"]))["cancelled"] is False
    finally:
        manager.stop()


def test_cancel_while_the_worker_unwraps_the_mesh_ends_the_job_before_its_uvs_exist(tiny_model, tmp_path):
    manager = JobManager(ManagerConfig(data_dir=tmp_path, default_model=str(tiny_model), device="cpu", torch_threads=1))
    manager.start()  # the real worker process
    try:
        job_id = manager.submit(icosphere_npz(6), dict(FAST)).id  # 81,920 faces, no UVs: about a second of xatlas
        deadline = time.monotonic() + 120
        while (manager.get(job_id).stage or "") != "unwrapping 81,920 faces":
            assert time.monotonic() < deadline and manager.get(job_id).state in ("queued", "loading")
            time.sleep(0.01)
        manager.cancel(job_id)
        rec = wait_until_finished(manager, job_id)
        assert rec.state == "cancelled" and rec.error is None
        assert not rec.has_uvs and manager.uvs_bytes(job_id) is None  # the unwrap was stopped, not finished
    finally:
        manager.stop()


def test_sigterm_stops_nfsd_serve_quickly_and_a_cancelled_job_stays_cancelled(tiny_model, tmp_path):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(BACKEND), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    # Its own process group, as under a service manager or a terminal: the signal reaches the worker too.
    proc = subprocess.Popen([sys.executable, "-m", "nfsd", "serve", "--port", str(port), "--data-dir", str(tmp_path),
                             "--model", str(tiny_model), "--device", "cpu", "--threads", "1"],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        c = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        deadline = time.monotonic() + 90
        wait_until_serving(c, proc, 90, "nfsd serve")
        files = {"mesh": ("mesh.npz", octahedron_npz(), "application/octet-stream")}
        job_id = c.post("/jobs", files=files, data={"settings": json.dumps(dict(FAST, texture_size=64, steps=5000))}).json()["id"]
        while c.get(f"/jobs/{job_id}").json()["step"] < 2:
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.05)
        assert c.post(f"/jobs/{job_id}/cancel").status_code == 200
        os.killpg(proc.pid, signal.SIGTERM)  # at once: the job has not seen the cancel yet
        proc.wait(timeout=5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    assert "Traceback" not in proc.stderr.read().decode(errors="replace")
    status = json.loads((tmp_path / "jobs" / job_id / "status.json").read_text())
    assert status["state"] == "cancelled" and status["error"] is None


def test_a_job_cancelled_before_the_server_died_is_cancelled_after_restart(tmp_path):
    store = JobStore(tmp_path)
    rec = JobRecord(id="e" * 32, seq=0, created=time.time(), settings=dict(FAST), state="running", step=7,
                    cancel_requested=True)
    store.create(rec, octahedron_npz(), None)
    manager = JobManager(ManagerConfig(data_dir=tmp_path), make_job=lambda *args, **hooks: None)
    manager.start()
    try:
        assert manager.get(rec.id).state == "cancelled" and manager.get(rec.id).error is None
    finally:
        manager.stop()
