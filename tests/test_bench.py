"""The figures of the benchmarks are consistent with what they measure: renders of one scene agree with
themselves and not with another texture; the columns of the speed table follow from its timings."""

import pytest
import torch

from nfsd.bench.renderer import bench_scene, compare, meets_targets, render_with_grads
from nfsd.bench.speed import main as bench_speed
from nfsd.render.torch_rasterizer import TorchRasterizer


def test_renderer_agreement_figures():
    scene = bench_scene("sphere", "cpu", 64)
    weights = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ref = render_with_grads(TorchRasterizer(), scene, 32, "linear", weights)
    same = compare(ref, render_with_grads(TorchRasterizer(), scene, 32, "linear", weights))
    assert same["coverage_mismatch_px"] == 0 and same["interior_max_diff"] == 0.0
    assert same["position_grad_cosine"] > 0.9999 and same["texture_grad_cosine"] > 0.9999
    assert meets_targets(same)
    positions, triangles, uvs, texture = scene
    other = compare(ref, render_with_grads(TorchRasterizer(), (positions, triangles, uvs, 1 - texture), 32, "linear", weights))
    assert other["interior_max_diff"] > 1e-3 and other["interior_px_over_1e-3"] > 0
    assert not meets_targets(other)


def speed_rows(out: str) -> list[dict]:
    """The speed table's rows: batch, tex | median min max (ms) | steps/s | peak GB | job est s | naive ms | speed-up."""
    rows = []
    for line in out.splitlines():
        if not line.strip()[:1].isdigit():
            continue
        cells = [c.split() for c in line.rstrip().rstrip("x").split("|")]
        (batch, tex), (median, low, high), (rate,), (_peak,), (job,), (naive,), (speedup,) = cells
        rows.append(dict(batch=int(batch), tex=int(tex), median=float(median), min=float(low), max=float(high),
                         rate=float(rate), job=float(job), naive=float(naive), speedup=float(speedup)))
    return rows


def test_speed_bench_figures_follow_from_its_timings(capsys):
    assert bench_speed(["--arch", "tiny", "--render-size", "32", "--batch", "1,2", "--texture-size", "64",
                        "--warmup", "1", "--steps", "2", "--mesh", "cube", "--device", "cpu", "--job-steps", "400"]) == 0
    rows = speed_rows(capsys.readouterr().out)
    assert [(r["batch"], r["tex"]) for r in rows] == [(1, 64), (2, 64)]
    for r in rows:
        assert 0 < r["min"] <= r["median"] <= r["max"], r
        assert r["rate"] == pytest.approx(1000 / r["median"], rel=0.02, abs=0.01), r  # steps/s = 1 / median step
        assert r["job"] == pytest.approx(r["median"] * 400 / 1000, rel=0.02, abs=0.1), r
        # (No bound on the speed-up itself: on a shared CPU either side can stall for seconds.)
        assert r["naive"] > 0 and r["speedup"] == pytest.approx(r["naive"] / r["median"], rel=0.02, abs=0.01), r


def test_time_engine_gives_one_positive_time_per_measured_step(tiny_model):
    from nfsd.bench.speed import time_engine
    from nfsd.settings import TextureConfig
    from nfsd.geometry.builtin_meshes import builtin_mesh

    cfg = TextureConfig(prompt="red and white stripes", model=str(tiny_model), render_size=32, texture_size=32,
                        device="cpu", offsets=False)
    times = time_engine(builtin_mesh("cube"), None, cfg, warmup=1, steps=3)
    assert len(times) == 3 and all(0 < t < 60 for t in times)


def test_speed_bench_with_the_tiny_encoder_names_it(capsys):
    """`--encoder tiny` times the engine with a TAESD-shaped encoder (what the GPU script measures)."""
    assert bench_speed(["--arch", "tiny", "--render-size", "32", "--batch", "1", "--texture-size", "64",
                        "--warmup", "1", "--steps", "2", "--mesh", "cube", "--device", "cpu", "--encoder", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "encoder=tiny" in out
    (row,) = speed_rows(out)
    assert 0 < row["min"] <= row["median"] <= row["max"] and row["rate"] > 0
