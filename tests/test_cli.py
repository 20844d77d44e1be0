"""`nfsd texture` end to end on a small mesh with a tiny model, and its one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from nfsd.cli import main
from nfsd.mesh import builtin_mesh, write_wire_npz

BACKEND = Path(__file__).resolve().parents[1] / "backend"


@pytest.fixture(scope="module")
def mesh_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mesh") / "sphere.npz"
    write_wire_npz(builtin_mesh("sphere"), path)
    return path


def test_texture_writes_every_output(tiny_model, mesh_file, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["texture", str(mesh_file), "red and white stripes", "--out", str(out), "--model", str(tiny_model),
                 "--steps", "4", "--render-size", "64", "--texture-size", "64", "--batch", "1", "--offsets",
                 "--device", "cpu"])
    assert code == 0
    assert Image.open(out / "texture.png").size == (64, 64)
    views = Image.open(out / "views.png")
    assert views.size[1] == 256 and views.size[0] == 5 * 256  # five fixed views in a row
    report = json.loads((out / "report.json").read_text())
    assert report["steps_done"] == 4 and len(report["losses"]) == 4 and len(set(report["losses"])) > 1
    assert report["settings"]["prompt"] == "red and white stripes" and report["settings"]["offsets"] is True
    offsets = np.load(out / "offsets.npy")
    assert offsets.shape == (builtin_mesh("sphere").num_vertices, 3)
    glb = trimesh.load(out / "textured.glb", force="mesh")
    assert len(glb.faces) == builtin_mesh("sphere").num_faces
    texture = np.asarray(Image.open(out / "texture.png").convert("RGB"))
    assert texture.std() > 0.5  # not the flat grey it started from
    printed = capsys.readouterr().out.split()
    assert str(out / "texture.png") in printed


@pytest.mark.parametrize("args, reason", [
    (["texture", "missing.obj", "a prompt", "--out", "o"], "missing.obj"),
    (["texture", "{mesh}", "a prompt", "--out", "o", "--model", "/nonexistent/model"], "not found"),
    (["texture", "{mesh}", "a prompt", "--out", "o", "--steps", "0"], "steps=0 is out of range"),
    (["texture", "{mesh}", "a prompt", "--out", "o", "--mode", "vsd"], "invalid choice: 'vsd'"),
    (["texture", "{mesh}", "", "--out", "o"], "prompt is empty"),
])
def test_bad_input_exits_non_zero_with_one_line(args, reason, mesh_file, tmp_path):
    args = [a.replace("{mesh}", str(mesh_file)) for a in args]
    proc = subprocess.run([sys.executable, "-m", "nfsd", *args], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(BACKEND), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("nfsd: error:")]
    assert len(lines) == 1 and reason in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
