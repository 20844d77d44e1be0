"""`nfsd batch MANIFEST`: rows checked up front, bad rows reported without stopping the good ones, resumable
folders, CSV and JSON alike, and the same rows run on a real server (tests/server_kit.py) over HTTP."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from server_kit import LiveServer, config, wait_for

from nfsd.batch.command import run_batch
from nfsd.batch.local import check_local_mesh, check_local_settings
from nfsd.batch.manifest import read_manifest
from nfsd.batch.plan import MARKER, plan_rows
from nfsd.cli import main
from nfsd.geometry.builtin_meshes import builtin_mesh
from nfsd.geometry.wire import write_wire_npz

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The built-in prior at a handful of steps on tiny sizes: a row takes about a second.
TINY = "steps,texture_size,render_size,batch"
TINY_VALUES = "3,64,32,1"
TINY_JSON = {"steps": 3, "texture_size": 64, "render_size": 32, "batch": 1}


@pytest.fixture
def folder(tmp_path) -> Path:
    """A manifest folder holding meshes/cube.npz."""
    (tmp_path / "meshes").mkdir()
    write_wire_npz(builtin_mesh("cube"), tmp_path / "meshes" / "cube.npz")
    return tmp_path


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_bad_rows_are_reported_up_front_and_the_good_rows_still_finish(folder, capsys):
    (folder / "shoot.csv").write_text(
        f"mesh,prompt,{TINY},seed,name\n"
        f"meshes/cube.npz,solid red,{TINY_VALUES},1,red\n"
        f"meshes/missing.obj,solid red,{TINY_VALUES},1,\n"
        f"meshes/cube.npz,solid blue,{TINY_VALUES},many,\n"
        f"meshes/cube.npz,solid blue,3,17,32,1,1,\n"
        f"meshes/cube.npz,red and white stripes,{TINY_VALUES},2,\n")
    out = folder / "out"
    code = main(["batch", str(folder / "shoot.csv"), "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    before_bar = err.split("batch:")[0]  # every bad row is named before anything runs
    for where in ("row 2 (line 3)", "row 3 (line 4)", "row 4 (line 5)"):
        assert where in before_bar, err
    rows = summary_of(out)["rows"]
    assert [r["state"] for r in rows] == ["done", "failed", "failed", "failed", "done"]
    assert "missing.obj: file not found" in rows[1]["error"]
    assert "seed must be an integer, got 'many'" in rows[2]["error"]
    assert "texture_size must be a multiple of 16" in rows[3]["error"]
    assert summary_of(out)["ok"] is False and summary_of(out)["counts"] == {"done": 2, "failed": 3}
    for name in ("red", "005-cube"):
        assert Image.open(out / name / "texture.png").size == (64, 64)
        marker = json.loads((out / name / MARKER).read_text())
        report = json.loads((out / name / "report.json").read_text())
        assert marker["settings"] == report["settings"] and report["steps_done"] == 3
    assert sorted(p.name for p in out.iterdir()) == ["005-cube", "red", "summary.json"]


def test_a_half_done_batch_resumes_skipping_done_rows_and_rerunning_changed_ones(folder, capsys):
    rows = [{"mesh": "meshes/cube.npz", "prompt": "solid red", "name": "a"},
            {"mesh": "meshes/cube.npz", "prompt": "solid green", "name": "b"},
            {"mesh": "meshes/cube.npz", "prompt": "solid blue", "name": "c"}]
    manifest = folder / "shoot.json"
    manifest.write_text(json.dumps({"defaults": TINY_JSON, "rows": rows}))
    out = folder / "out"
    assert run_batch(manifest, out) == 0
    stamp = {n: (out / n / "texture.png").stat().st_mtime_ns for n in "abc"}
    (out / "b" / MARKER).unlink()            # b was cut short: no finished marker
    rows[2]["seed"] = 7                      # c changed
    manifest.write_text(json.dumps({"defaults": TINY_JSON, "rows": rows}))
    capsys.readouterr()
    assert run_batch(manifest, out) == 0
    assert "1 done before (skipped)" in capsys.readouterr().err
    assert [r["state"] for r in summary_of(out)["rows"]] == ["skipped", "done", "done"]
    assert (out / "a" / "texture.png").stat().st_mtime_ns == stamp["a"]
    assert (out / "b" / "texture.png").stat().st_mtime_ns != stamp["b"]
    assert json.loads((out / "c" / "report.json").read_text())["settings"]["seed"] == 7
    assert json.loads((out / "c" / MARKER).read_text())["settings"]["seed"] == 7


def test_csv_and_json_manifests_resolve_to_the_same_settings(folder):
    (folder / "a.csv").write_text(
        "mesh,prompt,steps,seed,texture_size,material,offsets,guidance_scale,loras,name\n"
        "meshes/cube.npz,solid red,12,3,128,pbr,yes,5.5,,one\n"
        'meshes/cube.npz,"blue dots on yellow",,4,,,false,,,\n')
    (folder / "a.json").write_text(json.dumps({"defaults": {"seed": 4}, "rows": [
        {"mesh": "meshes/cube.npz", "prompt": "solid red", "steps": 12, "seed": 3, "texture_size": 128,
         "material": "pbr", "offsets": True, "guidance_scale": 5.5, "name": "one"},
        {"mesh": "meshes/cube.npz", "prompt": "blue dots on yellow", "offsets": False}]}))
    planned = {}
    for name in ("a.csv", "a.json"):
        planned[name] = plan_rows(read_manifest(folder / name), folder, folder / "out", check_local_settings,
                                  check_local_mesh)
    csv_rows, json_rows = planned["a.csv"], planned["a.json"]
    assert [r.state for r in csv_rows] == ["todo", "todo"]
    assert [r.settings for r in csv_rows] == [r.settings for r in json_rows]
    assert [r.fingerprint() for r in csv_rows] == [r.fingerprint() for r in json_rows]
    assert [r.folder for r in csv_rows] == ["one", "002-cube"]
    first, second = csv_rows[0].settings, csv_rows[1].settings
    assert (first["material"], first["offsets"], first["guidance_scale"], first["steps"]) == ("pbr", True, 5.5, 12)
    assert (second["steps"], second["texture_size"], second["seed"]) == (600, 256, 4)  # the built-in prior's


@pytest.mark.parametrize("text, reason", [
    ('{"rows": [{"mesh": "m.npz", "prompt": "solid red", "stepz": 3}]}', "unknown setting(s): stepz"),
    ('[{"mesh": "m.npz", "prompt": "solid red", "steps": 20000}]', "steps=20000 is out of range"),
    ('[{"mesh": "m.npz", "prompt": "solid red", "t_min": 0.1}]', "unknown setting(s): t_min"),  # not nfsd texture's
    ('[{"prompt": "solid red"}]', "no mesh"),
    ('["m.npz"]', "a row must be an object"),
    ('[{"mesh": "m.npz", "prompt": "solid red", "name": "../up"}]', "cannot be a folder name"),
])
def test_a_bad_json_row_says_why(tmp_path, text, reason):
    write_wire_npz(builtin_mesh("cube"), tmp_path / "m.npz")
    (tmp_path / "b.json").write_text(text)
    rows = plan_rows(read_manifest(tmp_path / "b.json"), tmp_path, tmp_path / "out", check_local_settings,
                     check_local_mesh)
    assert rows[0].state == "failed" and reason in rows[0].error, rows[0].error


@pytest.mark.parametrize("name, text, reason", [
    ("m.csv", "prompt,steps\nsolid red,3\n", "must name a 'mesh' column"),
    ("m.json", '{"defaults": {}, "rowz": []}', "'defaults' (an object) and 'rows'"),
    ("m.json", "[", "not valid JSON"),
    ("m.json", "[]", "no rows"),
    ("m.txt", "", "expected a .csv or .json file"),
    ("gone.csv", None, "file not found"),
])
def test_a_manifest_that_cannot_be_read_exits_2_with_one_line(tmp_path, capsys, name, text, reason):
    if text is not None:
        (tmp_path / name).write_text(text)
    assert main(["batch", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nfsd: error: manifest") and reason in err[0], err


# ---------------------------------------------------------------------------------------------
# through a server

FAST = {"steps": 5, "render_size": 32, "texture_size": 64}


def test_server_mode_runs_every_row_within_the_queue_limit_and_writes_their_folders(tiny_model, tmp_path,
                                                                                       folder, capsys):
    rows = [{"mesh": "meshes/cube.npz", "prompt": p, "seed": i} for i, p in
            enumerate(["red and white stripes", "blue dots on yellow", "solid green"])]
    rows.append({"mesh": "meshes/cube.npz", "prompt": "solid green", "steps": 0})  # the server's resolver refuses
    manifest = folder / "shoot.json"
    manifest.write_text(json.dumps({"defaults": FAST, "rows": rows}))
    out = folder / "out"
    # a queue of one: the third submission gets 429 until the first finishes, and is sent again
    with LiveServer(config(str(tiny_model), tmp_path / "data", max_queue=1)) as live:
        code = run_batch(manifest, out, server=live.url, jobs=3)
        assert code == 1
        assert "the server is busy" in capsys.readouterr().err  # the 429 was waited out
        summary = summary_of(out)
        assert [r["state"] for r in summary["rows"]] == ["done", "done", "done", "failed"]
        assert "steps" in summary["rows"][3]["error"] and summary["server"] == live.url
        jobs = live.client.get("/jobs").json()["jobs"]
        assert len(jobs) == 3 and {j["state"] for j in jobs} == {"done"}
        for i, row in enumerate(summary["rows"][:3]):
            folder_ = Path(row["out"])
            assert folder_.name == f"{i + 1:03d}-cube"
            with np.load(folder_ / "result.npz", allow_pickle=False) as z:
                texture = z["texture"]
            assert texture.shape == (64, 64, 4)
            png = np.asarray(Image.open(folder_ / "texture.png").convert("RGB"))[::-1]  # PNG: top row first
            np.testing.assert_array_equal(png, texture[..., :3])
            report = json.loads((folder_ / "report.json").read_text())
            assert report["settings"]["seed"] == i and report["batch"]["server"] == live.url
            marker = json.loads((folder_ / MARKER).read_text())["settings"]
            assert marker == row["settings"] and marker.items() <= report["settings"].items()
            assert (folder_ / "textured.glb").stat().st_size > 0 and (folder_ / "views.png").exists()
        capsys.readouterr()
        assert run_batch(manifest, out, server=live.url) == 1  # again: the done rows are skipped, nothing sent
        assert "3 done before (skipped), 1 bad" in capsys.readouterr().err
        assert len(live.client.get("/jobs").json()["jobs"]) == 3


def test_a_server_that_goes_away_fails_the_rows_left_and_keeps_the_done_ones(tiny_model, tmp_path, folder):
    rows = [{"mesh": "meshes/cube.npz", "prompt": "solid green", "seed": 0, "name": "first"},
            {"mesh": "meshes/cube.npz", "prompt": "solid green", "seed": 1, "steps": 5000, "name": "long"},
            {"mesh": "meshes/cube.npz", "prompt": "solid green", "seed": 2, "name": "never"}]
    manifest = folder / "shoot.json"
    manifest.write_text(json.dumps({"defaults": FAST, "rows": rows}))
    out = folder / "out"
    codes = []
    with LiveServer(config(str(tiny_model), tmp_path / "data")) as live:
        batch = threading.Thread(target=lambda: codes.append(
            run_batch(manifest, out, server=live.url, jobs=1, patience=1.0)))
        batch.start()
        deadline = time.monotonic() + 120
        while not (out / "first" / MARKER).exists():
            assert time.monotonic() < deadline and batch.is_alive(), "the first row did not finish"
            time.sleep(0.1)
    batch.join(60)
    assert codes == [1]
    states = {r["folder"]: (r["state"], r["error"]) for r in summary_of(out)["rows"]}
    assert states["first"] == ("done", None)
    assert states["long"][0] in ("failed", "not run") and "stopped answering" in states["long"][1]
    assert states["never"][0] == "not run" and "stopped answering" in states["never"][1]


class InterruptingBar:
    """A stand-in for the batch's tqdm bar whose first counted step acts as Ctrl-C (``interrupt()``), or its
    first description naming ``text``."""

    def __init__(self, interrupt, text=None):
        self.interrupt, self.text, self.total, self.n, self.fp = interrupt, text, 0, 0, None

    def update(self, n):
        self.n += n
        if n:
            self.interrupt()

    def set_description(self, text):
        if self.text and self.text in text:
            self.interrupt()

    def refresh(self):
        pass

    def write(self, text, file=None):
        pass


def test_ctrl_c_in_process_keeps_what_the_row_made_without_a_marker_and_runs_no_more_rows(folder):
    import os
    import signal

    from nfsd.batch.local import run_local

    manifest = folder / "shoot.json"
    manifest.write_text(json.dumps({"defaults": dict(TINY_JSON, steps=50), "rows": [
        {"mesh": "meshes/cube.npz", "prompt": "solid red", "name": "a"},
        {"mesh": "meshes/cube.npz", "prompt": "solid blue", "name": "b"}]}))
    out = folder / "out"
    rows = plan_rows(read_manifest(manifest), folder, out, check_local_settings, check_local_mesh)
    assert run_local(rows, out, InterruptingBar(lambda: os.kill(os.getpid(), signal.SIGINT))) is True
    assert [r.state for r in rows] == ["cancelled", "not run"]
    assert "interrupted after" in rows[0].error and "Ctrl-C" in rows[1].error
    report = json.loads((out / "a" / "report.json").read_text())
    assert report["cancelled"] is True and 1 <= report["steps_done"] < 50
    assert not (out / "a" / MARKER).exists() and not (out / "b").exists()  # a runs again next time


def test_server_mode_needs_the_token_and_ctrl_c_cancels_the_submitted_jobs(tiny_model, tmp_path, folder, capsys):
    from nfsd.batch.remote import Server, run_remote

    manifest = folder / "shoot.json"
    manifest.write_text(json.dumps({"defaults": dict(FAST, steps=5000), "rows": [
        {"mesh": "meshes/cube.npz", "prompt": "solid green", "seed": i} for i in range(3)]}))
    out = folder / "out"
    with LiveServer(config(str(tiny_model), tmp_path / "data", token="s3cret")) as live:
        assert main(["batch", str(manifest), "--server", live.url]) == 2
        assert "needs a token: pass --token" in capsys.readouterr().err
        server = Server(live.url, "s3cret")
        rows = plan_rows(read_manifest(manifest), folder, out, server.resolve, check_local_mesh)

        def interrupt():
            raise KeyboardInterrupt

        bar = InterruptingBar(interrupt, text="2 on the server")  # both submitted, neither finished
        assert run_remote(rows, out, bar, server, jobs=2, poll=0.05) is True
        server.close()
        assert [r.state for r in rows] == ["cancelled", "cancelled", "not run"]
        assert "was cancelled on the server" in rows[0].error
        jobs = live.client.get("/jobs").json()["jobs"]
        assert len(jobs) == 2
        for job in jobs:
            assert wait_for(live.client, job["id"])["state"] == "cancelled"


def test_the_readme_example_manifest_plans_without_a_bad_row(tmp_path):
    root = Path(__file__).resolve().parents[1]
    section = (root / "README.md").read_text().split("### Batch texturing")[1]
    example = section.split("```csv\n")[1].split("```")[0]
    (tmp_path / "shoot.csv").write_text(example)
    rows = plan_rows(read_manifest(tmp_path / "shoot.csv"), root, tmp_path / "out", check_local_settings,
                     check_local_mesh)
    assert len(rows) == 4 and [r.state for r in rows] == ["todo"] * 4, [r.error for r in rows]
    assert [r.folder for r in rows][2:] == ["003-hardsurface", "004-quadruped"]
    assert rows[1].settings["texture_size"] == 256 and rows[2].settings["texture_size"] == 512


def test_a_result_npz_becomes_the_base_colour_the_maps_and_per_tile_files(tmp_path):
    import io

    from nfsd.batch.remote_files import write_result_files

    mesh = builtin_mesh("cube")
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (32, 32, 4), np.uint8)
    maps = {"roughness": rng.integers(0, 256, (32, 32), np.uint8), "metallic": rng.integers(0, 256, (32, 32), np.uint8)}
    buf = io.BytesIO()
    np.savez(buf, texture=texture, uvs=mesh.uvs, uvs_generated=np.array(False), meta=np.array('{"steps_done": 3}'),
             **maps)
    files = write_result_files(buf.getvalue(), mesh, tmp_path / "pbr", {"server": "s", "job_id": "j"})
    assert set(files) == {"result.npz", "texture.png", "roughness.png", "metallic.png", "textured.glb", "views.png",
                          "report.json"}
    png = np.asarray(Image.open(tmp_path / "pbr" / "texture.png").convert("RGB"))[::-1]  # row 0 bottom again
    np.testing.assert_array_equal(png, texture[..., :3])
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "pbr" / "roughness.png"))[::-1], maps["roughness"])
    assert json.loads((tmp_path / "pbr" / "report.json").read_text()) == {"steps_done": 3,
                                                                         "batch": {"server": "s", "job_id": "j"}}
    buf = io.BytesIO()
    np.savez(buf, texture=np.stack([texture, texture[::-1]]), tiles=np.array([1001, 1002], np.int32), uvs=mesh.uvs,
             uvs_generated=np.array(False), offsets=np.zeros((mesh.num_vertices, 3), np.float32))
    files = write_result_files(buf.getvalue(), mesh, tmp_path / "udim", {})
    assert set(files) == {"result.npz", "texture.1001.png", "texture.1002.png", "offsets.npy", "report.json"}
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "udim" / "texture.1002.png").convert("RGB")),
                                  texture[..., :3])  # the second tile was stored upside down
