# SPDX-License-Identifier: GPL-3.0-or-later
"""The panel tells the truth: the token, outages and Resubmit, sizes and prompt length the backend
accepts, modifiers, linked duplicates, the model list, the local backend, run-list housekeeping."""

import stat
import time
from types import SimpleNamespace

import bpy
import numpy as np
import pytest
from PIL import Image

from conftest import RecordingLayout, add_mesh
from fake_backend import FakeBackend, result_texture

def model(name, family, render_size, kind="folder", **extra):
    """The fields of a GET /models entry (nfsd.priors.model_files.ModelEntry: the fake builds the entry,
    and its "defaults", with the server's own code)."""
    return dict({"name": name, "kind": kind, "path": f"/models/{name}", "family": family,
                 "prediction_type": "epsilon", "text_window": 77, "render_size": render_size, "supported": True,
                 "note": ""}, **extra)


MODELS = [model("builtin", "builtin", 64, kind="builtin"), model("tiny-sdxl", "sdxl", 128)]


def draw_panel(addon):
    layout = RecordingLayout()
    addon.ui.NFSD_PT_main.draw(SimpleNamespace(layout=layout), bpy.context)
    return layout


def draw_history(addon):
    layout = RecordingLayout()
    addon.ui.NFSD_PT_history.draw(SimpleNamespace(layout=layout), bpy.context)
    return layout


def settings(addon, scene):
    return addon.properties.settings_dict(scene.nfsd)


def test_test_connection_says_wrong_token_and_passes_with_the_right_one(addon, scene, prefs):
    with FakeBackend(token="s3cret") as backend:
        prefs.backend_url = backend.url
        for token, expected in (("", "Wrong token"), ("wrong", "Wrong token"), ("s3cret", "Connected")):
            prefs.token = token
            assert bpy.ops.nfsd.test_connection() == {"FINISHED"}
            addon.backend_status.wait_for_check()
            ok, text = addon.backend_status.backend_status()
            assert text.startswith(expected) and ok == (expected == "Connected"), text
        assert "is empty" in addon.backend_status.check_backend(
            addon.jobs.Connection(url=backend.url, token=""))[1]
    prefs.token = ""


def start_a_long_job(addon, scene, connection, fake_backend):
    """``(cube, job)``: a job on a new cube, running and never finishing by itself."""
    fake_backend.total_steps = 10_000
    obj = add_mesh("cube")
    job = addon.jobs.start_job(obj, settings(addon, scene), connection)
    while job.state != "running":
        addon.jobs.process_events()
        time.sleep(0.01)
    return obj, job


def test_an_outage_shows_reconnecting_then_resubmit_and_never_api_text(addon, scene, fast_connection, fake_backend):
    obj, job = start_a_long_job(addon, scene, fast_connection, fake_backend)
    fake_backend.stop()
    deadline = time.monotonic() + 10
    while not job.status_text().startswith("Reconnecting (") and time.monotonic() < deadline:
        addon.jobs.process_events()
        time.sleep(0.01)
    assert job.active and job.status_text().startswith("Reconnecting (") and job.status_text().endswith(" s)...")
    fake_backend.restart()  # the running job comes back "interrupted"
    addon.jobs.wait(job)
    assert job.state == "interrupted"
    layout = draw_panel(addon)
    assert ("operator", "nfsd.resubmit") in layout.log
    assert not [text for text in layout.texts() if "POST" in text or "/jobs" in text]
    assert len(obj.material_slots) == 0  # the scene is as it was

    fake_backend.jobs[job.job_id]["total"] = 3
    again = addon.jobs.wait(addon.jobs.resubmit(obj, fast_connection))
    assert again.state == "done", again.error
    assert fake_backend.jobs[again.job_id]["resubmitted_from"] == job.job_id and len(obj.nfsd_runs) == 1


def test_sizes_are_choices_the_backend_accepts(addon, scene):
    nfsd = scene.nfsd
    textures = [int(item.identifier) for item in nfsd.bl_rna.properties["texture_size"].enum_items]
    renders = [int(item.identifier) for item in nfsd.bl_rna.properties["render_size"].enum_items]
    # backend/nfsd/server.py JobSettings: texture 64..4096 in steps of 64, render 32..1024 in steps of 8.
    assert all(size % 64 == 0 and 64 <= size <= 4096 for size in textures) and 1024 in textures
    assert all(size % 8 == 0 and 32 <= size <= 1024 for size in renders) and 512 in renders
    with pytest.raises(TypeError):
        nfsd.texture_size = "1000"  # what the old number field let through, and the backend refused


def test_a_prompt_over_the_models_token_limit_is_refused_before_sending(addon, scene, prefs):
    with FakeBackend(models=MODELS) as backend:
        connection = addon.jobs.Connection(url=backend.url, poll_interval=0.01, preview_interval=0.0)
        assert addon.backend_status.check_backend(connection)[0]
        obj = add_mesh("cube")
        scene.nfsd.prompt = " ".join(["mossy"] * 80)
        with pytest.raises(ValueError, match="at least 82 tokens long but the model 'builtin' reads 77"):
            addon.jobs.start_job(obj, settings(addon, scene), connection)
        assert backend.jobs == {} and len(obj.material_slots) == 0 and not obj.nfsd_original.captured
        assert ("label", "The prompt is at least 82 tokens long but the model 'builtin' reads 77; shorten it",
                "INFO") in draw_panel(addon).log
        scene.nfsd.prompt = "mossy stone, 3 cracks"
        assert addon.backend_status.estimate_tokens(scene.nfsd.prompt) == 7
        scene.nfsd.allow_unknown_words = True  # words the built-in prior does not know: "Run anyway"
        assert addon.jobs.wait(addon.jobs.start_job(obj, settings(addon, scene), connection)).state == "done"


def test_the_model_picker_lists_the_backends_models_and_runs_show_model_steps_size(addon, scene):
    with FakeBackend(models=MODELS) as backend:
        connection = addon.jobs.Connection(url=backend.url, poll_interval=0.01, preview_interval=0.0)
        addon.backend_status.check_backend(connection)
        items = [item[0] for item in addon.presets.model_items()]
        assert items == ["__default__", "builtin", "tiny-sdxl"]
        scene.nfsd.model_choice = "tiny-sdxl"
        assert scene.nfsd.model == "tiny-sdxl" and scene.nfsd.render_size == "128"  # the model's render size
        scene.nfsd.model_choice = "__default__"  # the backend's default can be chosen again
        assert scene.nfsd.model == "" and scene.nfsd.model_choice == "__default__"
        assert "model" not in settings(addon, scene)
        assert scene.nfsd.render_size == "128"  # the default model's ("builtin" here: the server's defaults)
        scene.nfsd.model_choice = "tiny-sdxl"
        obj = add_mesh("cube")
        job = addon.jobs.wait(addon.jobs.start_job(obj, settings(addon, scene), connection))
        assert backend.jobs[job.job_id]["request"]["model"] == "tiny-sdxl"
        assert backend.jobs[job.job_id]["settings"]["model"] == "/models/tiny-sdxl"  # the folder it loads
        assert addon.ui.run_label(obj.nfsd_runs[0]) == \
            "a weathered bronze statue (NFSD, tiny-sdxl, 3 steps, 64 px, seed 7)"


def test_presets_follow_the_chosen_models_defaults_and_the_summary_says_what_will_run(addon, scene):
    # The "defaults" of each entry are the server's (nfsd.server.validation.model_defaults): builtin 600 steps,
    # 256 px texture, 128 px render, 2 views; an SD model 400 steps, 1024 px texture, its render size, 1 view.
    tuned = model("tuned", "sd1", 512)
    lora = model("detail-lora", "sd1", None, kind="lora")
    with FakeBackend(models=MODELS + [tuned, lora]) as backend:
        addon.backend_status.check_backend(addon.jobs.Connection(url=backend.url))
        assert [item[0] for item in addon.presets.model_items()] == ["__default__", "builtin", "tiny-sdxl", "tuned"]
        nfsd = scene.nfsd
        nfsd.preset = "BALANCED"
        assert (nfsd.steps, nfsd.render_size, nfsd.texture_size) == (600, "128", "256")  # builtin's defaults
        nfsd.model_choice = "tuned"  # Balanced stays Balanced: the model's own defaults
        assert (nfsd.steps, nfsd.render_size, nfsd.texture_size, nfsd.preset) == (400, "512", "1024", "BALANCED")
        nfsd.preset = "FAST"
        assert (nfsd.steps, nfsd.render_size, nfsd.texture_size) == (200, "512", "512")
        assert ("label", "200 steps · 512 px render · 512 px texture · 1 view/step", "NONE") in draw_panel(addon).log
        nfsd.preset = "HIGH"
        assert (nfsd.steps, nfsd.render_size, nfsd.texture_size) == (800, "512", "2048")
        nfsd.batch = 2
        assert "800 steps · 512 px render · 2048 px texture · 2 views/step" in draw_panel(addon).texts()
        nfsd.batch = 0
        nfsd.model_choice = "tiny-sdxl"  # High stays High: twice the model's steps and texture, its render size
        assert (nfsd.steps, nfsd.render_size, nfsd.texture_size, nfsd.preset) == (800, "128", "2048", "HIGH")
        assert "800 steps · 128 px render · 2048 px texture · 1 view/step" in draw_panel(addon).texts()


def test_without_get_models_the_picker_offers_the_backends_default(addon, scene, fast_connection):
    addon.backend_status.check_backend(fast_connection)  # the fake serves no /models by default
    assert [item[:2] for item in addon.presets.model_items()] == [("__default__", "Backend default (sd15)")]
    assert "model" not in settings(addon, scene)


def test_continue_says_when_it_keeps_an_older_texture_size(addon, scene, fast_connection):
    obj = add_mesh("cube")
    addon.jobs.wait(addon.jobs.start_job(obj, settings(addon, scene), fast_connection))
    assert addon.operators.continue_note(bpy.context) is None
    scene.nfsd.texture_size = "1024"
    note = "Continue keeps this run's 64 px texture (not 1024 px)"
    assert addon.operators.continue_note(bpy.context) == note and ("label", note, "INFO") in draw_panel(addon).log


def test_texture_only_sends_the_evaluated_mesh_and_refine_shape_the_base_mesh(addon, scene, fast_connection,
                                                                           fake_backend):
    obj = add_mesh("cube")
    obj.modifiers.new("Subdivision", "SUBSURF").levels = 1
    job = addon.jobs.wait(addon.jobs.start_job(obj, settings(addon, scene), fast_connection))
    assert job.state == "done", job.error
    sent = fake_backend.jobs[job.job_id]["mesh"]
    assert sent["positions"].shape == (26, 3) and sent["uvs"].shape == (sent["triangles"].shape[0], 3, 2)
    assert obj.nfsd_runs[0].uv_map == "UVMap" and [layer.name for layer in obj.data.uv_layers] == ["UVMap"]
    assert ("label", "Modifiers are applied for texturing (the mesh as the viewport shows it)", "INFO") \
        in draw_panel(addon).log

    scene.nfsd.offsets = True
    job = addon.jobs.wait(addon.jobs.start_job(obj, settings(addon, scene), fast_connection))
    assert job.state == "done" and fake_backend.jobs[job.job_id]["mesh"]["positions"].shape == (8, 3)
    assert ("label", "Refine Shape works on the base mesh: modifiers are ignored for the shape", "INFO") \
        in draw_panel(addon).log


def test_linked_duplicates_are_named_in_the_panel(addon, scene):
    obj = add_mesh("cube", name="Chair")
    for name in ("Chair 2", "Chair 3"):
        twin = obj.copy()  # Alt+D: a new object, the same mesh
        twin.name = name
        scene.collection.objects.link(twin)
    bpy.context.view_layer.objects.active = obj
    assert ("label", "The result also changes 2 linked duplicate(s) sharing this mesh: Chair 2, Chair 3", "INFO") \
        in draw_panel(addon).log


def test_run_housekeeping_deletes_what_nothing_uses_and_exports_a_png(addon, scene, fast_connection, tmp_path):
    scene.nfsd.offsets = True
    obj = add_mesh("cube")
    paint = bpy.data.materials.new("Paint")
    obj.data.materials.append(paint)
    for prompt in ("oak", "pine"):
        scene.nfsd.prompt = prompt
        addon.jobs.wait(addon.jobs.start_job(obj, settings(addon, scene), fast_connection))
    oak = obj.nfsd_runs[0]
    pine_material = obj.nfsd_runs[1].material.name
    oak_names = (oak.material.name, oak.image.name, oak.shape_key)
    path = addon.results.export_run_png(oak, str(tmp_path / "oak"))
    assert path.endswith("oak.png")
    written = np.array(Image.open(path))
    assert np.array_equal(written, result_texture(64)[::-1])  # PNG rows top first

    layout = draw_history(addon)
    assert ("operator", "nfsd.delete_run") in layout.log and ("operator", "nfsd.export_run") in layout.log
    assert ("operator", "nfsd.restore_original") in layout.log
    addon.results.delete_run(obj, 0)  # not on show: only its own things go
    assert oak_names[0] not in bpy.data.materials and oak_names[1] not in bpy.data.images
    assert oak_names[2] not in obj.data.shape_keys.key_blocks
    assert [run.prompt for run in obj.nfsd_runs] == ["pine"] and obj.material_slots[0].material.name == pine_material
    addon.results.delete_run(obj, 0)  # on show: the original comes back first
    assert obj.material_slots[0].material == paint and pine_material not in bpy.data.materials
    assert [key.name for key in obj.data.shape_keys.key_blocks] == ["Basis"] and len(obj.nfsd_runs) == 0


def test_the_backend_program_is_checked_and_its_log_tail_shown_when_it_fails(addon, prefs, tmp_path):
    problem = addon.local_backend.executable_problem
    assert "does not exist" in problem(str(tmp_path / "nope" / "python"))
    assert "is a folder" in problem(str(tmp_path))
    other = tmp_path / "blender"
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    assert "neither a Python nor the nfsd program" in problem(str(other))
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\necho 'Traceback (most recent call last):'\n"
                    "echo \"ModuleNotFoundError: No module named 'nfsd'\"\nexit 1\n")
    assert "is not executable" in problem(str(fake))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    assert problem(str(fake)) is None

    prefs.backend_executable = str(tmp_path / "missing-python")
    with pytest.raises(addon.client.BackendError, match="does not exist"):
        addon.preferences.start_command(prefs)
    prefs.backend_executable = str(fake)
    command = addon.preferences.start_command(prefs)
    assert addon.local_backend.build_command(command, "127.0.0.1:7999")[:4] == [str(fake), "-m", "nfsd.cli", "serve"]
    addon.local_backend.start(command, "127.0.0.1:7999")
    try:
        with pytest.raises(addon.client.BackendError, match="No module named 'nfsd'"):
            addon.local_backend.wait_until_up("127.0.0.1:7999", timeout=20)
    finally:
        addon.local_backend.stop()
    addon.backend_status.set_status(False, "The local backend exited.")

    class Drawn:  # the preferences with a recording layout in place of Blender's
        def __init__(self):
            self.layout = RecordingLayout()

        def __getattr__(self, name):
            return getattr(prefs, name)

    drawn = Drawn()
    type(prefs).draw(drawn, bpy.context)
    assert "ModuleNotFoundError: No module named 'nfsd'" in drawn.layout.texts()
    assert ("prop", "backend_executable") in drawn.layout.log
    prefs.backend_executable = ""


def test_backend_errors_never_show_the_route(addon):
    with FakeBackend() as backend:
        client = addon.client.Client(backend.url)
        with pytest.raises(addon.client.BackendError) as caught:
            client._json("GET", "/explode")  # an HTTP 500 without a JSON detail
        text = str(caught.value)
    assert text == f"The backend at {backend.url} refused the request (HTTP 500)."


def test_edit_mode_continues_a_run_with_its_prompt_as_the_source_prompt(addon, scene, fast_connection,
                                                                        fake_backend):
    obj = add_mesh("cube")
    scene.nfsd.prompt = "red and white stripes"
    addon.jobs.wait(addon.jobs.start_job(obj, settings(addon, scene), fast_connection))
    scene.nfsd.mode = "dds"
    scene.nfsd.prompt = "blue and white stripes"
    assert not bpy.ops.nfsd.texture_selected.poll()  # Edit needs a texture to edit
    with pytest.raises(ValueError, match="Edit changes an existing NFSD texture"):
        addon.jobs.start_job(obj, settings(addon, scene), fast_connection)
    assert bpy.ops.nfsd.continue_texture.poll()
    job = addon.jobs.wait(addon.jobs.start_job(obj, settings(addon, scene), fast_connection,
                                               continue_from=obj.nfsd_runs[0]))
    sent = fake_backend.jobs[job.job_id]
    assert sent["settings"]["mode"] == "dds" and sent["settings"]["source_prompt"] == "red and white stripes"
    assert sent["init_texture"] is not None and obj.nfsd_runs[1].mode == "dds"


def test_selected_faces_only_sends_a_face_mask_from_edit_mode(addon, scene, fast_connection, fake_backend):
    obj = add_mesh("cube")
    addon.jobs.wait(addon.jobs.start_job(obj, settings(addon, scene), fast_connection))
    scene.nfsd.selected_faces_only = True
    bpy.ops.object.mode_set(mode="EDIT")
    bpy.ops.mesh.select_all(action="DESELECT")
    bpy.ops.object.mode_set(mode="OBJECT")
    obj.data.polygons[2].select = True  # one quad: two triangles
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        assert bpy.ops.nfsd.continue_texture.poll()
        # From scratch there is no texture whose other faces could stay: the backend needs one.
        assert not bpy.ops.nfsd.texture_selected.poll()
        job = addon.jobs.start_job(obj, settings(addon, scene), fast_connection, continue_from=obj.nfsd_runs[0],
                                   faces_only=True)
        addon.jobs.process_events()
        while job.active:  # the result waits for Object Mode
            addon.jobs.process_events()
            time.sleep(0.01)
        assert job.status_text() == "Done: leave Edit Mode to apply"
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
    addon.jobs.wait(job)
    assert job.state == "done" and len(obj.nfsd_runs) == 2
    mesh = fake_backend.jobs[job.job_id]["mesh"]
    polygon = np.array([t.polygon_index for t in obj.data.loop_triangles])
    assert mesh["face_mask"].dtype == np.bool_ and mesh["face_mask"].shape == (12,)
    assert np.array_equal(mesh["face_mask"], polygon == 2)


def test_selected_faces_only_with_nothing_selected_says_so(addon, scene, fast_connection, fake_backend):
    obj = add_mesh("cube")
    obj.data.polygons.foreach_set("select", np.zeros(6, bool))
    scene.nfsd.selected_faces_only = True
    addon.jobs.wait(addon.jobs.start_job(obj, settings(addon, scene), fast_connection))
    fake_backend.jobs.clear()
    slots = [slot.material for slot in obj.material_slots]
    with pytest.raises(ValueError, match="No faces of 'Cube' are selected"):
        addon.jobs.start_job(obj, settings(addon, scene), fast_connection, continue_from=obj.nfsd_runs[0],
                             faces_only=True)
    assert fake_backend.jobs == {} and not obj.nfsd_job.job_id
    assert [slot.material for slot in obj.material_slots] == slots


def test_selected_faces_only_needs_a_run_to_continue(addon, scene, fast_connection, fake_backend):
    obj = add_mesh("cube")
    scene.nfsd.selected_faces_only = True
    with pytest.raises(ValueError, match="select a run under Earlier Runs and press Continue"):
        addon.jobs.start_job(obj, settings(addon, scene), fast_connection, faces_only=True)
    assert fake_backend.jobs == {} and len(obj.material_slots) == 0


def test_the_backends_stage_shows_before_the_first_step(addon):
    """A UV-less mesh is unwrapped before step 1: the panel says so instead of 'Step 0/N'."""
    job = addon.job.Job(1, "key", "Cube", {"steps": 40}, addon.worker.Connection("http://127.0.0.1:1", ""))
    job.take("status", {"state": "running", "step": 0, "total": 40, "stage": "unwrapping 81,920 faces"})
    assert job.status_text().startswith("Unwrapping 81,920 faces, ")
    job.take("status", {"state": "running", "step": 3, "total": 40, "stage": None})
    assert job.status_text().startswith("Step 3/40")


def test_a_reattached_job_says_how_long_it_really_ran(addon, scene, fast_connection, fake_backend):
    obj, job = start_a_long_job(addon, scene, fast_connection, fake_backend)
    job.detach()  # as when its saved file was closed
    addon.jobs._jobs.clear()
    backend_job = fake_backend.jobs[job.job_id]
    backend_job["started"] = time.time() - 125  # it started two minutes before this Blender watched it
    backend_job["total"] = backend_job["step"] + 2
    again = addon.jobs.wait(addon.jobs.reattach(obj, fast_connection))
    assert again.state == "done", again.error
    assert again.status_text().startswith("Done in 2:0")  # not "Done in 0:00"


def test_a_wrong_token_fails_the_job_with_one_short_line(addon, scene):
    with FakeBackend(token="s3cret") as backend:
        obj = add_mesh("cube")
        connection = addon.jobs.Connection(url=backend.url, token="wrong", poll_interval=0.01)
        job = addon.jobs.wait(addon.jobs.start_job(obj, settings(addon, scene), connection))
    assert (job.state, job.error) == ("failed", "The backend refused the token: check it in the add-on preferences")
    log = draw_panel(addon).log
    assert ("label", "The backend refused the token: check it in the", "ERROR") in log
    assert ("operator", "nfsd.error_details") in log and len(obj.material_slots) == 0


def test_errors_are_a_sentence_per_line_wrapped_to_the_panel_and_whole_in_details(addon, scene):
    error = ("Cannot reach the NFSD backend at http://127.0.0.1:9 (connection refused). Start it with "
             "`nfsd serve` in a terminal and check the backend URL there. It may still be loading. Or not.")
    narrow, wide = addon.ui.error_lines(error, 30), addon.ui.error_lines(error, 120)
    assert all(len(line) <= 30 for line in narrow) and len(wide) == 4 and wide[-1] == "... (Details)"
    assert wide[0] == "Cannot reach the NFSD backend at http://127.0.0.1:9 (connection refused)."
    assert wide[1].startswith("Start it with") and wide[2] == "It may still be loading."
    region = SimpleNamespace(width=800)
    assert addon.ui.panel_chars(SimpleNamespace(region=region, preferences=bpy.context.preferences)) > 100
    assert addon.ui.panel_chars(bpy.context) == 48  # no region (a script): the old width

    scene.nfsd.prompt = "fail please"
    obj = add_mesh("cube")
    with FakeBackend() as backend:
        connection = addon.jobs.Connection(url=backend.url, poll_interval=0.01)
        addon.jobs.wait(addon.jobs.start_job(obj, settings(addon, scene), connection))
    description = addon.operators.NFSD_OT_error_details.description(bpy.context, None)
    assert description == addon.jobs.job_for(obj).error and bpy.ops.nfsd.error_details() == {"FINISHED"}


@pytest.mark.parametrize("need", ["edit_mode", "selected_faces_only"])
def test_edit_and_selected_faces_show_the_runs_and_original_in_the_main_panel(addon, scene, fast_connection,
                                                                              need):
    obj = add_mesh("cube")
    assert ("template_list", "NFSD_UL_runs") not in draw_panel(addon).log
    addon.jobs.wait(addon.jobs.start_job(obj, settings(addon, scene), fast_connection))
    assert ("template_list", "NFSD_UL_runs") not in draw_panel(addon).log  # Texture needs no run
    if need == "edit_mode":
        scene.nfsd.mode = "dds"
    else:
        scene.nfsd.selected_faces_only = True
    log = draw_panel(addon).log
    assert ("template_list", "NFSD_UL_runs") in log and ("operator", "nfsd.restore_original") in log
    assert "DEFAULT_CLOSED" not in getattr(addon.ui.NFSD_PT_history, "bl_options", set())


def test_modes_have_plain_labels_and_tooltips_and_keep_their_identifiers(addon, scene):
    items = {item.identifier: item for item in scene.nfsd.bl_rna.properties["mode"].enum_items}
    assert [(key, items[key].name) for key in items] == [
        ("nfsd", "Clean (NFSD)"), ("sds", "Classic (SDS)"), ("csd", "Prompt only (CSD)"), ("dds", "Edit (DDS)")]
    assert all(len(item.description) > 30 for item in items.values())
