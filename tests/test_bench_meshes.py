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


def table_cells(table: str) -> dict[str, list[str]]:
    """Mesh name -> the cells of its line (the two header lines skipped)."""
    lines = table.splitlines()
    assert lines[1].startswith("|---")
    return {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}


def test_table_gives_each_mesh_the_means_of_its_own_runs():
    rng = np.random.default_rng(0)
    rows = [{"mesh": m, "faces": 100 + i, "polygons": 50 + i, "uv_source": "own", "seam_edges": 7 * (i + 1),
             "prompt": p, "seed": s, "prompt_accuracy": float(rng.uniform()), "ceiling": 0.9,
             "seam_mean": float(rng.uniform(0, 0.2)), "seconds": float(rng.uniform(1, 100))}
            for i, m in enumerate(MESHES[:3]) for p in ("a", "b") for s in (0, 1)]
    cells = table_cells(format_table(rows))
    assert list(cells) == list(MESHES[:3])  # one line per mesh, in the order they ran
    for i, mesh in enumerate(MESHES[:3]):
        own = [r for r in rows if r["mesh"] == mesh]
        line = cells[mesh]
        assert line[1] == f"{100 + i} ({50 + i})" and int(line[3]) == 7 * (i + 1)
        assert float(line[4]) == pytest.approx(np.mean([r["prompt_accuracy"] for r in own]), abs=0.005)
        assert float(line[6]) == pytest.approx(np.mean([r["seam_mean"] for r in own]), abs=0.0005)
        assert float(line[7]) == pytest.approx(np.mean([r["seconds"] for r in own]), abs=0.5)
    # A run of one mesh moves that mesh's figures only.
    rows[0]["prompt_accuracy"] += 0.8
    changed = table_cells(format_table(rows))
    assert float(changed[MESHES[0]][4]) == pytest.approx(float(cells[MESHES[0]][4]) + 0.2, abs=0.01)
    assert changed[MESHES[1]] == cells[MESHES[1]] and changed[MESHES[2]] == cells[MESHES[2]]


def test_the_table_header_names_the_command_without_this_machines_folders():
    from nfsd.bench.meshes import reproducing_words

    argv = ["--seeds", "2", "--out", "/home/me/runs/today", "--write"]
    assert reproducing_words(argv) == ["--seeds", "2", "--out", "DIR", "--write"]
    assert reproducing_words(["--seeds", "2"]) == ["--seeds", "2"]
