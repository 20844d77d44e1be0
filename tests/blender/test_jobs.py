# SPDX-License-Identifier: GPL-3.0-or-later
"""Jobs end to end against the fake backend: progress, live preview, result, cancel, errors, panel.

Timers never fire in the bpy module, so the tests pump ``jobs.process_events`` themselves (via
``jobs.wait``), exactly what the add-on's timer does in Blender.
"""

import io
import socket
import time
from types import SimpleNamespace

import bpy
import numpy as np
import pytest
from PIL import Image

from conftest import RecordingLayout, add_mesh
from fake_backend import FAIL_MESSAGE


def draw_panel(addon):
    layout = RecordingLayout()
    addon.ui.NFSD_PT_main.draw(SimpleNamespace(layout=layout), bpy.context)
    return layout


def test_texture_selected_runs_with_live_preview_and_applies_the_result(addon, scene, prefs, fake_backend):
    prefs.backend_url = fake_backend.url
    cube = add_mesh("cube", name="Crate")
    assert bpy.ops.nfsd.texture_selected() == {"FINISHED"}
    job = addon.jobs.job_for(cube)
    job.worker.connection.poll_interval, job.worker.connection.preview_interval = 0.01, 0.0  # no waiting in tests
    seen_material_during_run = False
    deadline = time.monotonic() + 20
    while job.active and time.monotonic() < deadline:
        addon.jobs.process_events()
        if job.state == "running" and job.previews and len(cube.material_slots):
            seen_material_during_run = True
            assert "Step" in job.status_text() and "ETA" in job.status_text() and "loss" in job.status_text()
        time.sleep(0.01)
    addon.jobs.wait(job)
    assert job.state == "done", job.error
    assert seen_material_during_run  # the viewport showed the texture before the end
    sent = fake_backend.jobs[job.job_id]
    assert sent["settings"]["prompt"] == "a weathered bronze statue" and sent["settings"]["steps"] == 3
    assert sent["mesh"]["positions"].shape == (8, 3) and sent["mesh"]["uvs"].shape == (12, 3, 2)
    run = cube.nfsd_runs[0]
    assert tuple(run.image.size) == (64, 64)
    # The preview's image and material were reused for the result: one of each.
    assert [m.name for m in bpy.data.materials] == ["NFSD: a weathered bronze statue"]
    assert len([i for i in bpy.data.images if i.name.startswith("NFSD")]) == 1
    assert addon.jobs.status_line().startswith("NFSD Crate: Done in")


def test_each_selected_mesh_is_its_own_job(addon, scene, fast_connection, fake_backend):
    a, b = add_mesh("cube", name="A"), add_mesh("plane", name="B")
    settings = addon.properties.settings_dict(scene.nfsd)
    jobs = [addon.jobs.start_job(obj, settings, fast_connection) for obj in (a, b)]
    for job in jobs:
        addon.jobs.wait(job)
    assert [job.state for job in jobs] == ["done", "done"]
    assert len(a.nfsd_runs) == len(b.nfsd_runs) == 1 and len(fake_backend.jobs) == 2


def test_a_mesh_without_uvs_gets_nfsd_uv_and_offsets_a_shape_key(addon, scene, fast_connection):
    scene.nfsd.offsets = True
    obj = add_mesh("sphere", uvs=False)
    job = addon.jobs.start_job(obj, addon.properties.settings_dict(scene.nfsd), fast_connection)
    addon.jobs.wait(job)
    assert job.state == "done", job.error
    assert obj.data.uv_layers.active.name == "NFSD_UV"
    assert len(obj.data.shape_keys.key_blocks["NFSD offsets"].data) == len(obj.data.vertices)


def corner_uvs(obj, name: str) -> np.ndarray:
    """The UV map ``name`` of ``obj`` at its loop triangles' corners: float32 [F, 3, 2]."""
    mesh = obj.data
    mesh.calc_loop_triangles()
    loops = np.array([triangle.loops[:] for triangle in mesh.loop_triangles], np.int64)
    per_loop = np.empty(len(mesh.loops) * 2, np.float32)
    mesh.uv_layers[name].data.foreach_get("uv", per_loop)
    return per_loop.reshape(-1, 2)[loops]


def run_until_previewed(addon, job, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not (job.state == "running" and job.previews) and time.monotonic() < deadline:
        addon.jobs.process_events()
        time.sleep(0.01)
    assert job.state == "running" and job.previews, job.error


def test_a_finished_job_shows_the_backends_mesh_warnings(addon, scene, fast_connection, fake_backend):
    fake_backend.mesh_warnings = ["3 non-manifold edges (shared by more than two faces)"]
    obj = add_mesh("cube")
    job = addon.jobs.wait(addon.jobs.start_job(obj, addon.properties.settings_dict(scene.nfsd), fast_connection))
    assert job.state == "done" and job.status_text().endswith("· 1 warning(s)")
    assert job.warnings == ["Mesh: 3 non-manifold edges (shared by more than two faces)"]
    labels = [entry for entry in draw_panel(addon).log if entry[0] == "label"]
    warning = [entry for entry in labels if entry[2] in ("ERROR", "BLANK1")]
    assert warning[0][2] == "ERROR"  # wrapped over several labels, the first with the alert icon
    assert " ".join(text for _, text, _ in warning) == job.warnings[0]


def test_a_mesh_without_uvs_shows_the_live_preview_on_the_backends_unwrap(addon, scene, fast_connection,
                                                                         fake_backend):
    fake_backend.total_steps = 8
    obj = add_mesh("sphere", uvs=False)
    job = addon.jobs.start_job(obj, addon.properties.settings_dict(scene.nfsd), fast_connection)
    run_until_previewed(addon, job)
    # During the run: the unwrap is the active UV map "NFSD_UV" and the preview material reads it.
    assert job.active and obj.data.uv_layers.active.name == "NFSD_UV"
    served, generated = fake_backend.uvs(fake_backend.jobs[job.job_id])
    assert generated
    np.testing.assert_allclose(corner_uvs(obj, "NFSD_UV"), served, atol=1e-6)
    material = obj.material_slots[0].material
    assert material.name == "NFSD: a weathered bronze statue"
    assert material.node_tree.nodes["NFSD UV Map"].uv_map == "NFSD_UV"
    assert material.node_tree.nodes["NFSD Texture"].image == obj.nfsd_job.preview_image

    addon.jobs.wait(job)
    assert job.state == "done", job.error
    # The result reuses the map, the material and the image: one of each, and the UVs were fetched once.
    assert [layer.name for layer in obj.data.uv_layers] == ["NFSD_UV"]
    assert obj.nfsd_runs[0].uv_map == "NFSD_UV" and obj.nfsd_runs[0].material == material
    assert [m.name for m in bpy.data.materials] == [material.name]
    assert fake_backend.jobs[job.job_id]["uvs_requests"] == 1


def test_a_mesh_with_its_own_uvs_never_asks_for_the_backends(addon, scene, fast_connection, fake_backend):
    obj = add_mesh("cube")
    job = addon.jobs.wait(addon.jobs.start_job(obj, addon.properties.settings_dict(scene.nfsd), fast_connection))
    assert job.state == "done" and [layer.name for layer in obj.data.uv_layers] == ["UVMap"]
    assert fake_backend.jobs[job.job_id]["uvs_requests"] == 0


def test_cancelling_a_mesh_without_uvs_removes_the_unwrap_it_got(addon, scene, fast_connection, fake_backend):
    fake_backend.total_steps = 10_000
    obj = add_mesh("cube", uvs=False)
    job = addon.jobs.start_job(obj, addon.properties.settings_dict(scene.nfsd), fast_connection)
    run_until_previewed(addon, job)
    assert "NFSD_UV" in obj.data.uv_layers and len(obj.material_slots) == 1
    addon.jobs.cancel(obj)
    addon.jobs.wait(job)
    assert job.state == "cancelled"
    assert len(obj.data.uv_layers) == 0 and len(obj.material_slots) == 0


def test_cancel_stops_the_job_and_puts_the_old_material_back(addon, scene, fast_connection, fake_backend):
    fake_backend.total_steps = 10_000
    obj = add_mesh("cube")
    old = bpy.data.materials.new("Artist's paint")
    obj.data.materials.append(old)
    job = addon.jobs.start_job(obj, addon.properties.settings_dict(scene.nfsd), fast_connection)
    deadline = time.monotonic() + 20
    while not (job.state == "running" and job.previews) and time.monotonic() < deadline:
        addon.jobs.process_events()
        time.sleep(0.01)
    assert obj.material_slots[0].material.name.startswith("NFSD: ")  # the live preview is on
    assert addon.jobs.cancel(obj)
    addon.jobs.wait(job)
    assert job.state == "cancelled"
    assert fake_backend.jobs[job.job_id]["state"] == "cancelled"
    assert obj.material_slots[0].material == old
    assert not [m for m in bpy.data.materials if m.name.startswith("NFSD")] and len(obj.nfsd_runs) == 0


def test_a_failed_job_shows_the_backends_message_in_the_panel(addon, scene, fast_connection):
    scene.nfsd.prompt = "fail please"
    obj = add_mesh("cube")
    job = addon.jobs.start_job(obj, addon.properties.settings_dict(scene.nfsd), fast_connection)
    addon.jobs.wait(job)
    assert (job.state, job.error) == ("failed", FAIL_MESSAGE)
    text = " ".join(draw_panel(addon).texts())
    assert "CUDA out of memory at render_size 512: lower render_size or texture_size" in text
    assert len(obj.material_slots) == 0


def test_an_unreachable_backend_gives_the_error_text_not_a_traceback(addon, scene):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    obj = add_mesh("cube")
    connection = addon.jobs.Connection(url=f"127.0.0.1:{port}", poll_interval=0.01)
    job = addon.jobs.wait(addon.jobs.start_job(obj, addon.properties.settings_dict(scene.nfsd), connection))
    assert job.state == "failed"
    assert job.error.startswith(f"Cannot reach the NFSD backend at http://127.0.0.1:{port}")
    assert "nfsd serve" in job.error and "Traceback" not in job.error
    assert addon.jobs.status_line() == f"NFSD {obj.name}: {job.error}"


def test_continue_sends_the_current_texture_as_init_texture(addon, scene, fast_connection, fake_backend):
    obj = add_mesh("cube")
    settings = addon.properties.settings_dict(scene.nfsd)
    addon.jobs.wait(addon.jobs.start_job(obj, settings, fast_connection))
    scene.nfsd.texture_size = "128"  # ignored: a continued run keeps its texture's size
    job = addon.jobs.wait(addon.jobs.start_job(obj, addon.properties.settings_dict(scene.nfsd), fast_connection,
                                               continue_from=obj.nfsd_runs[0]))
    assert job.state == "done"
    sent = fake_backend.jobs[job.job_id]
    assert sent["settings"]["texture_size"] == 64
    init = np.array(Image.open(io.BytesIO(sent["init_texture"])))
    # PNG rows are top first: the top row is the result's last row (blue), the bottom one red.
    assert init.shape == (64, 64, 4)
    assert tuple(init[0, 0]) == (0, 0, 255, 255) and tuple(init[-1, 0]) == (255, 0, 0, 255)
    assert len(obj.nfsd_runs) == 2


def test_continue_from_a_refined_shape_sends_it_and_adds_the_new_offsets(addon, scene, fast_connection,
                                                                         fake_backend):
    scene.nfsd.offsets = True  # the fake backend moves every vertex by +0.1 in z
    obj = add_mesh("cube")
    basis = np.array([v.co[:] for v in obj.data.vertices], np.float32)
    addon.jobs.wait(addon.jobs.start_job(obj, addon.properties.settings_dict(scene.nfsd), fast_connection))
    first = obj.nfsd_runs[0]
    assert first.shape_key == "NFSD offsets"

    job = addon.jobs.wait(addon.jobs.start_job(obj, addon.properties.settings_dict(scene.nfsd), fast_connection,
                                               continue_from=first))
    assert job.state == "done", job.error
    sent = fake_backend.jobs[job.job_id]["mesh"]["positions"]
    assert np.allclose(sent - basis, [0, 0, 0.1])  # the shape the texture was made on, not the basis
    second = obj.nfsd_runs[1]
    assert second.shape_key == "NFSD offsets 2"
    assert np.allclose(addon.mesh_io.shape_key_offsets(obj, second.shape_key), [0, 0, 0.2])  # old + new

    scene.nfsd.offsets = False  # texture only: the run belongs to the refined shape it continued on
    addon.jobs.wait(addon.jobs.start_job(obj, addon.properties.settings_dict(scene.nfsd), fast_connection,
                                         continue_from=second))
    third = obj.nfsd_runs[2]
    assert third.shape_key == "NFSD offsets 2"
    keys = obj.data.shape_keys.key_blocks
    assert (keys["NFSD offsets"].value, keys["NFSD offsets 2"].value) == (0.0, 1.0)

    obj.shape_key_remove(keys["NFSD offsets 2"])
    with pytest.raises(ValueError, match="lost the shape key 'NFSD offsets 2'"):
        addon.jobs.start_job(obj, addon.properties.settings_dict(scene.nfsd), fast_connection, continue_from=third)


def test_panel_shows_progress_and_why_the_button_is_disabled(addon, scene, fast_connection, fake_backend):
    bpy.ops.object.light_add(type="POINT")
    layout = draw_panel(addon)
    assert ("label", "'Point' is not a mesh (it is a light)", "INFO") in layout.log
    assert ("prop", "preset") in layout.log
    assert "3 steps · 64 px render · 64 px texture · views/step: backend default" in layout.texts()
    assert not bpy.ops.nfsd.texture_selected.poll()

    fake_backend.total_steps = 10_000
    obj = add_mesh("cube")
    job = addon.jobs.start_job(obj, addon.properties.settings_dict(scene.nfsd), fast_connection)
    while job.step < 2:
        addon.jobs.process_events()
        time.sleep(0.01)
    assert addon.operators.timer_tick() == 0.2  # the pump runs often while a job is active
    layout = draw_panel(addon)
    progress = [entry for entry in layout.log if entry[0] == "progress"]
    assert progress and progress[0][2].startswith("Step ") and "ETA" in progress[0][2]
    assert ("operator", "nfsd.cancel") in layout.log
    assert ("label", f"'{obj.name}' is already being textured; cancel that job first", "INFO") in layout.log


def test_unload_model_runs_off_the_main_thread_and_reports_in_the_backend_line(addon, scene, prefs, fake_backend):
    prefs.backend_url = fake_backend.url
    assert bpy.ops.nfsd.unload_model() == {"FINISHED"}
    deadline = time.monotonic() + 10
    while not addon.backend_status.backend_status()[1].startswith("Model unloaded") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake_backend.unloaded == 1
    assert addon.backend_status.backend_status() == (True, "Model unloaded: the backend's GPU memory is free")


def test_a_remote_backend_is_refused_while_online_access_is_off(addon, scene, prefs):
    assert bpy.app.online_access is False  # the bpy module's default, like Blender's first start
    prefs.backend_url = "203.0.113.5:7870"
    obj = add_mesh("cube")
    job = addon.jobs.wait(addon.jobs.start_job(obj, addon.properties.settings_dict(scene.nfsd),
                                               addon.preferences.connection()))
    assert job.state == "failed" and "online access is off" in job.error and "203.0.113.5" in job.error


def test_preferences_draw_says_online_access_is_off(addon, prefs):
    class Drawn:  # the preferences with a recording layout in place of Blender's
        def __init__(self):
            self.layout = RecordingLayout()

        def __getattr__(self, name):
            return getattr(prefs, name)

    drawn = Drawn()
    type(prefs).draw(drawn, bpy.context)
    assert ("prop", "backend_url") in drawn.layout.log and ("operator", "nfsd.test_connection") in drawn.layout.log
    assert ("operator", "nfsd.unload_model") in drawn.layout.log
    assert any("Online access is off" in text for text in drawn.layout.texts())


def test_the_local_backend_command(addon):
    build = addon.local_backend.build_command
    assert build("/envs/nfsd/bin/python", "localhost:7999/") == [
        "/envs/nfsd/bin/python", "-m", "nfsd.cli", "serve", "--host", "localhost", "--port", "7999"]
    assert build("nfsd serve --port 1234 --model '/my models/sd15'", "127.0.0.1:7870") == [
        "nfsd", "serve", "--port", "1234", "--model", "/my models/sd15"]
    with pytest.raises(addon.client.BackendError, match="not on this computer"):
        build("nfsd serve", "http://192.168.1.20:7870")
    with pytest.raises(addon.client.BackendError, match="Set the command"):
        build("  ", "127.0.0.1:7870")


def test_health_answers_become_one_readable_line(addon):
    line = addon.backend_status.describe_health({
        "version": "0.1.0", "device": "cuda", "gpu_name": "NVIDIA H100", "gpu_free_bytes": 70 * 2 ** 30,
        "model_loaded": None, "model_loading": None, "default_model": "/models/sd15/", "queue_length": 2})
    assert line == "Connected (v0.1.0): model sd15 (loads with the first job), NVIDIA H100, 70.0 GB free, 2 queued"
    assert "cpu, no GPU" in addon.backend_status.describe_health({"device": "cpu", "model_loaded": "builtin"})


def test_unwrap_in_blender_sends_smart_uv_project_uvs_and_keeps_the_selection(addon, scene, fast_connection,
                                                                                fake_backend):
    obj = add_mesh("cube", uvs=False)  # six quads: Blender's seams follow them, xatlas sees triangles
    selected = np.zeros(len(obj.data.polygons), bool)
    selected[::2] = True
    obj.data.polygons.foreach_set("select", selected)
    job = addon.jobs.wait(addon.jobs.start_job(obj, addon.properties.settings_dict(scene.nfsd), fast_connection,
                                               unwrap=True))
    assert job.state == "done", job.error
    sent = fake_backend.jobs[job.job_id]["mesh"]
    assert "uvs" in sent and np.allclose(sent["uvs"], corner_uvs(obj, "NFSD_UV"))  # the backend did not unwrap
    assert sent["uvs"].min() >= 0.0 and sent["uvs"].max() <= 1.0 and np.ptp(sent["uvs"]) > 0.5
    assert obj.nfsd_runs[0].uv_map == "NFSD_UV" and obj.data.uv_layers.active.name == "NFSD_UV"
    after = np.zeros(len(obj.data.polygons), bool)
    obj.data.polygons.foreach_get("select", after)
    assert np.array_equal(after, selected) and obj.mode == "OBJECT"
