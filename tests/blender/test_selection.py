# SPDX-License-Identifier: GPL-3.0-or-later
"""Texturing every selected object: one job per mesh, each previewed and applied on its own object
(found by identity), an object already running never sent twice, non-meshes left out with a note,
Cancel All, a full backend queue, one undo step, and saving mid-run. Against the fake backend, whose
answers (the 429 of a full queue included) are the server's own."""

import time
from types import SimpleNamespace

import bpy
import pytest

from conftest import RecordingLayout, add_mesh
from fake_backend import FakeBackend


def draw_panel(addon):
    layout = RecordingLayout()
    addon.ui.NFSD_PT_main.draw(SimpleNamespace(layout=layout), bpy.context)
    return layout


def select(objects, active):
    for obj in bpy.context.view_layer.objects:
        obj.select_set(obj in objects)
    bpy.context.view_layer.objects.active = active


def three_meshes():
    """"A" (cube, 8 vertices), "B" (plane, 4), "C" (UV sphere without UVs, 114), each with its own
    material "A paint", ...; all selected, "B" active."""
    objects = [add_mesh("cube", name="A"), add_mesh("plane", name="B"), add_mesh("sphere", uvs=False, name="C")]
    for obj in objects:
        obj.data.materials.append(bpy.data.materials.new(f"{obj.name} paint"))
    select(objects, objects[1])
    return objects


def pump_until(addon, condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        addon.jobs.process_events()
        time.sleep(0.01)
    assert condition()


def texture_node_image(obj):
    return obj.material_slots[0].material.node_tree.nodes["NFSD Texture"].image


def nfsd_leftovers():
    return ([m.name for m in bpy.data.materials if m.get("nfsd")],
            [i.name for i in bpy.data.images if i.get("nfsd")])


def test_three_selected_meshes_are_three_jobs_each_previewed_and_applied_on_its_own_object(
        addon, scene, prefs, fake_backend):
    prefs.backend_url = fake_backend.url
    scene.nfsd.unwrap_in_blender = True
    fake_backend.total_steps = 10_000  # no job may end before all three show a preview (a loaded machine)
    a, b, c = three_meshes()
    assert draw_panel(addon).buttons["nfsd.texture_selected"] == "Texture 3 objects"
    assert bpy.ops.nfsd.texture_selected() == {"FINISHED"}
    jobs = {obj.name: addon.jobs.job_for(obj) for obj in (a, b, c)}
    assert len({id(job) for job in jobs.values()}) == 3
    connection = jobs["A"].worker.connection  # one connection for the press: no waiting in tests
    connection.poll_interval, connection.preview_interval = 0.01, 0.0

    pump_until(addon, lambda: all(job.state == "running" and job.previews for job in jobs.values()))
    for obj in (a, b, c):  # each live preview on its own object
        assert obj.nfsd_job.preview_image is not None and texture_node_image(obj) == obj.nfsd_job.preview_image
    assert len({obj.nfsd_job.preview_image.name for obj in (a, b, c)}) == 3
    a.name = "A renamed"  # mid-run: the job finds its object by identity
    for sent_job in fake_backend.jobs.values():  # now let each end two polls from here
        sent_job["total"] = sent_job["step"] + 2
    for job in jobs.values():
        addon.jobs.wait(job)
    assert [job.state for job in jobs.values()] == ["done"] * 3, [job.error for job in jobs.values()]

    sent = sorted(fake_backend.jobs.values(), key=lambda job: job["seq"])
    assert [job["id"] for job in sent] == [jobs[name].job_id for name in ("B", "A", "C")]  # active first
    for obj in (a, b, c):
        run = obj.nfsd_runs[0]
        assert len(obj.nfsd_runs) == 1 and run.job_id == addon.jobs.job_for(obj).job_id
        mesh = fake_backend.jobs[run.job_id]["mesh"]  # its own mesh went with its own job
        assert mesh["positions"].shape == (len(obj.data.vertices), 3)
        assert fake_backend.jobs[run.job_id]["settings"]["prompt"] == "a weathered bronze statue"
        assert obj.material_slots[0].material == run.material and texture_node_image(obj) == run.image
        assert tuple(run.image.size) == (64, 64) and not obj.nfsd_job.job_id
    assert len({obj.nfsd_runs[0].material.name for obj in (a, b, c)}) == 3
    assert len({obj.nfsd_runs[0].image.name for obj in (a, b, c)}) == 3
    assert jobs["A"].object_name == "A renamed" and addon.jobs.job_for(a) is jobs["A"]
    assert c.nfsd_runs[0].uv_map == "NFSD_UV"  # unwrapped in Blender, inside the press
    assert set(bpy.context.selected_objects) == {a, b, c} and bpy.context.active_object == b


def test_an_object_already_being_textured_is_left_out_not_sent_twice(addon, scene, prefs, fake_backend,
                                                                    fast_connection):
    prefs.backend_url = fake_backend.url
    fake_backend.total_steps = 10_000
    a, b = add_mesh("cube", name="A"), add_mesh("plane", name="B")
    running = addon.jobs.start_job(a, addon.properties.settings_dict(scene.nfsd), fast_connection)
    pump_until(addon, lambda: running.state == "running")
    fake_backend.total_steps = 4  # B's job ends
    select([a, b], a)
    found = addon.selection.plan(bpy.context)
    why = "'A' is already being textured; cancel that job first"
    assert found.objects == [b] and found.left_out == [(a, why)]
    layout = draw_panel(addon)
    assert layout.buttons["nfsd.texture_selected"] == "Texture Selected"
    assert ("label", f"Left out: {why}", "INFO") in layout.log
    assert ("operator", "nfsd.cancel_all") not in layout.log  # the active object's job has Cancel
    assert bpy.ops.nfsd.texture_selected() == {"FINISHED"}
    assert addon.jobs.job_for(a) is running
    addon.jobs.job_for(b).worker.connection.poll_interval = 0.01
    addon.jobs.wait(addon.jobs.job_for(b))
    assert len(fake_backend.jobs) == 2 and len(b.nfsd_runs) == 1 and running.active
    assert [job["mesh"]["positions"].shape[0] for job in fake_backend.jobs.values()] == [8, 4]
    select([a], a)  # A alone: nothing to send
    assert not bpy.ops.nfsd.texture_selected.poll()
    assert addon.selection.plan(bpy.context).reason == why


def test_a_selection_with_a_light_textures_the_meshes_and_notes_the_light(addon, scene, prefs, fake_backend):
    prefs.backend_url = fake_backend.url
    a, b = add_mesh("cube", name="A"), add_mesh("plane", name="B")
    bpy.ops.object.light_add(type="POINT")
    light = bpy.context.active_object
    select([a, b, light], light)
    layout = draw_panel(addon)
    assert layout.buttons["nfsd.texture_selected"] == "Texture 2 objects"
    assert ("label", "Left out: 'Point' is not a mesh (it is a light)", "INFO") in layout.log
    assert bpy.ops.nfsd.texture_selected() == {"FINISHED"}
    started = [addon.jobs.job_for(obj) for obj in (a, b)]
    started[0].worker.connection.poll_interval = 0.01
    for job in started:
        addon.jobs.wait(job)
    assert [job.state for job in started] == ["done", "done"] and len(fake_backend.jobs) == 2
    assert addon.jobs.job_for(light) is None and len(a.nfsd_runs) == len(b.nfsd_runs) == 1


def test_linked_duplicates_in_one_selection_are_textured_once(addon, scene):
    a = add_mesh("cube", name="A")
    twin = a.copy()  # Alt+D: the same mesh
    bpy.context.collection.objects.link(twin)
    select([a, twin], a)
    found = addon.selection.plan(bpy.context)
    assert found.objects == [a] and len(found.left_out) == 1 and "shares its mesh with 'A'" in found.left_out[0][1]


def test_cancel_all_cancels_the_selections_jobs_and_puts_each_object_back(addon, scene, fake_backend,
                                                                          fast_connection):
    fake_backend.total_steps = 10_000
    objects = three_meshes()
    started, problems = addon.selection.texture(objects, addon.properties.settings_dict(scene.nfsd),
                                                fast_connection, unwrap=True)
    assert problems == [] and [job.object_name for job in started] == ["A", "B", "C"]
    pump_until(addon, lambda: all(job.state == "running" and job.previews for job in started))
    assert all(obj.material_slots[0].material.name.startswith("NFSD: ") for obj in objects)

    layout = draw_panel(addon)  # "B" is active: its job, then the two others
    texts = layout.texts()
    assert "2 more running" in texts and ("operator", "nfsd.cancel_all") in layout.log
    assert any(text.startswith("A: step ") for text in texts) and any(text.startswith("C: step ") for text in texts)

    assert bpy.ops.nfsd.cancel_all() == {"FINISHED"}
    for job in started:
        addon.jobs.wait(job)
    assert [job.state for job in started] == ["cancelled"] * 3
    assert sorted(fake_backend.cancels) == sorted(job.job_id for job in started)
    for obj in objects:
        assert [slot.material.name for slot in obj.material_slots] == [f"{obj.name} paint"]
        assert len(obj.nfsd_runs) == 0 and not obj.nfsd_job.job_id
    assert "NFSD_UV" not in objects[2].data.uv_layers  # the unwrap its job made went with it
    assert nfsd_leftovers() == ([], []) and not bpy.ops.nfsd.cancel_all.poll()


def test_a_full_queue_sends_what_fits_and_says_so_for_the_rest(addon, scene):
    with FakeBackend(total_steps=3, default_model="/models/sd15", max_queue=2) as backend:
        backend.hold = True  # busy: what is queued stays queued
        connection = addon.jobs.Connection(url=backend.url, poll_interval=0.01, preview_interval=0.0)
        objects = three_meshes() + [add_mesh("cube", name="D")]
        select(objects, objects[0])
        started, _problems = addon.selection.texture(objects, addon.properties.settings_dict(scene.nfsd), connection)
        pump_until(addon, lambda: sum(job.state == "queued" for job in started) == 2
                   and sum(job.not_sent for job in started) == 2)
        assert [job.not_sent for job in started] == [False, False, True, True]  # in the selection's order
        assert len(backend.jobs) == 2 and backend.refused == 1  # "D" was not even tried
        for job in started[2:]:
            assert job.state == "failed" and job.error.startswith(
                "Not sent: the queue is full (2 jobs waiting, this server's limit is 2)")
        assert [slot.material.name for slot in objects[2].material_slots] == ["C paint"]  # left as it was
        assert "NFSD_UV" not in objects[2].data.uv_layers and not objects[2].nfsd_job.job_id
        lines = addon.selection.others_lines(bpy.context)  # "A" active and queued
        assert lines[0] == "1 more queued, 2 not sent (the backend's queue was full)"
        assert "C: not sent: the backend's queue was full" in lines

        backend.hold = False
        for job in started:
            addon.jobs.wait(job)
        assert [job.state for job in started[:2]] == ["done", "done"]
        assert len(objects[0].nfsd_runs) == len(objects[1].nfsd_runs) == 1 and len(objects[2].nfsd_runs) == 0


def test_one_press_is_one_undo_step_taken_before_anything_is_sent(addon, scene, fake_backend, fast_connection,
                                                                 monkeypatch):
    objects = three_meshes()
    pushed = []
    monkeypatch.setattr(addon.scene_state, "push_undo", lambda message: pushed.append(
        (message, "NFSD_UV" in objects[2].data.uv_layers, len(fake_backend.jobs))))
    started, _problems = addon.selection.texture(objects, addon.properties.settings_dict(scene.nfsd),
                                                 fast_connection, unwrap=True)
    assert pushed == [("NFSD: send 3 objects", True, 0)]
    for job in started:
        addon.jobs.wait(job)
    assert [job.state for job in started] == ["done"] * 3


def test_cancelling_a_job_waiting_for_its_turn_never_sends_it(addon, scene, fake_backend, fast_connection):
    turns = addon.submit_turns.SubmitTurns()
    first = turns.ticket()  # an upload in progress holds the first turn
    a = add_mesh("cube", name="A")
    job = addon.jobs.prepare_job(a, addon.properties.settings_dict(scene.nfsd), fast_connection, turns=turns)
    job.start()
    pump_until(addon, lambda: job.phase.startswith("Waiting to upload"))
    assert addon.jobs.cancel(a)
    addon.jobs.wait(job)
    turns.done(first)
    assert job.state == "cancelled" and fake_backend.jobs == {} and not a.nfsd_job.job_id


def test_a_save_mid_run_keeps_every_objects_materials_and_each_job_reattaches(
        addon, scene, fake_backend, fast_connection, tmp_path):
    fake_backend.total_steps = 10_000
    objects = three_meshes()
    started, _problems = addon.selection.texture(objects, addon.properties.settings_dict(scene.nfsd),
                                                 fast_connection)
    pump_until(addon, lambda: all(job.state == "running" and job.previews for job in started))
    path = str(tmp_path / "three_mid_run.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    bpy.ops.wm.open_mainfile(filepath=path)
    assert all(fake_backend.jobs[job.job_id]["state"] == "running" for job in started)  # none cancelled
    assert nfsd_leftovers() == ([], [])
    reopened = [bpy.data.objects[name] for name in ("A", "B", "C")]
    for obj, job in zip(reopened, started):
        assert [slot.material.name for slot in obj.material_slots] == [f"{obj.name} paint"]
        assert obj.nfsd_job.job_id == job.job_id
        fake_backend.jobs[job.job_id]["total"] = fake_backend.jobs[job.job_id]["step"] + 2
    watched = [addon.jobs.reattach(obj, fast_connection) for obj in reopened]
    for job in watched:
        addon.jobs.wait(job)
    for obj, job in zip(reopened, started):
        assert [run.job_id for run in obj.nfsd_runs] == [job.job_id]
        assert obj.material_slots[0].material == obj.nfsd_runs[0].material


@pytest.mark.parametrize("count, text", [(1, "Texture Selected"), (2, "Texture 2 objects")])
def test_the_button_says_how_many_objects_it_textures(addon, scene, count, text):
    objects = [add_mesh("cube", name=f"M{n}") for n in range(count)]
    select(objects, objects[0])
    assert addon.selection.button_text(addon.selection.plan(bpy.context)) == text
