# SPDX-License-Identifier: GPL-3.0-or-later
"""Saving and opening files while jobs run.

- Before a save, each running job's preview comes off its object (the artist's materials go back on
  the slots; the preview material and unsaved image lose their users, so they are not written);
  after the save it goes back on. A file saved mid-run reopens looking as it did before the run.
- An autosave or crash file may still hold a preview: when a file is opened, every object with a
  job record gets its own materials back, and the panel offers to reattach the job (its id is in
  the record) or to forget it.
- Opening another file, or quitting Blender (jobs.shutdown), cancels the jobs of the closed file
  except those saved while they ran, which keep running on the backend for the saved file to
  reattach. A job counts as saved once a save wrote its backend id into the file.
"""

import bpy

from . import duplicates, jobs, preview, scene_state

_stashed: list = []  # (session_uid, nfsd_key, what preview.detach_for_save returned)


def _objects_with_running_jobs():
    for job in jobs.all_jobs():
        if job.active or job.pending_result is not None:
            obj = scene_state.find_object(job.object_uid, job.object_key)
            if obj is not None:
                yield job, obj


@bpy.app.handlers.persistent
def before_save(*_args) -> None:
    _stashed.clear()
    jobs.separate_copies()  # the file never holds two objects claiming one job
    for job, obj in _objects_with_running_jobs():
        if obj.nfsd_job.job_id:  # else the file has nothing to reattach: the job is not kept for it
            job.saved = True
        stashed = preview.detach_for_save(obj)
        if stashed is not None:
            _stashed.append((job.object_uid, job.object_key, stashed))


@bpy.app.handlers.persistent
def after_save(*_args) -> None:
    for uid, key, stashed in _stashed:
        obj = scene_state.find_object(uid, key)
        if obj is not None:
            preview.reattach_after_save(obj, stashed)
    _stashed.clear()


@bpy.app.handlers.persistent
def before_load(*_args) -> None:
    _stashed.clear()
    jobs.close_file()


@bpy.app.handlers.persistent
def after_load(*_args) -> None:
    jobs.separate_copies()
    duplicates.stamp_all()
    for obj in pending_objects():
        preview.drop_preview(obj)


def pending_objects() -> list:
    """Objects carrying the record of a job that no running job watches (a reopened file)."""
    found = []
    for obj in bpy.data.objects:
        record = getattr(obj, "nfsd_job", None)
        if record is None or not record.job_id or jobs.is_copy(obj):
            continue
        job = jobs.job_for(obj)
        if job is None or (not job.active and job.pending_result is None):
            found.append(obj)
    return found


HANDLERS = (("save_pre", before_save), ("save_post", after_save), ("load_pre", before_load),
            ("load_post", after_load))


def register() -> None:
    for name, handler in HANDLERS:
        handlers = getattr(bpy.app.handlers, name)
        if handler not in handlers:
            handlers.append(handler)


def unregister() -> None:
    for name, handler in HANDLERS:
        handlers = getattr(bpy.app.handlers, name)
        if handler in handlers:
            handlers.remove(handler)
