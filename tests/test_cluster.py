"""Scale-out: several workers behind the one queue. The Ray executor (one local Ray for the module, two
long-lived actors) runs jobs side by side, gives the local executor's bytes, cancels and survives a
killed actor; the local executor with two devices runs two jobs at once. Real engine, tiny model."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from server_kit import LiveServer, config, cube, npz, wait_for

from nfsd.batch.command import run_batch
from nfsd.geometry.builtin_meshes import builtin_mesh
from nfsd.geometry.wire import write_wire_npz
from nfsd.jobs.events import Outcome
from nfsd.jobs.outcomes import REQUEUE, after_restart, settle
from nfsd.jobs.queue import JobManager, ManagerConfig
from nfsd.jobs.slots import JobQueue
from nfsd.jobs.store import JobRecord, JobStore, new_job_id

JOB = {"prompt": "red brick wall", "render_size": 32, "texture_size": 32, "steps": 20, "seed": 0}
ENDED = ("done", "failed", "cancelled", "interrupted")


def wait_all(manager: JobManager, ids: list[str], timeout: float = 180.0) -> int:
    """Wait until every job has ended; the most jobs seen optimizing at the same moment."""
    deadline, most = time.monotonic() + timeout, 0
    while True:
        recs = [manager.get(i) for i in ids]
        most = max(most, sum(r.state == "running" and r.step >= 1 for r in recs))
        if all(r.state in ENDED for r in recs):
            return most
        assert time.monotonic() < deadline, [(r.state, r.step, r.worker) for r in recs]
        time.sleep(0.01)


def wait_step(manager: JobManager, job_id: str, step: int, timeout: float = 120.0) -> JobRecord:
    deadline = time.monotonic() + timeout
    while not (manager.get(job_id).state == "running" and manager.get(job_id).step >= step):
        assert manager.get(job_id).state not in ENDED and time.monotonic() < deadline, manager.get(job_id)
        time.sleep(0.01)
    return manager.get(job_id)


def textures(manager: JobManager, job_id: str) -> dict:
    with np.load(manager.result_path(job_id), allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k != "meta"}  # meta holds timings


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_manager(ray_cluster, tiny_model, tmp_path_factory):
    manager = JobManager(ManagerConfig(data_dir=tmp_path_factory.mktemp("ray_jobs"), default_model=str(tiny_model),
                                       device="cpu", executor="ray", ray_workers=2, torch_threads=1,
                                       preview_interval=0.1))
    manager.start()
    deadline = time.monotonic() + 120  # warm workers: both actors started (each has imported torch)
    while not all(w["ready"] for w in manager.workers()):
        assert time.monotonic() < deadline, manager.workers()
        time.sleep(0.05)
    yield manager
    manager.stop()


def test_four_jobs_on_two_ray_workers_all_complete_side_by_side(ray_manager):
    ids = [ray_manager.submit(npz(**cube()), dict(JOB, seed=i)).id for i in range(4)]
    most = wait_all(ray_manager, ids)
    recs = [ray_manager.get(i) for i in ids]
    assert [r.state for r in recs] == ["done"] * 4, [r.error for r in recs]
    assert {r.worker for r in recs} == {"ray-0", "ray-1"}
    assert most == 2, "the two workers never optimized at the same moment"
    for r in recs:  # the results, UVs and previews came back as bytes into the server's job folders
        assert textures(ray_manager, r.id)["texture"].shape == (32, 32, 4)
        assert ray_manager.uvs_bytes(r.id) is not None and ray_manager.preview_bytes(r.id) is not None


def test_each_ray_worker_loads_the_model_once_for_all_its_jobs(ray_manager):
    ids = [ray_manager.submit(npz(**cube()), dict(JOB, seed=10 + i, steps=2)).id for i in range(4)]
    wait_all(ray_manager, ids)
    workers = ray_manager.workers()
    assert [w["name"] for w in workers] == ["ray-0", "ray-1"]
    assert sum(w["jobs_done"] for w in workers) >= 4
    assert [w["model_loads"] for w in workers] == [1, 1], workers  # counted in the actor's own process
    assert all(w["models"] for w in workers)


def test_two_local_devices_run_two_jobs_at_once_and_a_ray_result_is_byte_identical_to_a_local_one(
        ray_manager, tiny_model, tmp_path):
    settings = dict(JOB, seed=7, steps=16)
    remote = ray_manager.submit(npz(**cube()), settings).id
    local = JobManager(ManagerConfig(data_dir=tmp_path, default_model=str(tiny_model), device="cpu",
                                     devices=("cpu", "cpu"), torch_threads=1, preview_interval=0.1))
    local.start()
    try:
        long = [local.submit(npz(**cube()), dict(JOB, seed=i, steps=10_000)).id for i in (1, 2)]
        deadline = time.monotonic() + 120
        while not all(local.get(i).state == "running" and local.get(i).step >= 1 for i in long):
            assert time.monotonic() < deadline and not any(local.get(i).state in ENDED for i in long), \
                [(local.get(i).state, local.get(i).error) for i in long]
            time.sleep(0.01)
        assert {local.get(i).worker for i in long} == {"local-0", "local-1"}
        for i in long:
            local.cancel(i)
        same = local.submit(npz(**cube()), settings).id
        wait_all(local, long + [same])
        wait_all(ray_manager, [remote])
        assert local.get(same).state == ray_manager.get(remote).state == "done"
        a, b = textures(ray_manager, remote), textures(local, same)
        assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
        assert [w["device"] for w in local.workers()] == ["cpu", "cpu"]
    finally:
        local.stop()


def test_a_cancel_reaches_a_job_on_a_ray_worker_within_a_step(ray_manager):
    job_id = ray_manager.submit(npz(**cube()), dict(JOB, steps=10_000)).id
    wait_step(ray_manager, job_id, 2)
    t0 = time.monotonic()
    ray_manager.cancel(job_id)
    wait_all(ray_manager, [job_id], timeout=30)
    rec = ray_manager.get(job_id)
    assert rec.state == "cancelled" and rec.error is None and rec.step < 10_000
    assert time.monotonic() - t0 < 10
    nxt = ray_manager.submit(npz(**cube()), dict(JOB, steps=2)).id  # the worker is free again
    wait_all(ray_manager, [nxt])
    assert ray_manager.get(nxt).state == "done"


def test_a_killed_ray_worker_is_replaced_and_its_job_runs_once_more_on_another(ray_manager, ray_cluster):
    job_id = ray_manager.submit(npz(**cube()), dict(JOB, steps=40)).id
    wait_step(ray_manager, job_id, 2)
    slot = next(s for s in ray_manager.slots if s.job_id == job_id)
    killed, pid = slot.name, slot.runner.pid()
    ray_cluster.kill(slot.runner.actor)
    wait_all(ray_manager, [job_id])
    rec = ray_manager.get(job_id)
    assert rec.state == "done" and rec.step == 40 and rec.retries == 1, rec
    assert rec.worker != killed  # re-run on the other worker
    on_disk = json.loads(ray_manager.store.read_bytes(job_id, "status.json"))
    assert on_disk["retries"] == 1 and on_disk["state"] == "done"
    deadline = time.monotonic() + 60  # the dead actor is replaced by a new one (a new process)
    while not all(w["ready"] for w in ray_manager.workers()):
        assert time.monotonic() < deadline, ray_manager.workers()
        time.sleep(0.05)
    assert slot.runner.pid() not in (None, pid)


def test_a_server_restarted_with_the_ray_executor_runs_what_was_running_again_once(ray_cluster, tiny_model, tmp_path):
    store, mesh = JobStore(tmp_path), npz(**cube())
    fresh = JobRecord(id=new_job_id(), seq=0, created=time.time(), settings=dict(JOB, steps=3), state="running",
                      step=2, total=3, worker="ray-1")
    again = JobRecord(id=new_job_id(), seq=1, created=time.time(), settings=dict(JOB, steps=3), state="running",
                      retries=1)  # it was re-run once already
    for rec in (fresh, again):
        store.create(rec, mesh, None)
    with LiveServer(config(str(tiny_model), tmp_path, executor="ray", ray_workers=1)) as live:
        c = live.client
        s = wait_for(c, fresh.id)
        assert s["state"] == "done" and s["retries"] == 1 and s["worker"] == "ray-0" and s["step"] == 3, s["error"]
        s = c.get(f"/jobs/{again.id}").json()
        assert s["state"] == "interrupted" and s["retries"] == 1 and f"/jobs/{again.id}/resubmit" in s["error"]
        [worker] = c.get("/health").json()["workers"]
        assert worker["executor"] == "ray" and worker["name"] == "ray-0" and worker["model_loads"] == 1


def test_nfsd_batch_textures_a_manifest_through_a_ray_backed_server_on_both_workers(ray_cluster, tiny_model,
                                                                                   tmp_path, capsys):
    write_wire_npz(builtin_mesh("cube"), tmp_path / "cube.npz")
    rows = [{"mesh": "cube.npz", "prompt": "red brick wall", "seed": i, "name": f"prop{i}"} for i in range(4)]
    manifest = tmp_path / "set.json"
    manifest.write_text(json.dumps({"defaults": {k: v for k, v in JOB.items() if k != "prompt"}, "rows": rows}))
    with LiveServer(config(str(tiny_model), tmp_path / "data", executor="ray", ray_workers=2)) as live:
        deadline = time.monotonic() + 120  # both actors started, so that neither takes the whole queue
        while not all(w["ready"] for w in live.client.get("/health").json()["workers"]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert run_batch(manifest, tmp_path / "out", server=live.url, jobs=4) == 0, capsys.readouterr().err
        jobs = live.client.get("/jobs").json()["jobs"]
    assert len(jobs) == 4 and {j["state"] for j in jobs} == {"done"}
    assert {j["worker"] for j in jobs} == {"ray-0", "ray-1"}  # the queue went to both workers
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [r["state"] for r in summary["rows"]] == ["done"] * 4
    for i in range(4):
        with np.load(tmp_path / "out" / f"prop{i}" / "result.npz", allow_pickle=False) as z:
            assert z["texture"].shape == (32, 32, 4)


def test_the_cluster_bench_prints_jobs_per_hour_for_each_worker_count_and_the_load_saved(ray_cluster, tiny_model,
                                                                                          capsys):
    from nfsd.bench.cluster import main

    assert main(["--jobs", "3", "--steps", "2", "--render-size", "32", "--texture-size", "32",
                 "--model", str(tiny_model)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    table = lines[lines.index(next(l for l in lines if l.split()[:1] == ["workers"])) + 1:][:2]
    rows = {int(line.split()[0]): line.split() for line in table}
    assert rows[1][3] == "1.00" and rows[1][4] == "1" and rows[2][4] == "2"  # one model load per worker
    jph = float(rows[2][2]) / float(rows[1][2])
    assert abs(jph - float(rows[2][3])) < 0.01  # the ratio is the two rates'
    assert "cold (a worker's first job, 3 jobs)" in out  # 1 + 2 workers: each loaded the model once


# -- the rules, without Ray -------------------------------------------------------------------------

def test_a_lost_worker_requeues_its_job_once_then_ends_it_interrupted():
    rec = JobRecord(id="a" * 32, seq=0, created=0.0, settings={})
    died = Outcome("died", error="the Ray worker running it was lost (ActorDiedError)")
    assert settle(rec, died, stopping=False, retry_lost=True, oom_hint="")[0] == REQUEUE
    assert settle(rec, died, stopping=False, retry_lost=False, oom_hint="lower it")[0] == "failed"  # local process
    assert settle(rec, died, stopping=True, retry_lost=True, oom_hint="")[0] == "interrupted"  # the server stops
    rec.retries = 1
    state, error = settle(rec, died, stopping=False, retry_lost=True, oom_hint="")
    assert state == "interrupted" and "re-run once" in error and f"/jobs/{rec.id}/resubmit" in error
    # A restart finds the job running: queued again under Ray (once), else interrupted or cancelled.
    assert after_restart(JobRecord(id="b" * 32, seq=1, created=0.0, settings={}), retry_lost=True)[0] == REQUEUE
    assert after_restart(rec, retry_lost=True)[0] == "interrupted"
    assert after_restart(JobRecord(id="c" * 32, seq=2, created=0.0, settings={}, cancel_requested=True),
                         retry_lost=True)[0] == "cancelled"


def test_a_free_worker_prefers_a_job_whose_model_it_holds_but_the_head_waits_only_so_long():
    models = {"a": "sd15", "b": "builtin", "c": "builtin", "d": "builtin", "e": "builtin", "f": "builtin"}
    q = JobQueue()
    for job in "abcdef":
        q.add(job)
    taken = [q.take(models.get, ["builtin"], 0, 1) for _ in range(5)]
    assert taken[:4] == ["b", "c", "d", "e"] and taken[4] == "a"  # passed over 4 times at most
    q.add("g", front=True)
    q.avoid("g", 0)  # its worker was lost: slot 0 leaves it to the other slot
    assert q.take(models.get, [], 0, 2) == "f" and q.take(models.get, [], 1, 2) == "g"


@pytest.mark.parametrize("options, words", [
    ({"executor": "slurm"}, "--executor must be one of local, ray"),
    ({"devices": ("cuda:0", "gpu1")}, "'gpu1' is not one"),
    ({"executor": "ray", "devices": ("cuda:0", "cuda:1")}, "--devices is for --executor local"),
    ({"ray_address": "10.0.0.5:6379"}, "need --executor ray"),
    ({"executor": "ray", "ray_workers": -1}, "--ray-workers must be 0"),
])
def test_executor_options_that_cannot_work_are_refused_before_anything_starts(options, words, tmp_path):
    from nfsd.errors import ConfigError
    from nfsd.server import ServerConfig

    with pytest.raises(ConfigError, match=words):
        ServerConfig(data_dir=tmp_path, **options).check()


def test_a_ray_address_where_nothing_answers_is_refused_at_once():
    from nfsd.errors import ConfigError
    from nfsd.jobs.ray_runner import check_reachable
    from server_kit import free_port

    with pytest.raises(ConfigError, match="nothing answers at the Ray address 127.0.0.1:.*ray start --head"):
        check_reachable(f"127.0.0.1:{free_port()}", timeout=2.0)
    check_reachable(None)  # a local Ray: nothing to check
