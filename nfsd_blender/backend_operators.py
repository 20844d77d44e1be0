# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators that talk to the backend itself: test the connection, unload its model, start and
stop a local one. Network work runs on a thread; its outcome lands in the backend line."""

import threading

import bpy

from . import backend_status, local_backend, preferences
from .client import BackendError
from .operators import ensure_timer


class NFSD_OT_test_connection(bpy.types.Operator):
    """Ask the backend for its health; the answer shows in the panel and here"""

    bl_idname = "nfsd.test_connection"
    bl_label = "Test Connection"

    def execute(self, context):
        backend_status.refresh_backend_status(preferences.connection(context))
        ensure_timer()
        return {"FINISHED"}


def _in_background(work, success_text: str | None = None) -> None:
    # A slow backend must never freeze Blender: network work runs on a thread, its outcome
    # lands in the backend status line that the timer redraws.
    def run():
        try:
            work()
            if success_text:
                backend_status.set_status(True, success_text)
        except BackendError as error:
            backend_status.set_status(False, str(error))

    threading.Thread(target=run, daemon=True, name="nfsd-action").start()


class NFSD_OT_unload_model(bpy.types.Operator):
    """Free the backend's model and its GPU memory (it loads again with the next job)"""

    bl_idname = "nfsd.unload_model"
    bl_label = "Unload Model"

    def execute(self, context):
        conn = preferences.connection(context)
        _in_background(lambda: backend_status.unload_model(conn), "Model unloaded: the backend's GPU memory is free")
        ensure_timer()
        return {"FINISHED"}


class NFSD_OT_start_backend(bpy.types.Operator):
    """Start the backend on this computer with the command from the preferences"""

    bl_idname = "nfsd.start_backend"
    bl_label = "Start Local Backend"

    def execute(self, context):
        prefs = preferences.get_preferences(context)
        try:
            local_backend.start(preferences.start_command(prefs), prefs.backend_url)
        except BackendError as error:
            self.report({"ERROR"}, str(error))
            backend_status.set_status(False, str(error))
            return {"CANCELLED"}
        conn = preferences.connection(context)

        def wait_then_check():
            local_backend.wait_until_up(conn.url, conn.token)
            backend_status.check_backend(conn)

        _in_background(wait_then_check)
        ensure_timer()
        return {"FINISHED"}


class NFSD_OT_stop_backend(bpy.types.Operator):
    """Stop the backend this add-on started"""

    bl_idname = "nfsd.stop_backend"
    bl_label = "Stop Local Backend"

    def execute(self, context):
        local_backend.stop()
        backend_status.set_status(False, "Local backend stopped")
        return {"FINISHED"}


classes = (NFSD_OT_test_connection, NFSD_OT_unload_model, NFSD_OT_start_backend, NFSD_OT_stop_backend)


register, unregister = bpy.utils.register_classes_factory(classes)
