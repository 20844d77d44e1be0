"""`nfsd texture` end to end on a small mesh with a tiny model, and its one-line errors."""

import argparse
import dataclasses
import json
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import trimesh
from PIL import Image

from nfsd.cli import main
from nfsd.geometry.builtin_meshes import builtin_mesh
from nfsd.geometry.wire import write_wire_npz

BACKEND = Path(__file__).resolve().parents[1] / "backend"
CHILD_ENV = {"PYTHONPATH": str(BACKEND), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}


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
    assert views.size[1] == 256 and views.size[0] == 6 * 256  # six fixed views in a row
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
    umask = os.umask(0o022)
    os.umask(umask)
    for name in ("texture.png", "textured.glb", "views.png", "report.json", "offsets.npy"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o666 & ~umask, name  # like any file the user writes


@pytest.mark.parametrize("args, reason", [
    (["texture", "missing.obj", "solid red", "--out", "o"], "missing.obj"),
    (["texture", "{mesh}", "solid red", "--out", "o", "--model", "/nonexistent/model"], "not found"),
    (["texture", "{mesh}", "solid red", "--out", "o", "--steps", "0"], "steps=0 is out of range"),
    (["texture", "{mesh}", "solid red", "--out", "o", "--mode", "vsd"], "invalid choice: 'vsd'"),
    (["texture", "{mesh}", "", "--out", "o"], "prompt is empty"),
    (["texture", "{mesh}", "a prompt", "--out", "o"], "'a', 'prompt' are not among its words"),  # built-in prior
    # checked before the mesh or the model is touched: a typo costs no run
    (["texture", "missing.obj", "solid red", "--out", "{mesh}", "--model", "/nonexistent/model"], "is a file, not a folder"),
    (["texture", "{mesh}", "solid red", "--out", "o", "--model", "bad.safetensors"], "could not read the single-file checkpoint"),
    (["texture", "{mesh}", "solid red", "--out", "o", "--max-faces", "100"], "2,208 faces, more than the limit of 100"),
])
def test_bad_input_exits_non_zero_with_one_line(args, reason, mesh_file, tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(bytes(range(256)) * 20)  # not a checkpoint
    args = [a.replace("{mesh}", str(mesh_file)) for a in args]
    proc = subprocess.run([sys.executable, "-m", "nfsd", *args], cwd=tmp_path, capture_output=True, text=True,
                          env=CHILD_ENV, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("nfsd: error:")]
    assert len(lines) == 1 and reason in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert "internet" not in lines[0]  # no hint that does not fit the problem
    if "the limit of" in lines[0]:
        assert "--max-faces" in lines[0]  # an option that exists


def test_ctrl_c_stops_after_the_step_and_writes_what_exists(tiny_model, mesh_file, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "nfsd", "texture", str(mesh_file), "red and white stripes",
                             "--out", str(out), "--model", str(tiny_model), "--steps", "5000", "--render-size", "32",
                             "--texture-size", "64", "--device", "cpu", "--threads", "1"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=CHILD_ENV)
    seen = b""
    while not re.search(rb"\| *[1-9][0-9]*/5000", seen):  # the bar has counted a step
        chunk = proc.stderr.read1(4096)
        assert chunk, f"exited before its first step: {seen.decode(errors='replace')}"
        seen += chunk
    os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    stdout, rest = proc.communicate(timeout=120)
    stderr = (seen + rest).decode(errors="replace")
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyError" not in stderr
    lines = [line for line in re.split(r"[\r\n]", stderr)  # not the bar, nor the 64 px texture's texel-density warning
             if line.startswith("nfsd: ") and "%|" not in line and not line.startswith("nfsd: warning: ")]
    assert len(lines) == 1 and lines[0].startswith("nfsd: interrupted after") and str(out) in lines[0], stderr
    report = json.loads((out / "report.json").read_text())
    assert report["cancelled"] is True and 1 <= report["steps_done"] < 5000
    assert Image.open(out / "texture.png").size == (64, 64) and Image.open(out / "views.png").size == (6 * 256, 256)
    assert str(out / "texture.png") in stdout.decode().split()


def test_views_frame_the_mesh_not_its_loose_vertices():
    from nfsd.distill.outputs import render_result_views

    sphere = builtin_mesh("sphere")
    stray = dataclasses.replace(sphere, positions=np.concatenate([sphere.positions, [[40.0, 0.0, 0.0]]]).astype(np.float32))
    texture = np.full((16, 16, 3), 90, np.uint8)

    def coverage(mesh):
        result = SimpleNamespace(mesh=mesh, uvs=mesh.uvs, texture=texture, offsets=None)
        views = render_result_views(result, size=64, azimuths=(0.0,), elevations=15.0)
        return int((views[0] != 128).any(axis=-1).sum())  # pixels not the grey background

    assert coverage(stray) == coverage(sphere) > 1000  # one stray vertex does not shrink it to a speck


def test_help_gives_every_option_a_meaning_and_its_default(capsys):
    from nfsd.cli_args import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"nfsd {name} {action.option_strings[0]} has no help text"
    with pytest.raises(SystemExit):
        main(["texture", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "time grows linearly with them (default 400; 600 with the built-in prior)" in text and "(default: 500000)" in text


def test_left_out_options_take_the_models_defaults():
    from nfsd.cli_args import build_parser, config_from_args
    from nfsd.settings import TextureConfig

    def config(*extra):
        return config_from_args(build_parser().parse_args(["texture", "mesh.obj", "solid red", "--out", "o", *extra]))

    def picked(c):
        return c.steps, c.texture_size, c.render_size, c.batch, c.parametrization, c.lr

    assert picked(config()) == (600, 256, 128, 2, "surface", 0.04)
    sd = TextureConfig()
    assert picked(config("--model", "runwayml/stable-diffusion-v1-5")) == picked(sd) == (400, 1024, None, 1, "pyramid",
                                                                                       0.02)
    chosen = config("--steps", "7", "--texture-size", "128", "--render-size", "64", "--batch", "1", "--parametrization",
                    "pixels")
    assert picked(chosen) == (7, 128, 64, 1, "pixels", 0.04)
