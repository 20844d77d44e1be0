# SPDX-License-Identifier: GPL-3.0-or-later
"""Add-on preferences: where the backend is, its token, and how to start one locally."""

import bpy
from bpy.props import BoolProperty, FloatProperty, StringProperty

from . import backend_status, local_backend
from .client import BackendError, normalize_url
from .worker import Connection


def get_preferences(context=None):
    """This add-on's preferences (``__package__`` is ``bl_ext.<repo>.<id>`` once installed)."""
    context = context or bpy.context
    return context.preferences.addons[__package__].preferences


def start_command(prefs) -> str:
    """The command that starts the local backend: the picked executable when there is one (checked
    first: BackendError with one line saying what is wrong), else the typed command."""
    if prefs.backend_executable.strip():
        path = bpy.path.abspath(prefs.backend_executable)
        problem = local_backend.executable_problem(path)
        if problem:
            raise BackendError(problem, kind="url")
        return local_backend.command_for_executable(path)
    return prefs.start_command


def connection(context=None) -> Connection:
    """The :class:`job.Connection` the preferences describe (main thread)."""
    prefs = get_preferences(context)
    command = ""
    if prefs.start_local:
        try:
            command = start_command(prefs)
        except BackendError:
            command = ""  # the preferences show why; jobs then report the backend as unreachable
    return Connection(
        url=prefs.backend_url,
        token=prefs.token,
        online_access=bpy.app.online_access,
        start_command=command,
        preview_interval=prefs.preview_interval,
    )


def _tidy_url(self, _context) -> None:
    # Show the normalized form so the artist sees what will be used; leave bad text for the error.
    try:
        tidy = normalize_url(self.backend_url)
    except BackendError:
        return
    if tidy != self.backend_url:
        self.backend_url = tidy


class NFSD_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend_url: StringProperty(
        name="Backend URL", default="http://127.0.0.1:7870", update=_tidy_url,
        description="Where `nfsd serve` listens: host:port or http://host:port/ both work")
    token: StringProperty(name="Token", subtype="PASSWORD",
                          description="The --token the backend was started with (empty if none)")
    start_local: BoolProperty(
        name="Start Local Backend",
        description="Start the backend on this computer when a job needs it; it stops when Blender quits")
    backend_executable: StringProperty(
        name="Backend Program", subtype="FILE_PATH",
        description="The backend's Python (in its virtual environment, e.g. .venv/bin/python) or its nfsd "
                    "program; when set it is used instead of the command below")
    start_command: StringProperty(
        name="Command", default="nfsd serve",
        description="Command that runs `nfsd serve`, or the path of the backend's Python "
                    "(`-m nfsd.cli serve` is added); --host/--port come from the URL")
    preview_interval: FloatProperty(name="Preview Every", default=3.0, min=0.5, soft_max=30.0, subtype="TIME_ABSOLUTE",
                                    unit="TIME_ABSOLUTE",
                                    description="Seconds between live texture previews while a job runs")

    def draw(self, context) -> None:
        layout = self.layout
        layout.use_property_split = True
        layout.prop(self, "backend_url")
        layout.prop(self, "token")
        row = layout.row(align=True)
        row.operator("nfsd.test_connection", icon="LINKED")
        row.operator("nfsd.unload_model", icon="TRASH")
        ok, text = backend_status.backend_status()
        layout.label(text=text, icon="CHECKMARK" if ok else ("ERROR" if ok is False else "QUESTION"))
        if not bpy.app.online_access:
            layout.label(text="Online access is off: only a backend on this computer can be used", icon="INFO")
        layout.separator()
        layout.prop(self, "start_local")
        column = layout.column()
        column.active = self.start_local
        column.prop(self, "backend_executable")
        if self.backend_executable.strip():
            problem = local_backend.executable_problem(bpy.path.abspath(self.backend_executable))
            if problem:
                column.label(text=problem, icon="ERROR")
        else:
            column.prop(self, "start_command")
        row = column.row(align=True)
        running = local_backend.is_running()
        if running:
            row.operator("nfsd.stop_backend", icon="CANCEL")
        else:
            row.operator("nfsd.start_backend", icon="PLAY")
        column.label(text=f"Backend output: {local_backend.log_path()}")
        tail = local_backend.log_tail() if not running and ok is False else []
        if tail:  # the backend did not come up: its last words say why
            box = column.box()
            for line in tail:
                box.label(text=line[-120:])
        layout.prop(self, "preview_interval")


classes = (NFSD_AddonPreferences,)


register, unregister = bpy.utils.register_classes_factory(classes)
