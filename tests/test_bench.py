"""The benchmark commands print what they promise (their figures are checked by people, not tests)."""

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


def test_speed_bench_prints_engine_and_baseline(capsys):
    assert bench_speed(["--arch", "tiny", "--render-size", "32", "--batch", "1,2", "--texture-size", "64",
                        "--warmup", "1", "--steps", "2", "--mesh", "cube", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 2 and "speed-up" in out and "steps/s" in out
    assert all(line.rstrip().endswith("x") for line in rows)


def test_speed_bench_with_the_tiny_encoder_names_it(capsys):
    """`--encoder tiny` times the engine with a TAESD-shaped encoder (what the GPU script measures)."""
    assert bench_speed(["--arch", "tiny", "--render-size", "32", "--batch", "1", "--texture-size", "64",
                        "--warmup", "1", "--steps", "2", "--mesh", "cube", "--device", "cpu", "--encoder", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "encoder=tiny" in out and len([line for line in out.splitlines() if line.strip()[:1].isdigit()]) == 1
