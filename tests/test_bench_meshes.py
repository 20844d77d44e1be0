"""The real-mesh benchmark's meshes load as `nfsd texture` sees them, and its scoring is sane."""

import numpy as np
import pytest

from nfsd.bench.meshes import MESHES, format_table, load_bench_mesh, score
from nfsd.builtin.training.classifier import load_classifier
from nfsd.distill.config import TextureResult
from nfsd.settings import TextureConfig


@pytest.mark.parametrize("name, triangles, polygons, uv_source", [
    ("suzanne", 3936, 1968, "own"),          # quads in the file, fan-triangulated on load
    ("hardsurface", 508, 301, "own"),
    ("quadruped", 3320, 3320, "own"),
    ("quadruped_noisy", 3320, 3320, "xatlas"),  # no UVs in the file
])
def test_bench_meshes_load_with_their_uv_layouts(name, triangles, polygons, uv_source):
    bench = load_bench_mesh(name)
    assert (bench.faces, bench.polygons, bench.uv_source) == (triangles, polygons, uv_source)
    assert bench.mesh.uvs.shape == (triangles, 3, 2)
    assert 0.0 <= bench.mesh.uvs.min() and bench.mesh.uvs.max() <= 1.0
    assert len(bench.seam_edges) > 50  # several UV islands on each


def test_score_a_uniform_texture_is_seamless_and_a_dataset_texture_is_recognised():
    bench = load_bench_mesh("hardsurface")
    classifier = load_classifier()
    uniform = np.full((64, 64, 3), [40, 160, 40], np.uint8)
    result = TextureResult(texture=uniform, uvs=bench.mesh.uvs, uvs_generated=False, offsets=None,
                           mesh=bench.mesh, config=TextureConfig(prompt="solid green"))
    s = score(result, "solid green", classifier, bench.seam_edges)
    assert s["seam_mean"] < 1e-6
    assert s["prompt_accuracy"] == 1.0  # the box in plain green is "solid green" from every side
    assert score(result, "red and white stripes", classifier, bench.seam_edges)["prompt_accuracy"] == 0.0
    assert s["images"].shape == (4, 3, 64, 64)


def test_table_has_one_line_per_mesh():
    rows = [{"mesh": m, "faces": 1, "polygons": 1, "uv_source": "own", "seam_edges": 2, "prompt": "p", "seed": s,
             "prompt_accuracy": 0.5 * s, "ceiling": 1.0, "seam_mean": 0.1, "seconds": 3.0}
            for m in MESHES[:2] for s in (0, 1)]
    table = format_table(rows).splitlines()
    assert len(table) == 4 and "| suzanne | 1 (1) | own | 2 | 0.25 | 1.00 | 0.100 | 3 |" in table


def test_the_table_header_names_the_command_without_this_machines_folders():
    from nfsd.bench.meshes import reproducing_words

    argv = ["--seeds", "2", "--out", "/home/me/runs/today", "--write"]
    assert reproducing_words(argv) == ["--seeds", "2", "--out", "DIR", "--write"]
    assert reproducing_words(["--seeds", "2"]) == ["--seeds", "2"]
