# SPDX-License-Identifier: GPL-3.0-or-later
"""The add-on against the real backend (`nfsd serve` with a tiny random model) on 127.0.0.1.

The backend runs in its own process, started by the add-on's "start local backend" code with
this test environment's Python, so Blender's Python never imports torch.
"""

import os
import shlex
import socket
import subprocess
import sys
import time

import bpy
import pytest

from conftest import ROOT, add_mesh

BACKEND = os.path.join(ROOT, "backend")
pytestmark = pytest.mark.skipif(
    not all(os.path.exists(os.path.join(BACKEND, "nfsd", name)) for name in (os.path.join("priors", "tiny.py"), "cli.py"))
    or not any(os.path.exists(os.path.join(BACKEND, "nfsd", name)) for name in ("server.py", "server")),
    reason="the backend server is not in this checkout")


TOKEN = "s3cret"


@pytest.fixture(scope="module")
def backend_url(addon, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real_backend")
    model = str(tmp / "tiny-model")
    env_before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = BACKEND + (os.pathsep + env_before if env_before else "")
    try:
        subprocess.run([sys.executable, "-c", "import sys; from nfsd.priors.tiny import build_tiny_model; "
                        "build_tiny_model(sys.argv[1])", model], check=True, timeout=300)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        url = f"127.0.0.1:{port}/"  # the way an artist might type it
        command = shlex.join([sys.executable, "-m", "nfsd.cli", "serve", "--data-dir", str(tmp / "data"),
                              "--model", model, "--token", TOKEN])
        addon.local_backend.start(command, url)
        addon.local_backend.wait_until_up(url, timeout=180)
        yield url
    finally:
        addon.local_backend.stop()
        if env_before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = env_before


@pytest.fixture
def connection(addon, backend_url):
    return addon.jobs.Connection(url=backend_url, token=TOKEN, poll_interval=0.1, preview_interval=0.5)


def test_the_backend_line_names_the_model(addon, connection):
    ok, text = addon.backend_status.check_backend(connection)
    assert ok and text.startswith("Connected") and "tiny-model" in text
    # The model picker: the backend's list when it has GET /models, else its default by name.
    labels = [item[1] for item in addon.presets.model_items()]
    assert labels[0] == "Backend default (tiny-model)"


def test_the_model_picker_reads_the_real_get_models(addon, scene, connection):
    addon.backend_status.check_backend(connection)
    served = connection.client().models()
    tiny = served["default_model"]
    assert [item[0] for item in addon.presets.model_items()] == ["__default__"] + [
        entry["name"] for entry in served["models"] if entry["kind"] != "lora"]
    nfsd = scene.nfsd
    nfsd.model_choice = "builtin"  # Custom keeps steps and texture, takes the model's render size
    assert nfsd.model == "builtin" and nfsd.render_size == "128" and nfsd.steps == 3
    nfsd.model_choice = "__default__"  # the backend's default can be chosen again
    assert nfsd.model == "" and nfsd.model_choice == "__default__"
    defaults = next(entry for entry in served["models"] if entry["name"] == tiny)["defaults"]
    nfsd.preset = "BALANCED"  # the default model's defaults, as the server says them
    assert (nfsd.steps, nfsd.texture_size) == (defaults["steps"], str(defaults["texture_size"]))
    nfsd.model_choice = "builtin"
    assert (nfsd.steps, nfsd.render_size, nfsd.texture_size) == (600, "128", "256")
    nfsd.model_choice = tiny  # by name: the same model as the default, its defaults again
    assert nfsd.model == tiny and nfsd.preset == "BALANCED" and nfsd.steps == defaults["steps"]
    # The tiny model renders at 16 px; the panel's smallest render size stands in for it.
    properties = addon.properties
    assert nfsd.render_size == str(addon.presets.snap(defaults["render_size"], addon.presets.RENDER_SIZES))
    answer = connection.client().resolve_settings(properties.settings_dict(nfsd))  # the real server takes them
    assert answer["settings"]["steps"] == defaults["steps"] and answer["render_size"] == int(nfsd.render_size)


def test_the_estimate_is_unknown_before_a_job_of_its_kind_and_measured_after(addon, scene, prefs, connection,
                                                                            monkeypatch):
    from test_estimate import summary

    monkeypatch.setattr(addon.estimate, "DEBOUNCE_SECONDS", 0.0)
    prefs.backend_url, prefs.token = connection.url, TOKEN
    scene.nfsd.texture_size = "128"  # a kind of job no other test here runs
    summary(addon)
    addon.estimate.wait()
    assert summary(addon) == [("label", "3 steps · 64 px render · 128 px texture · 1 view/step", "NONE"),
                              ("label", "Time unknown until a job of this kind has run", "TIME")]
    job = addon.jobs.wait(addon.jobs.start_job(add_mesh("cube"), addon.properties.settings_dict(scene.nfsd),
                                               connection), timeout=240)
    assert job.state == "done", job.error
    summary(addon)
    addon.estimate.wait()
    line = summary(addon)[1]
    assert line[0] == "label" and line[1].startswith("Time: about ") and line[2] == "TIME", line
    prefs.token = ""


def test_a_wrong_token_fails_test_connection(addon, backend_url):
    for token in ("wrong", ""):
        ok, text = addon.backend_status.check_backend(addon.jobs.Connection(url=backend_url, token=token))
        assert ok is False and text.startswith("Wrong token"), text


def test_two_materials_survive_a_real_run_save_and_reload(addon, scene, connection, tmp_path):
    from test_scene_safety import FACES, face_materials, slot_names, two_material_cube

    obj = two_material_cube()
    job = addon.jobs.wait(addon.jobs.start_job(obj, addon.properties.settings_dict(scene.nfsd), connection),
                          timeout=240)
    assert job.state == "done", job.error
    path = str(tmp_path / "real.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    bpy.ops.wm.open_mainfile(filepath=path)
    obj = bpy.data.objects["Crate"]
    addon.results.restore_original(obj)
    assert slot_names(obj) == ["Wood", "Metal"] and face_materials(obj) == FACES


def test_a_rename_mid_run_gets_the_result(addon, scene, connection):
    obj = add_mesh("cube", name="Before")
    job = addon.jobs.start_job(obj, addon.properties.settings_dict(scene.nfsd), connection)
    obj.name = "After"
    addon.jobs.wait(job, timeout=240)
    assert job.state == "done", job.error
    assert len(bpy.data.objects["After"].nfsd_runs) == 1


def test_a_save_mid_run_reopens_clean_and_reattaches_to_the_running_job(addon, scene, connection, tmp_path):
    from test_scene_safety import nfsd_leftovers, slot_names

    scene.nfsd.steps = 5000
    obj = add_mesh("cube", name="Saved")
    obj.data.materials.append(bpy.data.materials.new("Paint"))
    job = addon.jobs.start_job(obj, addon.properties.settings_dict(scene.nfsd), connection)
    deadline = time.monotonic() + 120
    while not (job.previews and slot_names(obj)[0].startswith("NFSD")) and job.active \
            and time.monotonic() < deadline:
        addon.jobs.process_events()
        time.sleep(0.05)
    assert job.state == "running", job.error
    path = str(tmp_path / "mid.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    bpy.ops.wm.open_mainfile(filepath=path)
    obj = bpy.data.objects["Saved"]
    assert slot_names(obj) == ["Paint"] and nfsd_leftovers() == ([], [])
    again = addon.jobs.reattach(obj, connection)
    deadline = time.monotonic() + 60
    while not (again.state == "running" and again.step > 0) and again.active and time.monotonic() < deadline:
        addon.jobs.process_events()
        time.sleep(0.05)
    assert again.state == "running" and again.job_id == job.job_id, again.error
    addon.jobs.cancel(obj)
    addon.jobs.wait(again, timeout=60)
    assert again.state == "cancelled" and slot_names(obj) == ["Paint"] and nfsd_leftovers() == ([], [])


def test_texture_a_cube_with_offsets(addon, scene, connection):
    scene.nfsd.offsets = True
    obj = add_mesh("cube")
    job = addon.jobs.wait(addon.jobs.start_job(obj, addon.properties.settings_dict(scene.nfsd), connection),
                          timeout=240)
    assert job.state == "done", job.error
    run = obj.nfsd_runs[0]
    assert tuple(run.image.size) == (64, 64) and run.image.packed_file is not None
    assert run.material.name == "NFSD: a weathered bronze statue"
    assert obj.material_slots[0].material == run.material
    texture = run.material.node_tree.nodes["NFSD Texture"]
    assert texture.image == run.image
    assert texture.outputs["Color"].links[0].to_socket.name == "Base Color"
    assert texture.inputs["Vector"].links[0].from_node.uv_map == "UVMap" == run.uv_map
    key = obj.data.shape_keys.key_blocks["NFSD offsets"]
    assert key.value == 1.0 and len(key.data) == len(obj.data.vertices) == 8


def test_a_mesh_without_uvs_gets_nfsd_uv(addon, scene, connection):
    obj = add_mesh("sphere", uvs=False)
    job = addon.jobs.wait(addon.jobs.start_job(obj, addon.properties.settings_dict(scene.nfsd), connection),
                          timeout=240)
    assert job.state == "done", job.error
    layer = obj.data.uv_layers["NFSD_UV"]
    assert obj.data.uv_layers.active == layer and len(layer.data) == len(obj.data.loops)
    assert obj.nfsd_runs[0].material.node_tree.nodes["NFSD UV Map"].uv_map == "NFSD_UV"
    assert len(obj.data.uv_layers) == 1  # the map made for the live preview, if any, was reused


def test_the_live_preview_of_a_mesh_without_uvs_is_on_the_mesh_before_the_end(addon, scene, connection):
    scene.nfsd.steps = 5000
    obj = add_mesh("sphere", uvs=False)
    job = addon.jobs.start_job(obj, addon.properties.settings_dict(scene.nfsd), connection)
    deadline = time.monotonic() + 120
    while not (job.previews and len(obj.material_slots)) and job.active and time.monotonic() < deadline:
        addon.jobs.process_events()
        time.sleep(0.05)
    assert job.state == "running" and job.previews, job.error
    assert obj.data.uv_layers.active.name == "NFSD_UV" and job.preview_uv_map == "NFSD_UV"
    assert obj.material_slots[0].material.node_tree.nodes["NFSD UV Map"].uv_map == "NFSD_UV"
    addon.jobs.cancel(obj)
    addon.jobs.wait(job, timeout=60)
    assert job.state == "cancelled" and len(obj.data.uv_layers) == 0


def test_cancel_stops_a_running_job(addon, scene, connection):
    scene.nfsd.steps = 5000
    obj = add_mesh("cube")
    job = addon.jobs.start_job(obj, addon.properties.settings_dict(scene.nfsd), connection)
    deadline = time.monotonic() + 120
    while job.state not in ("running", "failed") and time.monotonic() < deadline:
        addon.jobs.process_events()
        time.sleep(0.05)
    assert job.state == "running", job.error
    addon.jobs.cancel(obj)
    addon.jobs.wait(job, timeout=60)
    assert job.state == "cancelled"
    status = connection.client().status(job.job_id)
    deadline = time.monotonic() + 30
    while status["state"] not in ("cancelled", "failed", "done") and time.monotonic() < deadline:
        time.sleep(0.2)
        status = connection.client().status(job.job_id)
    assert status["state"] == "cancelled" and status["step"] < 5000
    assert len(obj.nfsd_runs) == 0 and bpy.data.materials.get("NFSD: a weathered bronze statue") is None
