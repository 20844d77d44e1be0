"""The HTTP backend, tested as the add-on uses it: a real uvicorn server on an ephemeral loopback port,
a tiny random Stable-Diffusion-layout model built here, small meshes written to the wire .npz with numpy.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from server_kit import (BACKEND, FAST, PROMPT, LiveServer, config, cube, free_port, npz, octahedron, png, pyramid,
                        submit, wait_for, wait_until_serving)

from nfsd.errors import ConfigError
from nfsd.server import JobStatus, ServerConfig, serve
from nfsd.priors.tiny import build_tiny_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return str(build_tiny_model(tmp_path_factory.mktemp("model") / "tiny", prompt_words=(PROMPT,)))


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    with LiveServer(config(tiny_model, tmp_path_factory.mktemp("data"), max_upload_bytes=256 * 1024,
                           max_faces=200, models_dir=tmp_path_factory.mktemp("models"))) as live:
        yield live


# ---------------------------------------------------------------------------------------------
# jobs

def test_job_runs_to_done_and_result_matches_mesh(server):
    c = server.client
    health = c.get("/health").json()
    assert health["status"] == "ok" and health["device"] == "cpu" and health["auth_required"] is False
    assert health["queue_length"] == 0 and health["running_job"] is None

    r = submit(c, cube(), dict(FAST, steps=10, seed=3), init=png())
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert len(job_id) == 32 and int(job_id, 16) >= 0

    s = wait_for(c, job_id)
    assert s["state"] == "done", s
    assert s["worker"] == "local-0" and s["retries"] == 0
    [worker] = c.get("/health").json()["workers"]  # the one local worker process
    assert worker["name"] == "local-0" and worker["executor"] == "local" and worker["device"] == "cpu"
    assert worker["running_job"] is None and worker["jobs_done"] >= 1 and worker["models"] == [server.config.model]
    assert (s["step"], s["total"], s["progress"]) == (10, 10, 1.0)
    assert s["error"] is None and s["has_result"] and s["settings"]["model"] == server.config.model
    assert set(s) == set(JobStatus.model_fields) and JobStatus.model_validate(s).state == "done"

    z = np.load(io.BytesIO(c.get(f"/jobs/{job_id}/result").content), allow_pickle=False)
    mesh = cube()
    assert z["texture"].shape == (64, 64, 4) and z["texture"].dtype == np.uint8
    assert (z["texture"][..., 3] == 255).all()
    np.testing.assert_array_equal(z["uvs"], mesh["uvs"])  # the mesh's own UVs come back untouched
    assert not bool(z["uvs_generated"]) and "offsets" not in z.files
    meta = json.loads(str(z["meta"]))
    assert meta["job_id"] == job_id and meta["settings"]["prompt"] == PROMPT and meta["steps_done"] == 10

    preview = c.get(f"/jobs/{job_id}/preview.png")
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(preview.content)).size == (64, 64)
    assert job_id in [j["id"] for j in c.get("/jobs").json()["jobs"]]


def test_unwrapped_mesh_with_offsets_returns_uvs_and_per_vertex_offsets(server):
    c = server.client
    job_id = submit(c, octahedron(), dict(FAST, offsets=True, offset_strength=0.05)).json()["id"]
    assert wait_for(c, job_id)["state"] == "done"
    z = np.load(io.BytesIO(c.get(f"/jobs/{job_id}/result").content), allow_pickle=False)
    assert bool(z["uvs_generated"]) and z["uvs"].shape == (8, 3, 2) and z["uvs"].dtype == np.float32
    assert z["offsets"].shape == (6, 3) and z["offsets"].dtype == np.float32
    # Offsets are bounded by offset_strength times the bounding-sphere radius (1 here).
    assert np.abs(z["offsets"]).max() <= 0.05 + 1e-5
    # The UVs served during the run are the ones the result's texture is laid out on.
    early = np.load(io.BytesIO(c.get(f"/jobs/{job_id}/uvs").content), allow_pickle=False)
    np.testing.assert_array_equal(early["uvs"], z["uvs"])
    assert bool(early["uvs_generated"])


def test_uvs_of_an_unwrapped_mesh_are_served_while_it_runs_and_404_before(server):
    c = server.client
    blocker = submit(c, cube(), dict(FAST, steps=10000)).json()["id"]
    wait_for(c, blocker, states=("running",))
    job_id = submit(c, octahedron(), dict(FAST, steps=10000)).json()["id"]
    queued = c.get(f"/jobs/{job_id}").json()
    assert queued["state"] == "queued" and queued["has_uvs"] is False
    r = c.get(f"/jobs/{job_id}/uvs")
    assert r.status_code == 404 and "queued" in r.json()["detail"] and "has_uvs" in r.json()["detail"]

    c.post(f"/jobs/{blocker}/cancel")
    s = wait_for(c, job_id, states=("running",), min_step=1)
    assert s["has_uvs"] is True
    r = c.get(f"/jobs/{job_id}/uvs")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    z = np.load(io.BytesIO(r.content), allow_pickle=False)
    uvs = z["uvs"]
    assert uvs.shape == (8, 3, 2) and uvs.dtype == np.float32 and bool(z["uvs_generated"])
    assert 0.0 <= uvs.min() and uvs.max() <= 1.0
    # A real unwrap: every triangle gets a UV triangle of non-zero area.
    e1, e2 = uvs[:, 1] - uvs[:, 0], uvs[:, 2] - uvs[:, 0]
    assert (np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]) > 1e-4).all()
    c.post(f"/jobs/{job_id}/cancel")
    assert wait_for(c, job_id)["state"] == "cancelled"
    assert c.get(f"/jobs/{job_id}/uvs").content == r.content  # still served once the job has ended


def test_uvs_of_a_mesh_with_its_own_uvs_are_those_uvs(server):
    c = server.client
    job_id = submit(c, cube(), FAST).json()["id"]
    assert wait_for(c, job_id)["has_uvs"] is True
    z = np.load(io.BytesIO(c.get(f"/jobs/{job_id}/uvs").content), allow_pickle=False)
    np.testing.assert_array_equal(z["uvs"], cube()["uvs"])
    assert not bool(z["uvs_generated"])


def test_cancel_running_job_then_resubmit_and_delete(server):
    c = server.client
    job_id = submit(c, cube(), dict(FAST, steps=10000)).json()["id"]
    running = wait_for(c, job_id, states=("running",), min_step=5)
    assert running["eta_seconds"] > 0 and running["steps_per_second"] > 0
    assert c.get("/health").json()["running_job"] == job_id

    assert c.post(f"/jobs/{job_id}/cancel").status_code == 200
    s = wait_for(c, job_id)
    assert s["state"] == "cancelled" and 5 <= s["step"] < 10000
    assert s["resubmit_hint"] == f"POST /jobs/{job_id}/resubmit"
    assert c.get(f"/jobs/{job_id}/result").status_code == 409
    assert c.get(f"/jobs/{job_id}/preview.png").status_code == 200  # the texture as it was when stopped

    again = c.post(f"/jobs/{job_id}/resubmit")
    assert again.status_code == 202
    new_id = again.json()["id"]
    assert new_id != job_id and c.get(f"/jobs/{new_id}").json()["resubmitted_from"] == job_id
    c.post(f"/jobs/{new_id}/cancel")
    assert wait_for(c, new_id)["state"] == "cancelled"

    assert c.delete(f"/jobs/{job_id}").status_code == 200
    assert c.get(f"/jobs/{job_id}").status_code == 404
    assert not (Path(server.config.data_dir) / "jobs" / job_id).exists()


def test_three_clients_at_once_get_their_own_results_in_order(server):
    meshes = [cube(), octahedron(), pyramid()]
    ids: list[str | None] = [None] * 3
    barrier = threading.Barrier(3)

    def client(i):
        with httpx.Client(base_url=server.url, timeout=30) as c:
            barrier.wait()
            r = submit(c, meshes[i], dict(FAST, seed=i, offsets=i == 2))
            assert r.status_code == 202, r.text
            ids[i] = r.json()["id"]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(ids)
    statuses = [wait_for(server.client, job_id) for job_id in ids]
    assert all(s["state"] == "done" for s in statuses), statuses
    for mesh, job_id in zip(meshes, ids):
        z = np.load(io.BytesIO(server.client.get(f"/jobs/{job_id}/result").content))
        assert z["uvs"].shape == (len(mesh["triangles"]), 3, 2)
        assert z["texture"].shape == (64, 64, 4)
        if "offsets" in z.files:
            assert z["offsets"].shape == mesh["positions"].shape
    assert "offsets" in np.load(io.BytesIO(server.client.get(f"/jobs/{ids[2]}/result").content)).files
    # First in, first out: one job at a time, in the order the server accepted them.
    by_creation = sorted(statuses, key=lambda s: s["created"])
    for earlier, later in zip(by_creation, by_creation[1:]):
        assert earlier["finished"] <= later["started"]


# ---------------------------------------------------------------------------------------------
# bad requests: each gets the right 4xx with a message that says what was wrong

def _mesh_with(**changes) -> bytes:
    m = cube()
    m.update(changes)
    return npz(**{k: v for k, v in m.items() if v is not None})


def _many_faces():
    m = octahedron()
    return npz(positions=m["positions"], triangles=np.tile(m["triangles"], (30, 1)))


def _chunked(c):
    def body():
        yield b"--x\r\n"
    return c.post("/jobs", content=body(), headers={"Content-Type": "multipart/form-data; boundary=x"})


BAD = {
    "json instead of multipart": (lambda c: c.post("/jobs", json=FAST), 415, "multipart/form-data"),
    "oversized upload": (lambda c: submit(c, b"\0" * 300_000, FAST), 413, "limit"),
    "chunked upload": (_chunked, 411, "Content-Length"),
    "mesh field missing": (lambda c: c.post("/jobs", files={"x": ("a", b"1")}, data={"settings": "{}"}), 422, "unknown form field"),
    "no mesh file": (lambda c: c.post("/jobs", files={"settings": (None, json.dumps(FAST))}), 422, "'mesh' is missing"),
    "settings not JSON": (lambda c: c.post("/jobs", files={"mesh": ("m.npz", npz(**cube()))}, data={"settings": "{prompt"}), 422, "not valid JSON"),
    "mesh not an npz": (lambda c: submit(c, b"solid cube\nendsolid", FAST), 422, "not a valid .npz"),
    "npz missing triangles": (lambda c: submit(c, _mesh_with(triangles=None, uvs=None), FAST), 422, "missing array 'triangles'"),
    "positions wrong dtype": (lambda c: submit(c, _mesh_with(positions=cube()["positions"].astype(np.complex64)), FAST), 422, "dtype"),
    "positions wrong shape": (lambda c: submit(c, _mesh_with(positions=np.zeros((8, 2), np.float32)), FAST), 422, "shape"),
    "index out of range": (lambda c: submit(c, _mesh_with(triangles=cube()["triangles"] + 1), FAST), 422, "out of range"),
    "NaN position": (lambda c: submit(c, _mesh_with(positions=np.where(np.eye(8, 3, dtype=bool), np.nan, cube()["positions"]).astype(np.float32)), FAST), 422, "NaN"),
    "too many faces": (lambda c: submit(c, _many_faces(), FAST), 422, "limit of 200"),
    "empty prompt": (lambda c: submit(c, cube(), dict(FAST, prompt="   ")), 422, "prompt is empty"),
    "unknown mode": (lambda c: submit(c, cube(), dict(FAST, mode="dreamfusion")), 422, "settings.mode"),
    "steps out of range": (lambda c: submit(c, cube(), dict(FAST, steps=0)), 422, "settings.steps"),
    "texture_size not a multiple of 16": (lambda c: submit(c, cube(), dict(FAST, texture_size=100)), 422, "multiple of 16"),
    "unknown setting": (lambda c: submit(c, cube(), dict(FAST, stpes=10)), 422, "unknown setting"),
    "missing model": (lambda c: submit(c, cube(), dict(FAST, model="/no/such/model")), 422, "not offered"),
    "init_texture not a PNG": (lambda c: submit(c, cube(), FAST, init=b"\xff\xd8\xff\xe0 not really"), 422, "init_texture"),
    "unknown job id": (lambda c: c.get("/jobs/" + "0" * 32), 404, "no job"),
    "malformed job id (upper case)": (lambda c: c.get("/jobs/" + "A" * 32 + "/result"), 422, "32 lowercase hex"),
    "malformed job id (not hex)": (lambda c: c.get("/jobs/XYZ"), 422, "32 lowercase hex"),
    "cancel unknown job": (lambda c: c.post("/jobs/" + "f" * 32 + "/cancel"), 404, "no job"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_request_gets_4xx_and_server_stays_healthy(server, case):
    make, status, words = BAD[case]
    r = make(server.client)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and words in detail
    assert server.client.get("/health").status_code == 200


# ---------------------------------------------------------------------------------------------
# failures inside a job

def test_failed_model_load_fails_the_job_and_the_next_job_runs(server, tiny_model):
    broken = server.config.models_dir / "broken"  # offered: in the server's --models-dir
    import shutil

    shutil.copytree(tiny_model, broken)
    for f in (broken / "unet").glob("*.safetensors"):
        f.write_bytes(b"not weights")
    c = server.client
    bad = submit(c, cube(), dict(FAST, model=str(broken))).json()["id"]  # the tokenizer is fine
    good = submit(c, cube(), FAST).json()["id"]
    s = wait_for(c, bad)
    assert s["state"] == "failed" and "could not load model" in s["error"]
    assert wait_for(c, good)["state"] == "done"


def test_model_stays_loaded_between_jobs_until_unloaded(server):
    c = server.client
    assert wait_for(c, submit(c, cube(), FAST).json()["id"])["state"] == "done"
    assert c.get("/health").json()["model_loaded"] == server.config.model
    assert c.post("/model/unload").json() == {"unloaded": True}
    assert c.get("/health").json()["model_loaded"] is None
    assert c.post("/model/unload").json() == {"unloaded": False}


def test_worker_process_that_dies_fails_its_job_and_the_next_job_runs(server):
    c = server.client
    job_id = submit(c, cube(), dict(FAST, steps=10000)).json()["id"]
    wait_for(c, job_id, states=("running",), min_step=5)
    os.kill(server.server.config.app.state.manager.worker_pid(), signal.SIGKILL)  # the spawned worker process
    s = wait_for(c, job_id)
    assert s["state"] == "failed" and "worker process stopped unexpectedly" in s["error"]
    assert c.get("/health").status_code == 200
    nxt = submit(c, cube(), FAST).json()["id"]
    assert wait_for(c, nxt)["state"] == "done"


def test_out_of_memory_fails_the_job_with_the_setting_to_lower(tiny_model, tmp_path):
    from nfsd.jobs.queue import JobManager, ManagerConfig
    from nfsd.jobs.job_run import make_texture_job

    class OutOfMemoryJob:
        def run(self, on_progress):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        def cancel(self):
            pass

    calls = []

    def make_job(*args, **hooks):
        calls.append(1)
        return OutOfMemoryJob() if len(calls) == 1 else make_texture_job(*args, **hooks)

    manager = JobManager(ManagerConfig(data_dir=tmp_path, default_model=tiny_model, device="cpu"), make_job=make_job)
    manager.start()
    try:
        first = manager.submit(npz(**cube()), dict(FAST)).id
        second = manager.submit(npz(**cube()), dict(FAST)).id
        deadline = time.monotonic() + 60
        while manager.get(second).state not in ("done", "failed") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert manager.get(first).state == "failed" and "render_size" in manager.get(first).error
        assert manager.get(second).state == "done"
    finally:
        manager.stop()


# ---------------------------------------------------------------------------------------------
# persistence

def test_restart_serves_earlier_result(tiny_model, tmp_path):
    with LiveServer(config(tiny_model, tmp_path)) as first:
        job_id = submit(first.client, cube(), FAST).json()["id"]
        assert wait_for(first.client, job_id)["state"] == "done"
        before = first.client.get(f"/jobs/{job_id}/result").content
    with LiveServer(config(tiny_model, tmp_path)) as second:
        s = second.client.get(f"/jobs/{job_id}").json()
        assert s["state"] == "done" and s["step"] == 5
        assert second.client.get(f"/jobs/{job_id}/result").content == before


def test_old_jobs_are_pruned_by_count(tiny_model, tmp_path):
    with LiveServer(config(tiny_model, tmp_path, max_jobs=2)) as live:
        ids = [submit(live.client, cube(), dict(FAST, steps=1)).json()["id"] for _ in range(3)]
        wait_for(live.client, ids[-1], timeout=60)
        time.sleep(0.2)  # pruning follows the job's end
        kept = {j["id"] for j in live.client.get("/jobs").json()["jobs"]}
        assert kept == set(ids[1:])
        assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == sorted(ids[1:])


def test_job_killed_mid_run_is_reported_interrupted(tiny_model, tmp_path):
    port = free_port()
    code = (f"import torch; torch.set_num_threads(1); from nfsd.server import serve; "
            f"serve(port={port}, data_dir={str(tmp_path)!r}, model={tiny_model!r}, device='cpu', log_level='warning', torch_threads=1)")
    env = dict(os.environ, PYTHONPATH=str(BACKEND), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        c = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        wait_until_serving(c, proc, 60)
        job_id = submit(c, cube(), dict(FAST, steps=10000)).json()["id"]
        wait_for(c, job_id, states=("running",), min_step=5)
        time.sleep(0.7)  # let status.json catch up with a running step count
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    with LiveServer(config(tiny_model, tmp_path)) as live:
        s = live.client.get(f"/jobs/{job_id}").json()
        assert s["state"] == "interrupted" and s["step"] >= 5, s
        assert f"/jobs/{job_id}/resubmit" in s["error"] and s["resubmit_hint"]
        again = live.client.post(f"/jobs/{job_id}/resubmit")
        assert again.status_code == 202
        new_id = again.json()["id"]
        wait_for(live.client, new_id, states=("running", "done"))
        live.client.post(f"/jobs/{new_id}/cancel")
        assert wait_for(live.client, new_id)["state"] == "cancelled"


# ---------------------------------------------------------------------------------------------
# authentication

def test_token_required_when_set(tiny_model, tmp_path):
    with LiveServer(config(tiny_model, tmp_path, token="s3cret")) as live:
        bare = httpx.Client(base_url=live.url)
        health = bare.get("/health")
        assert health.status_code == 200 and health.json()["auth_required"] is True
        assert bare.get("/jobs").status_code == 401
        wrong = bare.get("/jobs", headers={"Authorization": "Bearer s3creT"})
        assert wrong.status_code == 401 and "token" in wrong.json()["detail"]
        assert bare.post("/model/unload", headers={"Authorization": "Basic s3cret"}).status_code == 401
        assert live.client.get("/jobs").status_code == 200  # the right token
        job_id = submit(live.client, cube(), FAST).json()["id"]
        assert bare.get(f"/jobs/{job_id}/uvs").status_code == 401
        assert live.client.get(f"/jobs/{job_id}/uvs").status_code in (200, 404)  # 404 only while queued


def test_docs_pages_are_served_on_loopback_only(tiny_model, tmp_path):
    with LiveServer(config(tiny_model, tmp_path / "a", token="s3cret")) as live:
        assert live.client.get("/openapi.json").status_code == 200  # schema only, no token needed
    # The same app configured for a public address (served here on loopback by the test harness).
    with LiveServer(config(tiny_model, tmp_path / "b", host="0.0.0.0", token="s3cret")) as live:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert live.client.get(path).status_code == 404, path
        assert live.client.get("/health").status_code == 200


def test_public_host_without_token_is_refused_at_start(tmp_path):
    with pytest.raises(ConfigError, match="without a token"):
        serve(host="0.0.0.0", port=free_port(), data_dir=tmp_path)
    ServerConfig(host="::1").check()  # loopback needs no token
    ServerConfig(host="0.0.0.0", token="t").check()


def test_start_prunes_by_age_and_requeues_queued_jobs_in_order(tmp_path):
    from nfsd.jobs.queue import JobManager, ManagerConfig
    from nfsd.jobs.store import JobRecord, JobStore

    store = JobStore(tmp_path)
    now = time.time()
    old = JobRecord(id="a" * 32, seq=0, created=now - 50 * 86400, settings=dict(FAST), state="done",
                    finished=now - 40 * 86400)
    recent = JobRecord(id="b" * 32, seq=1, created=now - 60, settings=dict(FAST), state="failed", finished=now - 30)
    queued = [JobRecord(id=c * 32, seq=seq, created=now, settings=dict(FAST, seed=seq)) for c, seq in (("d", 3), ("c", 2))]
    for rec in [old, recent, *queued]:
        store.create(rec, npz(**cube()), None)

    started = []

    class RecordingJob:  # stands in for the engine: records the order jobs run in
        def __init__(self, job_id):
            self.job_id = job_id

        def run(self, on_progress):
            started.append(self.job_id)
            raise ConfigError("stop here")

        def cancel(self):
            pass

    manager = JobManager(ManagerConfig(data_dir=tmp_path, max_age_days=30),
                         make_job=lambda mesh, settings, init, cfg, **hooks: RecordingJob(settings["seed"]))
    manager.start()
    try:
        deadline = time.monotonic() + 10
        while len(started) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert started == [2, 3]  # first in, first out, as before the restart
        assert manager.get(old.id) is None and not store.dir(old.id).exists()
        assert manager.get(recent.id).state == "failed"
    finally:
        manager.stop()
