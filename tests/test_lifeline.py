"""No child of the backend outlives it: ``kill -9`` of ``nfsd serve`` takes its worker process, its
file checker, an unwrap in progress and multiprocessing's resource tracker with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx

import procs
from server_kit import BACKEND, FAST, free_port, icosphere_npz, wait_until_serving


def test_kill_9_of_nfsd_serve_leaves_no_process_behind(tiny_model, tmp_path):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(BACKEND), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "nfsd", "serve", "--port", str(port), "--data-dir", str(tmp_path),
                             "--model", str(tiny_model), "--device", "cpu", "--threads", "1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        c = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        wait_until_serving(c, proc, 90, "nfsd serve")
        files = {"mesh": ("mesh.npz", icosphere_npz(6), "application/octet-stream")}  # 81,920 faces, no UVs
        r = c.post("/jobs", files=files, data={"settings": json.dumps(FAST)})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        deadline = time.monotonic() + 90
        while not (c.get(f"/jobs/{job_id}").json()["stage"] or "").startswith("unwrapping"):
            assert time.monotonic() < deadline, "the job never started unwrapping"
            time.sleep(0.02)
        # the worker and the file checker (multiprocessing children), the unwrap (the worker's child)
        # and multiprocessing's resource tracker
        while True:
            children = procs.descendants(proc.pid)
            lines = [procs.cmdline(p) for p in children]
            if any("nfsd.geometry.unwrap" in line for line in lines) and \
                    sum("spawn_main" in line for line in lines) >= 2 and any("resource_tracker" in line for line in lines):
                break
            assert time.monotonic() < deadline, lines
            time.sleep(0.01)
        proc.kill()  # SIGKILL: nothing of the server runs after this
        proc.wait(10)
        left = procs.wait_gone(children, 10.0)
        assert not left, f"outlived nfsd serve by 10 s: {procs.describe(left)}"
    finally:  # conftest's session check reports (and ends) anything left behind
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_child_process_exits_when_its_parent_is_killed(tmp_path):
    """The mechanism alone, both halves: prctl's signal and the portable thread that polls getppid."""
    script = tmp_path / "parent.py"
    script.write_text(f"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", '''
import sys, time
sys.path.insert(0, {str(BACKEND)!r})
from nfsd.processes import lifeline
if sys.argv[1] == "portable":
    lifeline.parent_death_signal = lambda signum: False  # as on macOS
lifeline.die_with_parent()
print("armed", flush=True)
time.sleep(60)
''', sys.argv[1]], stdout=subprocess.PIPE)
assert child.stdout.readline().strip() == b"armed"
print(child.pid, flush=True)
time.sleep(60)
""")
    for how in ("prctl", "portable"):
        parent = subprocess.Popen([sys.executable, str(script), how], stdout=subprocess.PIPE)
        try:
            child = int(parent.stdout.readline())
            assert procs.alive(child)
            parent.kill()
            parent.wait(10)
            assert not procs.wait_gone({child}, 5.0), f"{how}: the child outlived its parent"
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait(10)
