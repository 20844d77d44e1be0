# SPDX-License-Identifier: GPL-3.0-or-later
"""Duplicates never inherit a job or run history: Shift+D, Alt+D and ``obj.copy()`` copy the
add-on's properties (identity key, job record, runs); the copy must start clean, be texturable, and
keep real materials when its original's job ends."""

from types import SimpleNamespace

import bpy
import pytest

from conftest import RecordingLayout
from test_scene_safety import (FACES, face_materials, nfsd_leftovers, run_until_previewed, slot_names, start,
                               two_material_cube)

SAVED_BOX = "This object's job ran when the file was saved"


def duplicate(obj, how: str):
    """``obj`` duplicated as an artist does it; the copy is the only selected object and active."""
    bpy.ops.object.select_all(action="DESELECT")
    obj.select_set(True)
    bpy.context.view_layer.objects.active = obj
    if how == "copy":  # a script's copy, with its own mesh like Shift+D
        twin = obj.copy()
        twin.data = obj.data.copy()
        bpy.context.scene.collection.objects.link(twin)
        obj.select_set(False)
        twin.select_set(True)
        bpy.context.view_layer.objects.active = twin
    else:
        assert bpy.ops.object.duplicate(linked=how == "alt_d") == {"FINISHED"}
        twin = bpy.context.active_object
    assert twin != obj and twin.nfsd_key == obj.nfsd_key  # Blender copied the add-on's properties
    return twin


def panel_texts(addon):
    layout = RecordingLayout()
    addon.ui.NFSD_PT_main.draw(SimpleNamespace(layout=layout), bpy.context)
    return layout.texts()


@pytest.mark.parametrize("how", ["shift_d", "alt_d", "copy"])
def test_a_copy_made_mid_run_starts_clean_and_keeps_real_materials_when_the_original_is_cancelled(
        addon, scene, fast_connection, fake_backend, how):
    fake_backend.total_steps = 10_000
    obj = two_material_cube()
    job = start(addon, scene, obj, fast_connection)
    run_until_previewed(addon, job)
    twin = duplicate(obj, how)
    assert twin.nfsd_job.job_id == job.job_id  # the record was copied along ...
    assert SAVED_BOX not in panel_texts(addon)  # ... but the copy is not offered its original's job
    assert bpy.ops.nfsd.texture_selected.poll() and not bpy.ops.nfsd.reattach.poll()

    addon.jobs.cancel(obj)
    addon.jobs.wait(job)
    assert job.state == "cancelled" and fake_backend.cancels == [job.job_id]
    assert slot_names(obj) == ["Wood", "Metal"] and face_materials(obj) == FACES
    assert slot_names(twin) == ["Wood", "Metal"] and face_materials(twin) == FACES  # no empty slot
    assert nfsd_leftovers() == ([], [])  # no orphan preview material or image
    assert not twin.nfsd_job.job_id and len(twin.nfsd_runs) == 0 and twin.nfsd_key != obj.nfsd_key

    fake_backend.total_steps = 3  # and the copy gets its own job and its own runs
    own = addon.jobs.wait(start(addon, scene, twin, fast_connection))
    assert own.state == "done", own.error
    assert len(twin.nfsd_runs) == 1 and len(obj.nfsd_runs) == 0 and addon.jobs.job_for(obj) is job


@pytest.mark.parametrize("how", ["shift_d", "alt_d"])
def test_a_copy_of_a_textured_object_has_no_run_history(addon, scene, fast_connection, how):
    obj = two_material_cube()
    assert addon.jobs.wait(start(addon, scene, obj, fast_connection)).state == "done"
    twin = duplicate(obj, how)
    assert len(twin.nfsd_runs) == 1  # copied along: the panel must not offer it
    assert not addon.ui.NFSD_PT_history.poll(bpy.context) and not bpy.ops.nfsd.continue_texture.poll()
    assert bpy.ops.nfsd.texture_selected.poll()
    addon.jobs.process_events()  # the pump (a timer in Blender) clears what the copy inherited
    assert len(twin.nfsd_runs) == 0 and twin.nfsd_key != obj.nfsd_key and len(obj.nfsd_runs) == 1
    assert slot_names(twin) == ["NFSD: a weathered bronze statue"] * 2  # it still looks like what was copied
    bpy.context.view_layer.objects.active = obj
    assert addon.ui.NFSD_PT_history.poll(bpy.context)


def test_a_copy_whose_original_is_deleted_mid_run_keeps_the_artists_materials(addon, scene, fast_connection,
                                                                              fake_backend):
    fake_backend.total_steps = 10_000
    obj = two_material_cube()
    job = start(addon, scene, obj, fast_connection)
    run_until_previewed(addon, job)
    twin = duplicate(obj, "shift_d")
    bpy.data.objects.remove(obj)
    addon.jobs.wait(job)
    assert job.state == "cancelled"
    assert slot_names(twin) == ["Wood", "Metal"] and face_materials(twin) == FACES
    assert nfsd_leftovers() == ([], []) and not twin.nfsd_job.job_id
