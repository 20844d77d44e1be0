# SPDX-License-Identifier: GPL-3.0-or-later
"""The artist's work is never lost: materials and face assignments survive runs, saves and reloads;
a failed, cancelled or orphaned job leaves the scene as it was; objects are tracked by identity."""

import time

import addon_utils
import bpy
import numpy as np
import pytest

from conftest import add_mesh

FACES = [0, 1, 0, 1, 1, 0]  # the cube's six faces alternate between its two materials


def two_material_cube(name="Crate"):
    """A cube with "Wood" (Principled BSDF fed by an image texture) and "Metal", faces alternating."""
    obj = add_mesh("cube", name=name)
    wood = bpy.data.materials.new("Wood")
    if bpy.app.version < (5, 0, 0):
        wood.use_nodes = True
    nodes = wood.node_tree.nodes
    grain = nodes.new("ShaderNodeTexImage")
    grain.image = bpy.data.images.new("wood grain", 8, 8)
    grain.image.pack()
    bsdf = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
    bsdf.inputs["Roughness"].default_value = 0.3
    wood.node_tree.links.new(grain.outputs["Color"], bsdf.inputs["Base Color"])
    metal = bpy.data.materials.new("Metal")
    obj.data.materials.append(wood)
    obj.data.materials.append(metal)
    obj.data.polygons.foreach_set("material_index", np.array(FACES, np.int32))
    return obj


def face_materials(obj):
    indices = np.zeros(len(obj.data.polygons), np.int32)
    obj.data.polygons.foreach_get("material_index", indices)
    return indices.tolist()


def slot_names(obj):
    return [slot.material.name if slot.material else None for slot in obj.material_slots]


def run_until_previewed(addon, job, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not (job.state == "running" and job.previews) and time.monotonic() < deadline:
        addon.jobs.process_events()
        time.sleep(0.01)
    assert job.state == "running" and job.previews, job.error


def nfsd_leftovers():
    return ([m.name for m in bpy.data.materials if m.get("nfsd")],
            [i.name for i in bpy.data.images if i.get("nfsd")])


def start(addon, scene, obj, connection, **kwargs):
    return addon.jobs.start_job(obj, addon.properties.settings_dict(scene.nfsd), connection, **kwargs)


def test_two_materials_survive_texturing_save_and_reload_and_original_restores_them(
        addon, scene, fast_connection, tmp_path):
    obj = two_material_cube()
    addon.jobs.wait(start(addon, scene, obj, fast_connection))
    assert slot_names(obj) == ["NFSD: a weathered bronze statue"] * 2 and face_materials(obj) == FACES
    path = str(tmp_path / "textured.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    bpy.ops.wm.open_mainfile(filepath=path)

    obj = bpy.data.objects["Crate"]
    assert {"Wood", "Metal"} <= {m.name for m in bpy.data.materials}  # not dropped with zero users
    assert bpy.ops.nfsd.restore_original.poll()
    addon.results.restore_original(obj)
    assert slot_names(obj) == ["Wood", "Metal"] and face_materials(obj) == FACES
    grain = next(n for n in obj.material_slots[0].material.node_tree.nodes if n.type == "TEX_IMAGE")
    assert grain.image.name == "wood grain"
    addon.results.apply_run(obj, 0)  # and the run is one click away again
    assert slot_names(obj) == ["NFSD: a weathered bronze statue"] * 2


def test_apply_into_existing_material_feeds_base_color_of_a_copy_and_keeps_the_rest(addon, scene, fast_connection):
    obj = two_material_cube()
    obj.active_material_index = 0  # Wood
    addon.jobs.wait(start(addon, scene, obj, fast_connection, apply_into=True))
    run = obj.nfsd_runs[0]
    assert slot_names(obj) == ["Wood + NFSD: a weathered bronze statue", "Metal"] and face_materials(obj) == FACES
    bsdf = next(n for n in run.material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    assert bsdf.inputs["Base Color"].links[0].from_node.image == run.image
    assert bsdf.inputs["Roughness"].default_value == pytest.approx(0.3)
    wood = bpy.data.materials["Wood"]  # the artist's own material is untouched
    wood_bsdf = next(n for n in wood.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    assert wood_bsdf.inputs["Base Color"].links[0].from_node.image.name == "wood grain"
    assert not [m for m in bpy.data.materials if m.name == "NFSD: a weathered bronze statue"]  # no preview left
    addon.results.restore_original(obj)
    assert slot_names(obj) == ["Wood", "Metal"]
    addon.results.apply_run(obj, 0)
    assert slot_names(obj) == ["Wood + NFSD: a weathered bronze statue", "Metal"]


def test_the_applied_texture_is_the_materials_active_node_and_the_panel_names_the_material(
        addon, scene, fast_connection):
    from types import SimpleNamespace

    from conftest import RecordingLayout

    def panel_log():
        layout = RecordingLayout()
        addon.ui.NFSD_PT_main.draw(SimpleNamespace(layout=layout), bpy.context)
        return layout.log

    obj = two_material_cube()
    obj.active_material_index = 0
    scene.nfsd.apply_into_material = True
    assert ("label", "Into a copy of 'Wood' (Base Color)", "MATERIAL") in panel_log()
    addon.jobs.wait(start(addon, scene, obj, fast_connection, apply_into=True))
    first = obj.nfsd_runs[0]
    active = first.material.node_tree.nodes.active  # Workbench's Texture colour, Texture Paint, bake
    assert active.type == "TEX_IMAGE" and active.image == first.image
    # The slot now shows "Wood + NFSD: ...": the panel, and the next run, still mean Wood.
    assert ("label", "Into a copy of 'Wood' (Base Color)", "MATERIAL") in panel_log()
    scene.nfsd.prompt = "green copper"
    addon.jobs.wait(start(addon, scene, obj, fast_connection, apply_into=True))
    second = obj.nfsd_runs[1]
    assert second.target_material == bpy.data.materials["Wood"]
    assert slot_names(obj) == ["Wood + NFSD: green copper", "Metal"] and face_materials(obj) == FACES
    assert second.material.node_tree.nodes.active.image == second.image

    obj.active_material_index = 1  # Metal: a material without nodes (Blender 4.2), so no Principled BSDF
    if bpy.data.materials["Metal"].node_tree is not None:  # 5.0: materials always have nodes
        tree = bpy.data.materials["Metal"].node_tree
        tree.nodes.remove(next(n for n in tree.nodes if n.type == "BSDF_PRINCIPLED"))
    assert ("label", "'Metal' has no Principled BSDF: a new NFSD material instead", "MATERIAL") in panel_log()
    scene.nfsd.apply_into_material = False
    addon.jobs.wait(start(addon, scene, obj, fast_connection))
    third = obj.nfsd_runs[2]
    assert third.material.node_tree.nodes.active.image == third.image  # a new NFSD material too


def test_a_save_during_a_run_reopens_with_the_artists_materials_and_reattaches(
        addon, scene, fast_connection, fake_backend, tmp_path):
    fake_backend.total_steps = 10_000
    obj = two_material_cube()
    job = start(addon, scene, obj, fast_connection)
    run_until_previewed(addon, job)
    assert slot_names(obj) == ["NFSD: a weathered bronze statue"] * 2
    path = str(tmp_path / "mid_run.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    assert slot_names(obj) == ["NFSD: a weathered bronze statue"] * 2  # the preview is back after the save

    bpy.ops.wm.open_mainfile(filepath=path)
    assert fake_backend.jobs[job.job_id]["state"] == "running"  # a saved job is not cancelled on close
    obj = bpy.data.objects["Crate"]
    assert slot_names(obj) == ["Wood", "Metal"] and face_materials(obj) == FACES
    images = [n.image for slot in obj.material_slots if slot.material.node_tree
              for n in slot.material.node_tree.nodes if n.type == "TEX_IMAGE" and n.image]
    assert [image.name for image in images] == ["wood grain"]  # the artist's; no unsaved preview image
    assert nfsd_leftovers() == ([], [])
    assert obj.nfsd_job.job_id == job.job_id and bpy.ops.nfsd.reattach.poll()

    fake_backend.jobs[job.job_id]["total"] = fake_backend.jobs[job.job_id]["step"] + 2
    reattached = addon.jobs.wait(addon.jobs.reattach(obj, fast_connection))
    assert reattached.state == "done", reattached.error
    assert len(obj.nfsd_runs) == 1 and obj.nfsd_runs[0].job_id == job.job_id
    assert slot_names(obj) == ["NFSD: a weathered bronze statue"] * 2 and not obj.nfsd_job.job_id
    addon.results.restore_original(obj)
    assert slot_names(obj) == ["Wood", "Metal"] and face_materials(obj) == FACES


def quit_blender():
    """What Blender runs when it quits (wm_exit: ``addon_utils.disable_all()``: every add-on's
    unregister), then the add-ons enabled again for the tests that follow."""
    enabled = list(bpy.context.preferences.addons.keys())
    try:
        addon_utils.disable_all()
    finally:
        for name in enabled:
            addon_utils.enable(name)


def test_quitting_blender_keeps_a_saved_files_job_running_and_the_reopened_file_applies_it(
        addon, scene, fast_connection, fake_backend, tmp_path):
    fake_backend.total_steps = 10_000
    obj = two_material_cube()
    job = start(addon, scene, obj, fast_connection)
    run_until_previewed(addon, job)
    path = str(tmp_path / "saved_then_quit.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)

    quit_blender()
    job.worker.thread.join(5)
    assert not job.worker.thread.is_alive() and addon.jobs.all_jobs() == []
    assert fake_backend.cancels == [] and fake_backend.jobs[job.job_id]["state"] == "running"
    assert slot_names(obj) == ["Wood", "Metal"] and nfsd_leftovers() == ([], [])  # the preview came off

    bpy.ops.wm.open_mainfile(filepath=path)
    obj = bpy.data.objects["Crate"]
    assert obj.nfsd_job.job_id == job.job_id and bpy.ops.nfsd.reattach.poll()
    fake_backend.jobs[job.job_id]["total"] = fake_backend.jobs[job.job_id]["step"] + 2
    reattached = addon.jobs.wait(addon.jobs.reattach(obj, fast_connection))
    assert reattached.state == "done", reattached.error
    assert [run.job_id for run in obj.nfsd_runs] == [job.job_id] and not obj.nfsd_job.job_id
    assert slot_names(obj) == ["NFSD: a weathered bronze statue"] * 2 and face_materials(obj) == FACES
    assert fake_backend.cancels == []


def test_quitting_blender_cancels_the_job_of_an_unsaved_file_and_puts_the_object_back(
        addon, scene, fast_connection, fake_backend):
    fake_backend.total_steps = 10_000
    obj = two_material_cube()
    job = start(addon, scene, obj, fast_connection)
    run_until_previewed(addon, job)
    quit_blender()
    job.worker.thread.join(5)
    assert fake_backend.cancels == [job.job_id] and fake_backend.jobs[job.job_id]["state"] == "cancelled"
    assert slot_names(obj) == ["Wood", "Metal"] and face_materials(obj) == FACES
    assert nfsd_leftovers() == ([], []) and not obj.nfsd_job.job_id


def test_a_file_written_without_the_save_handlers_reopens_with_the_artists_materials(
        addon, scene, fast_connection, fake_backend, tmp_path):
    # An autosave or crash file is written without save_pre: it holds the preview.
    fake_backend.total_steps = 10_000
    obj = two_material_cube()
    job = start(addon, scene, obj, fast_connection)
    run_until_previewed(addon, job)
    path = str(tmp_path / "autosave.blend")
    bpy.app.handlers.save_pre.remove(addon.file_handlers.before_save)
    try:
        bpy.ops.wm.save_as_mainfile(filepath=path, copy=True)
    finally:
        bpy.app.handlers.save_pre.append(addon.file_handlers.before_save)
    bpy.ops.wm.open_mainfile(filepath=path)
    obj = bpy.data.objects["Crate"]
    assert slot_names(obj) == ["Wood", "Metal"] and face_materials(obj) == FACES
    assert nfsd_leftovers() == ([], [])
    assert bpy.ops.nfsd.forget.poll()
    addon.jobs.forget(obj)
    assert not obj.nfsd_job.job_id and slot_names(obj) == ["Wood", "Metal"]


def test_renaming_the_object_mid_run_still_gets_the_result(addon, scene, fast_connection, fake_backend):
    fake_backend.total_steps = 6
    obj = two_material_cube()
    job = start(addon, scene, obj, fast_connection)
    run_until_previewed(addon, job)
    obj.name = "Renamed Crate"
    addon.jobs.wait(job)
    assert job.state == "done", job.error
    assert len(obj.nfsd_runs) == 1 and job.object_name == "Renamed Crate"
    assert addon.jobs.job_for(obj) is job


def test_a_duplicate_made_mid_run_is_not_taken_for_the_original(addon, scene, fast_connection, fake_backend):
    fake_backend.total_steps = 6
    obj = add_mesh("cube", name="Crate")
    job = start(addon, scene, obj, fast_connection)
    twin = obj.copy()  # Shift+D copies the add-on's properties too
    twin.data = obj.data.copy()
    scene.collection.objects.link(twin)
    assert addon.jobs.job_for(twin) is None
    addon.jobs.wait(job)
    assert job.state == "done" and len(obj.nfsd_runs) == 1 and len(twin.nfsd_runs) == 0


def test_deleting_the_object_mid_run_cancels_the_job_and_leaves_nothing(addon, scene, fast_connection, fake_backend):
    fake_backend.total_steps = 10_000
    obj = add_mesh("cube", uvs=False, name="Doomed")
    job = start(addon, scene, obj, fast_connection)
    run_until_previewed(addon, job)
    deadline = time.monotonic() + 10  # the backend's unwrap is on the mesh and the preview shows
    while not len(obj.material_slots) and time.monotonic() < deadline:
        addon.jobs.process_events()
        time.sleep(0.01)
    assert nfsd_leftovers() != ([], [])
    mesh = obj.data
    bpy.data.objects.remove(obj)
    addon.jobs.wait(job)
    assert job.state == "cancelled" and fake_backend.jobs[job.job_id]["state"] == "cancelled"
    assert nfsd_leftovers() == ([], [])
    assert [m for m in mesh.materials if m is not None] == []


def test_a_failed_job_leaves_the_scene_as_it_was(addon, scene, fast_connection):
    scene.nfsd.prompt = "fail please"
    obj = add_mesh("cube", uvs=False)  # Unwrap in Blender makes "NFSD_UV" before sending
    old = bpy.data.materials.new("Artist's paint")
    obj.data.materials.append(old)
    job = addon.jobs.wait(start(addon, scene, obj, fast_connection, unwrap=True))
    assert job.state == "failed"
    assert len(obj.data.uv_layers) == 0 and slot_names(obj) == ["Artist's paint"]
    assert nfsd_leftovers() == ([], []) and not obj.nfsd_job.job_id


def test_a_cancelled_job_on_a_two_material_mesh_puts_slots_and_faces_back(addon, scene, fast_connection,
                                                                          fake_backend):
    fake_backend.total_steps = 10_000
    obj = two_material_cube()
    job = start(addon, scene, obj, fast_connection)
    run_until_previewed(addon, job)
    obj.data.polygons[0].material_index = 1  # even if something moved the faces meanwhile
    addon.jobs.cancel(obj)
    addon.jobs.wait(job)
    assert job.state == "cancelled"
    assert slot_names(obj) == ["Wood", "Metal"] and face_materials(obj) == FACES
    assert nfsd_leftovers() == ([], [])


def test_texture_pushes_one_undo_step_after_its_changes_and_before_sending(addon, scene, fast_connection,
                                                                            fake_backend, monkeypatch):
    pushed = []
    obj = add_mesh("cube", uvs=False)
    monkeypatch.setattr(addon.scene_state, "push_undo", lambda message: pushed.append(
        (message, "NFSD_UV" in obj.data.uv_layers, len(fake_backend.jobs))))
    job = start(addon, scene, obj, fast_connection, unwrap=True)
    assert pushed == [(f"NFSD: send '{obj.name}'", True, 0)]
    addon.jobs.wait(job)
    assert job.state == "done" and len(pushed) == 2  # applying the result is the second step


def test_undo_and_redo_of_the_send_step_take_back_and_redo_the_unwrap(addon, scene, fast_connection,
                                                                       fake_backend):
    fake_backend.total_steps = 10_000
    obj = add_mesh("cube", uvs=False, name="Undoable")
    bpy.ops.ed.undo_push(message="before")
    job = start(addon, scene, obj, fast_connection, unwrap=True)
    assert "NFSD_UV" in obj.data.uv_layers
    bpy.ops.ed.undo()
    assert "NFSD_UV" not in bpy.data.objects["Undoable"].data.uv_layers
    bpy.ops.ed.redo()  # only possible when the send was its own step
    assert "NFSD_UV" in bpy.data.objects["Undoable"].data.uv_layers
    addon.jobs.cancel(bpy.data.objects["Undoable"])
    addon.jobs.wait(job)
