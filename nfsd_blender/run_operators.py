# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators of the run list: re-apply a run, put the original materials back, delete a run,
export a run's texture. Thin wrappers over results."""

import bpy
from bpy.props import IntProperty, StringProperty

from . import results


def _active_object(context):
    return getattr(context, "active_object", None)


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
            results.apply_run(obj, index)
        except ValueError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        return {"FINISHED"}


class NFSD_OT_restore_original(bpy.types.Operator):
    """Put the object's own materials back, as they were before the first NFSD run (slots and
    per-face assignments)"""

    bl_idname = "nfsd.restore_original"
    bl_label = "Original"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        obj = _active_object(context)
        return obj is not None and obj.type == "MESH" and obj.nfsd_original.captured

    def execute(self, context):
        try:
            results.restore_original(context.active_object)
        except ValueError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        return {"FINISHED"}


class NFSD_OT_delete_run(bpy.types.Operator):
    """Remove this run; its material, image and shape key go when nothing else uses them"""

    bl_idname = "nfsd.delete_run"
    bl_label = "Delete Run"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(name="Run", default=-1, options={"SKIP_SAVE"})

    @classmethod
    def poll(cls, context):
        return NFSD_OT_apply_run.poll(context)

    def execute(self, context):
        obj = context.active_object
        try:
            results.delete_run(obj, self.index if self.index >= 0 else obj.nfsd_run_index)
        except ValueError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        return {"FINISHED"}


class NFSD_OT_export_run(bpy.types.Operator):
    """Save the selected run's texture as a PNG file"""

    bl_idname = "nfsd.export_run"
    bl_label = "Export Texture"

    filepath: StringProperty(subtype="FILE_PATH")
    filter_glob: StringProperty(default="*.png", options={"HIDDEN"})
    index: IntProperty(name="Run", default=-1, options={"SKIP_SAVE"})

    @classmethod
    def poll(cls, context):
        return NFSD_OT_apply_run.poll(context)

    def invoke(self, context, _event):
        obj = context.active_object
        run = obj.nfsd_runs[min(obj.nfsd_run_index, len(obj.nfsd_runs) - 1)]
        name = "".join(c if c.isalnum() or c in "-_ " else "_" for c in f"{obj.name} {run.prompt}")[:80]
        self.filepath = bpy.path.ensure_ext(name.strip() or "nfsd", ".png")
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        obj = context.active_object
        index = self.index if self.index >= 0 else obj.nfsd_run_index
        if not 0 <= index < len(obj.nfsd_runs):
            self.report({"ERROR"}, f"'{obj.name}' has no NFSD run number {index + 1}")
            return {"CANCELLED"}
        try:
            path = results.export_run_png(obj.nfsd_runs[index], self.filepath)
        except (ValueError, OSError) as error:
            self.report({"ERROR"}, f"Could not write the PNG: {error}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Saved {path}")
        return {"FINISHED"}


classes = (NFSD_OT_apply_run, NFSD_OT_restore_original, NFSD_OT_delete_run, NFSD_OT_export_run)


register, unregister = bpy.utils.register_classes_factory(classes)
