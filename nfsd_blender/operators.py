# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators: thin wrappers that read the context and call plain functions in jobs/mesh_io."""

import random
import threading
import time

import bpy
from bpy.props import IntProperty

from . import jobs, local_backend, mesh_io, preferences, properties
from .client import BackendError


def texture_targets(context) -> tuple[list, str | None]:
    """``(objects, reason)``: the selected objects that can be textured now, and when there are
    none, why not (a sentence for the disabled button)."""
    selected = list(getattr(context, "selected_objects", None) or [])
    if not selected and getattr(context, "active_object", None) is not None:
        selected = [context.active_object]
    if not selected:
        return [], "Select a mesh object"
    usable, reasons = [], []
    for obj in selected:
        problem = mesh_io.mesh_problem(obj)
        job = jobs.job_for(obj.name)
        if problem is None and job is not None and job.active:
            problem = f"'{obj.name}' is already being textured"
        (reasons.append(problem) if problem else usable.append(obj))
    if not usable:
        return [], reasons[0]
    if not context.scene.nfsd.prompt.strip():
        return [], "Type a prompt first"
    return usable, None


def continue_problem(context) -> str | None:
    """Why "Continue" is unavailable for the active object, or None."""
    obj = getattr(context, "active_object", None)
    problem = mesh_io.mesh_problem(obj)
    if problem:
        return problem
    if len(obj.nfsd_runs) == 0:
        return f"'{obj.name}' has no NFSD texture to continue from yet"
    job = jobs.job_for(obj.name)
    if job is not None and job.active:
        return f"'{obj.name}' is already being textured"
    if not context.scene.nfsd.prompt.strip():
        return "Type a prompt first"
    return None


def ensure_timer() -> None:
    """Run :func:`timer_tick` while the add-on is enabled (idempotent)."""
    if not bpy.app.timers.is_registered(timer_tick):
        bpy.app.timers.register(timer_tick, first_interval=0.1, persistent=True)


HEALTH_REFRESH_SECONDS = 15.0


def timer_tick() -> float:
    """The main-thread pump: apply what job threads reported, redraw what shows it, and keep
    the backend line fresh while the panel is on screen."""
    if jobs.process_events():
        tag_redraw()
    if jobs.status_wanted_recently() and time.monotonic() - jobs.backend_checked_at() > HEALTH_REFRESH_SECONDS:
        try:
            jobs.refresh_backend_status(preferences.connection())
        except KeyError:  # the add-on is being disabled
            return None
    return 0.2 if any(job.active for job in jobs.all_jobs()) else 1.0


def tag_redraw() -> None:
    wm = getattr(bpy.context, "window_manager", None)
    for window in (wm.windows if wm else []):
        for area in window.screen.areas:
            area.tag_redraw()


class NFSD_OT_texture_selected(bpy.types.Operator):
    """Texture each selected mesh from the prompt on the NFSD backend"""

    bl_idname = "nfsd.texture_selected"
    bl_label = "Texture Selected"

    @classmethod
    def poll(cls, context):
        _objects, reason = texture_targets(context)
        if reason:
            cls.poll_message_set(reason)
        return reason is None

    def execute(self, context):
        objects, reason = texture_targets(context)
        if reason:
            self.report({"ERROR"}, reason)
            return {"CANCELLED"}
        settings = properties.settings_dict(context.scene.nfsd)
        conn = preferences.connection(context)
        started = []
        for obj in objects:
            try:
                jobs.start_job(obj, settings, conn, unwrap=context.scene.nfsd.unwrap_in_blender)
                started.append(obj.name)
            except ValueError as error:
                self.report({"WARNING"}, str(error))
        ensure_timer()
        if not started:
            return {"CANCELLED"}
        self.report({"INFO"}, f"NFSD: texturing {', '.join(started)}")
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
                           continue_from=run)
        except ValueError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        ensure_timer()
        return {"FINISHED"}


class NFSD_OT_cancel(bpy.types.Operator):
    """Cancel the active object's NFSD job"""

    bl_idname = "nfsd.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        obj = getattr(context, "active_object", None)
        job = jobs.job_for(obj.name) if obj is not None else None
        return job is not None and job.active

    def execute(self, context):
        jobs.cancel(context.active_object.name)
        return {"FINISHED"}


class NFSD_OT_randomize_seed(bpy.types.Operator):
    """Pick a new random seed"""

    bl_idname = "nfsd.randomize_seed"
    bl_label = "Randomize Seed"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        context.scene.nfsd.seed = random.randrange(0, 2 ** 31 - 1)
        return {"FINISHED"}


class NFSD_OT_apply_run(bpy.types.Operator):
    """Put this earlier NFSD run's texture back on the object"""

    bl_idname = "nfsd.apply_run"
    bl_label = "Apply Run"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(name="Run", default=-1, options={"SKIP_SAVE"})

    @classmethod
    def poll(cls, context):
        obj = getattr(context, "active_object", None)
        return obj is not None and len(getattr(obj, "nfsd_runs", ())) > 0

    def execute(self, context):
        obj = context.active_object
        index = self.index if self.index >= 0 else obj.nfsd_run_index
        try:
            jobs.apply_run(obj, index)
        except ValueError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        return {"FINISHED"}


class NFSD_OT_test_connection(bpy.types.Operator):
    """Ask the backend for its health; the answer shows in the panel and here"""

    bl_idname = "nfsd.test_connection"
    bl_label = "Test Connection"

    def execute(self, context):
        jobs.refresh_backend_status(preferences.connection(context))
        ensure_timer()
        return {"FINISHED"}


def _in_background(work, success_text: str | None = None) -> None:
    # A slow backend must never freeze Blender: network work runs on a thread, its outcome
    # lands in the backend status line that the timer redraws.
    def run():
        try:
            work()
            if success_text:
                jobs._backend.set(True, success_text)
        except BackendError as error:
            jobs._backend.set(False, str(error))

    threading.Thread(target=run, daemon=True, name="nfsd-action").start()


class NFSD_OT_unload_model(bpy.types.Operator):
    """Free the backend's model and its GPU memory (it loads again with the next job)"""

    bl_idname = "nfsd.unload_model"
    bl_label = "Unload Model"

    def execute(self, context):
        conn = preferences.connection(context)
        _in_background(lambda: jobs.unload_model(conn), "Model unloaded: the backend's GPU memory is free")
        ensure_timer()
        return {"FINISHED"}


class NFSD_OT_start_backend(bpy.types.Operator):
    """Start the backend on this computer with the command from the preferences"""

    bl_idname = "nfsd.start_backend"
    bl_label = "Start Local Backend"

    def execute(self, context):
        prefs = preferences.get_preferences(context)
        try:
            local_backend.start(prefs.start_command, prefs.backend_url)
        except BackendError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        conn = preferences.connection(context)
        def wait_then_check():
            local_backend.wait_until_up(conn.url, conn.token)
            jobs.check_backend(conn)

        _in_background(wait_then_check)
        ensure_timer()
        return {"FINISHED"}


class NFSD_OT_stop_backend(bpy.types.Operator):
    """Stop the backend this add-on started"""

    bl_idname = "nfsd.stop_backend"
    bl_label = "Stop Local Backend"

    def execute(self, context):
        local_backend.stop()
        jobs._backend.set(False, "Local backend stopped")
        return {"FINISHED"}


classes = (NFSD_OT_texture_selected, NFSD_OT_continue, NFSD_OT_cancel, NFSD_OT_randomize_seed, NFSD_OT_apply_run,
           NFSD_OT_test_connection, NFSD_OT_unload_model, NFSD_OT_start_backend, NFSD_OT_stop_backend)


@bpy.app.handlers.persistent
def cancel_jobs_of_closed_file(_file_path) -> None:
    """Jobs find their objects by name: results must not land in another file that happens to
    have an object of the same name."""
    jobs.shutdown()


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.app.handlers.load_pre.append(cancel_jobs_of_closed_file)
    ensure_timer()


def unregister() -> None:
    if cancel_jobs_of_closed_file in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(cancel_jobs_of_closed_file)
    if bpy.app.timers.is_registered(timer_tick):
        bpy.app.timers.unregister(timer_tick)
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
