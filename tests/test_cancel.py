"""A cancel takes effect within about one view's work, and a job's stage line ends with its stage."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from nfsd.distill import guidance
from nfsd.distill.config import Progress
from nfsd.settings import TextureConfig
from nfsd.distill.engine import TextureJob
from nfsd.errors import Cancelled
from nfsd.geometry.builtin_meshes import builtin_mesh
from nfsd.jobs.queue import JobManager, ManagerConfig

from server_kit import FAST, cube, npz

VIEW_S = 0.5  # seconds of work per view in the slow steps below


class SlowView(torch.nn.Module):
    """One view's worth of work: a layer that computes for VIEW_S s, then hands on its torch result."""

    def forward(self, x):
        time.sleep(VIEW_S)
        return x * 1


def test_a_cancel_in_the_middle_of_a_step_takes_effect_within_about_one_view(tiny_model, monkeypatch):
    views, started = SlowView(), threading.Event()
    predict = guidance.predict

    def slow_predict(prior, mode, latents, *args):  # a batch of 4 views, each VIEW_S s
        started.set()
        for _ in range(latents["z"].shape[0]):
            views(latents["z"])
        return predict(prior, mode, latents, *args)

    monkeypatch.setattr(guidance, "predict", slow_predict)
    cfg = TextureConfig(prompt="red and white stripes", model=str(tiny_model), steps=3, batch=4, render_size=32,
                        texture_size=32, device="cpu", seed=0)
    job = TextureJob(builtin_mesh("cube"), cfg)
    box = {}
    runner = threading.Thread(target=lambda: box.setdefault("result", job.run()))
    runner.start()
    assert started.wait(120)
    time.sleep(0.6 * VIEW_S)  # inside the first view of the first step (a step: 4 * VIEW_S)
    t0 = time.monotonic()
    job.cancel()
    runner.join(30)
    latency = time.monotonic() - t0
    result = box["result"]
    assert result.cancelled and result.steps_done == 0  # the step in progress was abandoned whole
    assert latency < 2 * VIEW_S, f"the cancel took {latency:.2f} s; one view is {VIEW_S} s, a step {4 * VIEW_S} s"
    # Once the run is over the cancel points are gone: torch runs again in this thread.
    assert torch.equal(views(torch.ones(1)), torch.ones(1))


def test_a_cancel_between_runs_leaves_other_jobs_modules_alone(tiny_model):
    """A finished run leaves no cancel point behind for the next one."""
    cfg = TextureConfig(prompt="red and white stripes", model=str(tiny_model), steps=2, render_size=32,
                        texture_size=32, device="cpu", seed=0)
    result = TextureJob(builtin_mesh("cube"), cfg).run()
    assert not result.cancelled and result.steps_done == 2


def test_the_stage_line_ends_with_its_stage(tmp_path):
    go, ran = threading.Event(), threading.Event()

    class FakeJob:
        def __init__(self):
            self.stop = threading.Event()

        def run(self, on_progress):
            ran.set()
            assert go.wait(30)
            on_progress(Progress("optimizing", 1, 5, 0.5, 1.0, 4.0, 0.2))
            self.stop.wait(30)
            raise Cancelled("cancelled")

        def cancel(self):
            self.stop.set()

    def make_job(mesh_npz, settings, init_png, config, on_stage, cancelled):
        on_stage("unwrapping 320 faces", 0.0)  # as nfsd.geometry.unwrap does while xatlas runs
        time.sleep(0.3)
        return FakeJob()

    manager = JobManager(ManagerConfig(data_dir=tmp_path, status_interval=0.05), make_job=make_job)
    manager.start()
    try:
        job_id = manager.submit(npz(**cube()), dict(FAST)).id
        assert ran.wait(30)
        rec = manager.get(job_id)
        assert rec.stage is None, rec.stage  # the unwrap is over: its line must not outlive it
        go.set()
        deadline = time.monotonic() + 10
        while manager.get(job_id).step < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert manager.get(job_id).stage == "optimizing"  # docs/API.md: what an active job does now
        manager.cancel(job_id)
    finally:
        manager.stop()


def test_abort_skips_the_finishing_that_nobody_wants_but_keeps_a_finished_run(tiny_model, monkeypatch):
    """A server's cancel (``abort``): no dilation of a texture nobody will see; after the last step the
    result stands (a cancel that arrives late keeps it)."""
    cfg = TextureConfig(prompt="red and white stripes", model=str(tiny_model), steps=3, render_size=32,
                        texture_size=32, device="cpu", seed=0, progress_every=1)
    job = TextureJob(builtin_mesh("cube"), cfg)
    monkeypatch.setattr("nfsd.distill.engine.finish", lambda *a: pytest.fail("an aborted run finished its result"))
    with pytest.raises(Cancelled, match="after 1 of 3 steps"):
        job.run(lambda p: job.abort() if p.phase == "optimizing" and p.step == 1 else None)
    monkeypatch.undo()
    late = TextureJob(builtin_mesh("cube"), cfg)
    result = late.run(lambda p: late.abort() if p.phase == "optimizing" and p.step == 3 else None)
    assert result.steps_done == 3 and not result.cancelled
