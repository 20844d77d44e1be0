# SPDX-License-Identifier: GPL-3.0-or-later
"""The running jobs: start one for an object, pump their events into the scene, cancel, resubmit,
reattach after a reload.

The registry (one job per object, keyed by the object's ``nfsd_key``) is the add-on's only module
state besides the backend line. :func:`process_events` is the main-thread pump (called by a
``bpy.app.timers`` callback in Blender, directly by the tests, where timers never fire); it is the
only place where what a worker reported reaches ``bpy.data``. Objects are found by identity
(scene_state.find_object), so a renamed object still gets its result and a deleted one cancels its job.
"""

from __future__ import annotations

import json
import queue
import time

from . import (backend_status, duplicates, image_io, material_maps, mesh_io, mesh_write, preview, results,
               scene_state)
from .job import Job
from .submit_turns import SubmitTurns
from .worker import Connection  # noqa: F401  (the add-on's public name for it)

_jobs: dict[str, Job] = {}


def job_for(obj) -> Job | None:
    """The latest job of ``obj`` (running or finished), or None."""
    job = _jobs.get(obj.nfsd_key) if obj is not None and obj.nfsd_key else None
    if job is not None and job.object_uid is not None and job.object_uid != scene_state.session_uid(obj):
        return None  # a duplicate that copied the key of the object the job belongs to
    return job


def all_jobs() -> list[Job]:
    return list(_jobs.values())


def is_copy(obj) -> bool:
    """True when ``obj`` is a duplicate that still carries its original's key, record and runs
    (read only: panels and polls; :func:`separate_copies` clears them)."""
    job = _jobs.get(obj.nfsd_key) if obj is not None and obj.nfsd_key else None
    return obj is not None and duplicates.is_copy(obj, job.object_uid if job is not None else None)


def separate_copies(force: bool = True) -> list:
    """Give duplicates their own identity, without the original's job record and runs (duplicates)."""
    running = {key: job.object_uid for key, job in _jobs.items() if job.object_uid is not None}
    return duplicates.separate_copies(running, force=force)


def send_problem(obj, settings: dict, *, continuing: bool = False, faces_only: bool = False) -> str | None:
    """Why ``obj`` cannot be sent with ``settings`` now (a sentence for the panel), or None.
    ``continuing``: the run goes on from an earlier one (Continue); ``faces_only``: only the faces
    selected in Edit Mode are re-textured (sending from Edit Mode is then fine)."""
    problem = mesh_io.mesh_problem(obj, edit_mode_ok=faces_only)
    if problem:
        return problem
    running = job_for(obj)
    if running is not None and running.active:
        return f"'{obj.name}' is already being textured; cancel that job first"
    if obj.nfsd_job.job_id and not is_copy(obj):
        return f"'{obj.name}' has a job from before the file was closed: Reattach or Forget it first"
    if settings.get("mode") == "dds" and not continuing:
        return "Edit changes an existing NFSD texture: select a run under Earlier Runs and press Continue"
    if faces_only and not continuing:  # the faces left alone keep the continued run's texels
        return "Selected Faces Only changes part of an NFSD texture: select a run under Earlier Runs and press Continue"
    if faces_only and obj.mode == "EDIT" and not mesh_io.active_uv_name(obj):
        return f"'{obj.name}' has no UV map: leave Edit Mode so it can be unwrapped first"
    prompt = str(settings.get("prompt", "")).strip()
    if not prompt:
        return "Type a prompt first"
    return backend_status.prompt_problem(prompt, str(settings.get("model") or ""))


def start_job(obj, settings: dict, connection: Connection, *, continue_from=None, unwrap: bool = False,
              apply_into: bool = False, faces_only: bool = False) -> Job:
    """Send ``obj`` to the backend with API ``settings``; returns the started Job (see :func:`prepare_job`)."""
    job = prepare_job(obj, settings, connection, continue_from=continue_from, unwrap=unwrap,
                      apply_into=apply_into, faces_only=faces_only)
    scene_state.push_undo(f"NFSD: send '{obj.name}'")
    return job.start()  # after every bpy call above: the worker thread never overlaps them


def prepare_job(obj, settings: dict, connection: Connection, *, continue_from=None, unwrap: bool = False,
                apply_into: bool = False, faces_only: bool = False, turns: SubmitTurns | None = None) -> Job:
    """Get ``obj`` ready to be sent with API ``settings``: the registered Job, not started yet (the
    caller pushes the undo step, then calls ``job.start()``; several objects: all prepared first).

    ``continue_from``: an item of ``obj.nfsd_runs`` whose texture (and UV map) the new run starts
    from; a run that refined the shape sends its shape key's positions. ``unwrap``: a mesh without
    UVs gets a "NFSD_UV" map from Blender's Smart UV Project before it is sent. ``apply_into``: the
    result goes into a copy of the active material (results module doc). A texture-only run of an
    object with modifiers sends the evaluated mesh (what the artist sees); with offsets the base
    mesh. ``faces_only``: only the faces selected (in Edit Mode, where this may be started) are
    re-textured: the wire gets a ``face_mask`` and the base mesh is sent. In the "dds" (Edit) mode
    the continued run's prompt is the ``source_prompt``. Before anything changes, the object's
    state is recorded (scene_state). ``turns``: shared by the jobs of one press of Texture, which
    submit one by one (submit_turns). Raises ValueError (a sentence for the artist), with nothing
    changed, when the object cannot be sent.
    """
    separate_copies()  # a duplicate sent now must not take its original's record along
    problem = send_problem(obj, settings, continuing=continue_from is not None, faces_only=faces_only)
    if problem:
        raise ValueError(problem)
    mesh_io.sync_from_edit_mode(obj)  # "Selected faces only" may start in Edit Mode
    return _prepare(obj, settings, connection, continue_from, unwrap, apply_into, faces_only, turns)


def _prepare(obj, settings, connection, continue_from, unwrap, apply_into, faces_only, turns) -> Job:
    init_texture = None
    init_maps: dict = {}
    base_key = ""
    uv_map = mesh_io.active_uv_name(obj)
    if continue_from is not None:
        if continue_from.image is None:
            raise ValueError("That run's image is gone; texture from scratch instead")
        uv_map = continue_from.uv_map
        if uv_map not in obj.data.uv_layers:
            raise ValueError(f"'{obj.name}' lost the UV map '{uv_map}' the texture was made for")
        base_key = continue_from.shape_key
        if base_key:
            mesh_io.shape_key_data(obj, base_key)  # ValueError when the artist deleted it
        init_texture = image_io.image_rgba8(continue_from.image)
        # The new texture keeps the old one's size: that is what the backend starts from.
        settings = dict(settings, texture_size=int(init_texture.shape[1]))
        # A pbr run continues its whole material: its maps go along (material_maps.init_maps).
        init_maps = material_maps.init_maps(continue_from, settings, init_texture.shape)
        if settings.get("mode") == "dds":  # Edit: from what the continued run shows to the new prompt
            settings["source_prompt"] = continue_from.prompt

    record = obj.nfsd_job
    scene_state.capture(obj, record.before)
    if not scene_state.shows_nfsd(obj):  # the artist's own state: what "Original" puts back
        scene_state.capture(obj, obj.nfsd_original)
    created_uv_map = ""
    try:
        if continue_from is None and not uv_map and unwrap:
            uv_map = created_uv_map = mesh_io.smart_unwrap(obj)
        evaluated = bool(uv_map) and not settings.get("offsets") and not faces_only and mesh_io.has_modifiers(obj)
        wire = mesh_io.mesh_to_wire(obj, uv_map, base_key, evaluated=evaluated, selected_faces=faces_only)
    except ValueError:
        if created_uv_map:
            obj.data.uv_layers.remove(obj.data.uv_layers[created_uv_map])
        preview.discard(obj)
        raise
    if base_key:
        mesh_write.show_offsets_key(obj, base_key)  # the live preview goes on the shape that was sent
    loops = mesh_io.loop_triangles(obj.data)[1]
    job = Job(scene_state.session_uid(obj), scene_state.object_key(obj), obj.name, settings, connection,
              mesh_npz=wire, uv_map=uv_map, init_texture=init_texture, init_maps=init_maps, base_key=base_key,
              loops=loops, turns=turns)
    preview.begin(obj, job, uv_map=uv_map, base_key=base_key, created_uv_map=created_uv_map,
                  evaluated=evaluated, apply_into=apply_into)
    _jobs[job.object_key] = job
    return job


def resubmit(obj, connection: Connection) -> Job:
    """Run ``obj``'s interrupted job again on the backend (same inputs, new job id)."""
    old = job_for(obj)
    if old is None or old.state != "interrupted" or not old.job_id:
        raise ValueError(f"'{obj.name}' has no interrupted job to resubmit")
    # A UV map the failed job made was removed with it: then the backend's UVs come back again.
    uv_map = old.uv_map if old.uv_map in obj.data.uv_layers else ""
    return _watch(obj, old.settings, connection, uv_map=uv_map, base_key=old.base_key, loops=old.loops,
                  resubmit=old.job_id)


def reattach(obj, connection: Connection) -> Job:
    """Watch again the job recorded on ``obj`` (a file saved while it ran, opened again): a
    finished result is fetched and applied, a running job shows its progress."""
    record = obj.nfsd_job
    if not record.job_id:
        raise ValueError(f"'{obj.name}' has no job to reattach")
    settings = json.loads(record.settings or "{}")
    return _watch(obj, settings, connection, uv_map=record.uv_map, base_key=record.base_key,
                  watch=record.job_id)


def _watch(obj, settings, connection, *, uv_map, base_key, loops=None, watch="", resubmit=""):
    separate_copies()
    record = obj.nfsd_job
    if not record.before.captured:
        scene_state.capture(obj, record.before)
    job = Job(scene_state.session_uid(obj), scene_state.object_key(obj), obj.name, settings, connection,
              uv_map=uv_map, base_key=base_key, loops=loops, watch=watch, resubmit=resubmit)
    preview.begin(obj, job, uv_map=uv_map, base_key=base_key, created_uv_map=record.created_uv_map,
                  evaluated=record.evaluated, apply_into=record.apply_into_material)
    _jobs[job.object_key] = job
    return job.start()


def forget(obj) -> None:
    """Drop the job recorded on ``obj`` without reattaching; the object is left as before it."""
    preview.discard(obj)


def process_events(max_events: int = 50) -> bool:
    """Apply what the workers reported (main thread). Returns True if anything changed."""
    changed = bool(separate_copies(force=False))  # before a job's end could take a copy's materials
    for job in list(_jobs.values()):
        obj = None if job.object_gone else scene_state.find_object(job.object_uid, job.object_key)
        if obj is None and not job.object_gone and (job.active or job.pending_result is not None):
            _object_deleted(job)
            changed = True
        elif obj is not None:
            job.object_name = obj.name
        for _ in range(max_events):
            try:
                kind, payload = job.worker.events.get_nowait()
            except queue.Empty:
                break
            changed = True
            if obj is None:  # deleted: however the worker ended, the job was cancelled
                if kind in ("cancelled", "error", "interrupted", "not_sent"):
                    job.state, job.finished_at = "cancelled", time.monotonic()
                continue
            if kind == "preview":
                preview.show_png(job, obj, payload)
                continue
            job.take(kind, payload)
            if kind == "submitted":
                obj.nfsd_job.job_id = payload
            elif kind in ("error", "interrupted", "cancelled", "not_sent"):
                preview.discard(obj)
        if obj is not None and job.pending_uvs is not None:
            preview.apply_uvs(job, obj)
        if obj is not None and job.pending_result is not None:
            results.apply_pending(job, obj)
    if backend_status.take_changed():
        changed = True
    return changed


def _object_deleted(job: Job) -> None:
    for copy in [obj for obj in duplicates._objects() if obj.nfsd_key == job.object_key]:
        duplicates.make_independent(copy, None)  # a duplicate of the deleted object: its own materials back
    job.object_gone = True
    job.request_cancel()
    job.pending_result = job.pending_uvs = None
    if not job.active:
        job.state = "cancelled"
    job.error = f"'{job.object_name}' was deleted, so its job was cancelled"
    preview.discard_orphan(job)


def cancel(obj) -> bool:
    """Request cancellation of ``obj``'s running job; True if there was one."""
    separate_copies()  # the cancelled job's preview goes: a copy showing it gets its own materials first
    job = job_for(obj)
    if job is None or not job.active:
        return False
    job.request_cancel()
    return True


def wait(job: Job, timeout: float = 60.0) -> Job:
    """Process events until ``job`` finished (tests and scripts; blocks the calling thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process_events()
        if not job.active and job.pending_result is None and job.worker.events.empty():
            return job
        time.sleep(0.05)
    raise TimeoutError(f"job for '{job.object_name}' still {job.state} after {timeout} s")


def shutdown() -> None:
    """The add-on is being disabled; Blender's quit does this too (``addon_utils.disable_all()``).

    Nothing a saved file can pick up again is cancelled: a job whose object was saved while it ran
    is detached (it goes on on the backend; opening the file offers Reattach, which applies the
    result), and the preview comes off its object, which keeps the job record. A job of a file that
    was not saved while it ran is cancelled (no file could ever reattach it) and its object is put
    back as it was before the job. All are forgotten here."""
    for job in list(_jobs.values()):
        obj = None if job.object_gone else scene_state.find_object(job.object_uid, job.object_key)
        unfinished = job.active or job.pending_result is not None
        if job.saved and unfinished:
            job.detach()
            if obj is not None:
                preview.drop_preview(obj)
        else:
            job.request_cancel()
            if obj is not None and unfinished:
                preview.discard(obj)
    _jobs.clear()


def close_file() -> None:
    """Another file is being opened: jobs of a file saved while they ran keep running on the
    backend (the saved file reattaches them), the others are cancelled. All are forgotten here."""
    for job in _jobs.values():
        if job.saved and (job.active or job.pending_result is not None):
            job.detach()
        else:
            job.request_cancel()
    _jobs.clear()


def status_line() -> str:
    """The status bar's text: the running jobs, else the latest job's outcome for a minute."""
    active = [job for job in _jobs.values() if job.active]
    if active:
        job = active[0]
        more = f" (+{len(active) - 1} more)" if len(active) > 1 else ""
        return f"NFSD {job.object_name}: {job.status_text()}{more}"
    finished = [job for job in _jobs.values() if job.finished_at is not None]
    if finished:
        job = max(finished, key=lambda j: j.finished_at)
        if time.monotonic() - job.finished_at < 60.0:
            return f"NFSD {job.object_name}: {job.status_text()}"
    return ""
