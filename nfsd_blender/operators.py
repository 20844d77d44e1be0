# SPDX-License-Identifier: GPL-3.0-or-later
"""Texturing operators (Texture, Continue, Cancel, Resubmit, Reattach, Forget) and the timer that
pumps job events; thin wrappers that read the context and call jobs."""

import random
import time

import bpy

from . import backend_status, estimate, jobs, mesh_io, preferences, properties, selection


def continue_problem(context) -> str | None:
    """Why "Continue" is unavailable for the active object, or None."""
    obj = getattr(context, "active_object", None)
    faces_only = context.scene.nfsd.selected_faces_only
    problem = mesh_io.mesh_problem(obj, edit_mode_ok=faces_only)
    if problem:
        return problem
    if len(obj.nfsd_runs) == 0 or jobs.is_copy(obj):  # a copy's runs are its original's
        return f"'{obj.name}' has no NFSD texture to continue from yet"
    return jobs.send_problem(obj, properties.settings_dict(context.scene.nfsd), continuing=True,
                             faces_only=faces_only)


def continue_note(context) -> str | None:
    """What Continue keeps from the run it continues, when that differs from the settings."""
    obj = getattr(context, "active_object", None)
    if obj is None or not len(getattr(obj, "nfsd_runs", ())):
        return None
    run = obj.nfsd_runs[min(obj.nfsd_run_index, len(obj.nfsd_runs) - 1)]
    size = run.image.size[0] if run.image is not None else run.texture_size
    if size and size != int(context.scene.nfsd.texture_size):
        return f"Continue keeps this run's {size} px texture (not {context.scene.nfsd.texture_size} px)"
    return None


def ensure_timer() -> None:
    """Run :func:`timer_tick` while the add-on is enabled (idempotent)."""
    if not bpy.app.timers.is_registered(timer_tick):
        bpy.app.timers.register(timer_tick, first_interval=0.1, persistent=True)


HEALTH_REFRESH_SECONDS = 15.0


def timer_tick() -> float:
    """The main-thread pump: apply what job threads reported, redraw what shows it, and keep
    the backend line fresh while the panel is on screen."""
    if jobs.process_events() | estimate.take_changed():  # both: each takes what it reported
        tag_redraw()
    if (backend_status.status_wanted_recently()
            and time.monotonic() - backend_status.backend_checked_at() > HEALTH_REFRESH_SECONDS):
        try:
            backend_status.refresh_backend_status(preferences.connection())
        except KeyError:  # the add-on is being disabled
            return None
    return 0.2 if any(job.active for job in jobs.all_jobs()) else 1.0


def _active_object(context):
    return getattr(context, "active_object", None)


def tag_redraw() -> None:
    wm = getattr(bpy.context, "window_manager", None)
    for window in (wm.windows if wm else []):
        for area in window.screen.areas:
            area.tag_redraw()


class NFSD_OT_texture_selected(bpy.types.Operator):
    """Texture each selected mesh from the prompt on the NFSD backend, one job per object"""

    bl_idname = "nfsd.texture_selected"
    bl_label = "Texture Selected"

    @classmethod
    def poll(cls, context):
        reason = selection.plan(context).reason
        if reason:
            cls.poll_message_set(reason)
        return reason is None

    def execute(self, context):
        found = selection.plan(context)
        if found.reason:
            self.report({"ERROR"}, found.reason)
            return {"CANCELLED"}
        settings = context.scene.nfsd
        started, problems = selection.texture(
            found.objects, properties.settings_dict(settings), preferences.connection(context),
            unwrap=settings.unwrap_in_blender, apply_into=settings.apply_into_material,
            faces_only=settings.selected_faces_only)
        ensure_timer()
        skipped = [why for _obj, why in found.left_out] + problems
        names = ", ".join(job.object_name for job in started)
        if not started:
            self.report({"ERROR"}, "; ".join(skipped))
            return {"CANCELLED"}
        if skipped:  # Blender shows one report: the left out in the same line
            self.report({"WARNING"}, f"NFSD: texturing {names}. Left out: " + "; ".join(skipped))
        else:
            self.report({"INFO"}, f"NFSD: texturing {names}")
        return {"FINISHED"}


class NFSD_OT_continue(bpy.types.Operator):
    """Start a new run from the active object's current NFSD texture instead of from scratch"""

    bl_idname = "nfsd.continue_texture"
    bl_label = "Continue"

    @classmethod
    def poll(cls, context):
        reason = continue_problem(context)
        if reason:
            cls.poll_message_set(reason)
        return reason is None

    def execute(self, context):
        obj = context.active_object
        run = obj.nfsd_runs[min(obj.nfsd_run_index, len(obj.nfsd_runs) - 1)]
        try:
            jobs.start_job(obj, properties.settings_dict(context.scene.nfsd), preferences.connection(context),
                           continue_from=run, apply_into=context.scene.nfsd.apply_into_material,
                           faces_only=context.scene.nfsd.selected_faces_only)
        except ValueError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        note = continue_note(context)
        if note:
            self.report({"INFO"}, note)
        ensure_timer()
        return {"FINISHED"}


class NFSD_OT_cancel(bpy.types.Operator):
    """Cancel the active object's NFSD job"""

    bl_idname = "nfsd.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        obj = getattr(context, "active_object", None)
        job = jobs.job_for(obj) if obj is not None else None
        return job is not None and job.active

    def execute(self, context):
        jobs.cancel(context.active_object)
        return {"FINISHED"}


class NFSD_OT_cancel_all(bpy.types.Operator):
    """Cancel the NFSD jobs of every selected object"""

    bl_idname = "nfsd.cancel_all"
    bl_label = "Cancel All"

    @classmethod
    def poll(cls, context):
        return selection.cancel_all_count(context) > 0

    def execute(self, context):
        count = selection.cancel_all(context)
        self.report({"INFO"}, f"NFSD: cancelling {count} job(s)")
        return {"FINISHED"}


class NFSD_OT_resubmit(bpy.types.Operator):
    """Run the job the backend lost when it stopped again, with the same inputs"""

    bl_idname = "nfsd.resubmit"
    bl_label = "Resubmit"

    @classmethod
    def poll(cls, context):
        obj = _active_object(context)
        job = jobs.job_for(obj) if obj is not None else None
        return job is not None and job.state == "interrupted"

    def execute(self, context):
        try:
            jobs.resubmit(context.active_object, preferences.connection(context))
        except ValueError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        ensure_timer()
        return {"FINISHED"}


class NFSD_OT_reattach(bpy.types.Operator):
    """Watch the job this object had when the file was saved: apply its result when it is done"""

    bl_idname = "nfsd.reattach"
    bl_label = "Reattach"

    @classmethod
    def poll(cls, context):
        obj = _active_object(context)
        return (obj is not None and bool(obj.nfsd_job.job_id) and not jobs.is_copy(obj)
                and not (jobs.job_for(obj) and jobs.job_for(obj).active))

    def execute(self, context):
        try:
            jobs.reattach(context.active_object, preferences.connection(context))
        except ValueError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        ensure_timer()
        return {"FINISHED"}


class NFSD_OT_forget(bpy.types.Operator):
    """Forget the job this object had when the file was saved; the object stays as it is"""

    bl_idname = "nfsd.forget"
    bl_label = "Forget"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return NFSD_OT_reattach.poll(context)

    def execute(self, context):
        jobs.forget(context.active_object)
        return {"FINISHED"}


class NFSD_OT_error_details(bpy.types.Operator):
    """The whole message of the active object's failed job"""

    bl_idname = "nfsd.error_details"
    bl_label = "Details"

    @classmethod
    def poll(cls, context):
        return bool(_job_error(context))

    @classmethod
    def description(cls, context, _properties):
        return _job_error(context) or cls.__doc__

    def execute(self, context):
        self.report({"WARNING"}, _job_error(context))  # the Info editor keeps it, to read or copy
        return {"FINISHED"}


def _job_error(context) -> str:
    obj = _active_object(context)
    job = jobs.job_for(obj) if obj is not None else None
    return job.error if job is not None and job.state in ("failed", "interrupted") else ""


class NFSD_OT_randomize_seed(bpy.types.Operator):
    """Pick a new random seed"""

    bl_idname = "nfsd.randomize_seed"
    bl_label = "Randomize Seed"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        context.scene.nfsd.seed = random.randrange(0, 2 ** 31 - 1)
        return {"FINISHED"}


classes = (NFSD_OT_texture_selected, NFSD_OT_continue, NFSD_OT_cancel, NFSD_OT_cancel_all, NFSD_OT_resubmit,
           NFSD_OT_reattach, NFSD_OT_forget, NFSD_OT_error_details, NFSD_OT_randomize_seed)


_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register_classes()
    ensure_timer()


def unregister() -> None:
    if bpy.app.timers.is_registered(timer_tick):
        bpy.app.timers.unregister(timer_tick)
    _unregister_classes()
