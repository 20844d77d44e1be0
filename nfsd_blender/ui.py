# SPDX-License-Identifier: GPL-3.0-or-later
"""The sidebar panel (View3D > Sidebar > NFSD) and the status bar line. Drawing only."""

import re

import bpy

from . import (backend_status, estimate, jobs, mesh_io, operators, preferences, presets, properties, results,
               scene_state, selection)


def draw_backend_line(layout) -> None:
    ok, text = backend_status.backend_status()
    backend_status.note_status_wanted()
    row = layout.row(align=True)
    row.alert = ok is False
    row.label(text=text, icon="CHECKMARK" if ok else ("ERROR" if ok is False else "QUESTION"))
    row.operator("nfsd.test_connection", text="", icon="FILE_REFRESH")


def draw_summary(layout, settings, context) -> None:
    """What will run and how long: the backend's resolution of the panel's settings (POST
    /settings/resolve, asked in the background) once it answered, else the panel's own values and no
    time (backend unreachable, not asked yet, or refusing these settings: never an error here)."""
    found, refused = [], None
    try:
        prefs = preferences.get_preferences(context)
        connection = jobs.Connection(url=prefs.backend_url, token=prefs.token, online_access=bpy.app.online_access)
        finished = sum(1 for job in jobs.all_jobs() if job.state == "done")  # a new speed was measured
        answer = estimate.lookup(connection, properties.settings_dict(settings), finished)
        found, refused = estimate.lines(answer), estimate.refusal(answer)
    except KeyError:  # the add-on is being disabled
        pass
    layout.label(text=found[0] if found else presets.settings_summary(settings))
    if len(found) > 1:
        layout.label(text=found[1], icon="TIME")
    if refused or settings.allow_unknown_words:  # the backend's note, and the choice it offers
        box = layout.box()
        box.alert = bool(refused)
        for n, line in enumerate(error_lines(refused, panel_chars(context), sentences=2) if refused else []):
            box.label(text=line, icon="ERROR" if n == 0 else "BLANK1")
        if settings.allow_unknown_words or "not among its words" in (refused or ""):
            box.prop(settings, "allow_unknown_words")


def draw_job(layout, job, chars: int = 48) -> None:
    """Progress bar, Cancel, and the outcome of the active object's latest job; an error is shown a
    short sentence per line, wrapped to ``chars`` (the Details button has the whole text)."""
    if job.active:
        layout.progress(factor=job.progress, type="BAR", text=job.status_text())
        layout.operator("nfsd.cancel", icon="CANCEL")
    elif job.state in ("failed", "interrupted"):
        box = layout.box()
        box.alert = True
        for n, line in enumerate(error_lines(job.error, chars)):
            box.label(text=line, icon="ERROR" if n == 0 else "BLANK1")
        row = layout.row(align=True)
        row.operator("nfsd.error_details", icon="INFO")
        if job.state == "interrupted":
            row.operator("nfsd.resubmit", icon="RECOVER_LAST")
    else:
        layout.label(text=job.status_text(), icon="CHECKMARK" if job.state == "done" else "INFO")
        draw_warnings(layout, job.warnings, chars)


def draw_warnings(layout, warnings: list[str], chars: int = 48) -> None:
    """A box with each warning, wrapped, under an alert icon (nothing when there are none)."""
    if not warnings:
        return
    box = layout.box()
    for warning in warnings:
        for n, line in enumerate(_wrap(warning, chars)):
            box.label(text=line, icon="ERROR" if n == 0 else "BLANK1")


def panel_chars(context) -> int:
    """About how many characters of label text fit across the sidebar (48 when unknown)."""
    region = getattr(context, "region", None)
    if region is None or region.width <= 1:
        return 48
    preferences = getattr(context, "preferences", None)
    scale = preferences.system.ui_scale if preferences is not None else 1.0
    return max(20, min(200, int((region.width / max(scale, 0.1) - 40) / 6.5)))


def error_lines(text: str, chars: int, sentences: int = 3) -> list[str]:
    """The first ``sentences`` sentences of ``text``, each starting a line, wrapped to ``chars``."""
    found = [part.strip() for part in re.split(r"(?<=[.!?])\s+", text.strip()) if part.strip()]
    lines = [line for sentence in found[:sentences] for line in _wrap(sentence, chars)]
    if len(found) > sentences:
        lines.append("... (Details)")
    return lines


def _wrap(text: str, width: int) -> list[str]:
    # Labels do not wrap; long backend messages are split on words.
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + ([line] if line else [])


def draw_runs_for_continue(layout, obj) -> None:
    """Edit and Selected Faces Only continue a run: the run list and Original, in the main panel."""
    box = layout.box()
    box.label(text="Continue from the selected run:", icon="TRIA_RIGHT")
    box.template_list("NFSD_UL_runs", "continue", obj, "nfsd_runs", obj, "nfsd_run_index", rows=2)
    row = box.row(align=True)
    row.label(text=f"Original: {len(obj.nfsd_original.slots)} material slot(s)", icon="MATERIAL")
    row.operator("nfsd.restore_original", text="", icon="LOOP_BACK")


class NFSD_PT_main(bpy.types.Panel):
    bl_idname = "NFSD_PT_main"
    bl_label = "NFSD Texture"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "NFSD"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.nfsd
        draw_backend_line(layout)
        layout.prop(settings, "prompt", text="")
        layout.prop(settings, "model_choice", text="Model")
        layout.row().prop(settings, "mode", expand=True)
        layout.row().prop(settings, "preset", expand=True)
        draw_summary(layout, settings, context)
        row = layout.row(align=True)
        row.prop(settings, "seed")
        row.operator("nfsd.randomize_seed", text="", icon="FILE_REFRESH")
        layout.prop(settings, "texture_size")
        draw_material(layout, settings)
        layout.prop(settings, "unwrap_in_blender")
        layout.prop(settings, "apply_into_material")
        obj = context.active_object
        if settings.apply_into_material and obj is not None and obj.type == "MESH":
            layout.label(text=results.into_note(obj, material_inputs(settings)), icon="MATERIAL")
        layout.prop(settings, "selected_faces_only")
        row = layout.row(align=True)
        row.prop(settings, "offsets")
        sub = row.row(align=True)
        sub.active = settings.offsets
        sub.prop(settings, "offset_strength")

        obj = context.active_object
        for note in object_notes(obj, settings):
            layout.label(text=note, icon="INFO")
        found = selection.plan(context)
        column = layout.column(align=True)
        column.scale_y = 1.4
        column.operator("nfsd.texture_selected", text=selection.button_text(found), icon="TEXTURE")
        column.operator("nfsd.continue_texture", icon="TRIA_RIGHT")
        for line in [found.reason] if found.reason else selection.left_out_notes(found):
            layout.label(text=line, icon="INFO")
        note = operators.continue_note(context)
        if note:
            layout.label(text=note, icon="INFO")
        needs_run = settings.mode == "dds" or settings.selected_faces_only
        if needs_run and obj is not None and len(getattr(obj, "nfsd_runs", ())) and not jobs.is_copy(obj):
            draw_runs_for_continue(layout, obj)

        if obj is not None and getattr(obj, "nfsd_job", None) is not None and obj.nfsd_job.job_id \
                and not (jobs.job_for(obj) and jobs.job_for(obj).active) and not jobs.is_copy(obj):
            box = layout.box()
            box.label(text="This object's job ran when the file was saved", icon="QUESTION")
            row = box.row(align=True)
            row.operator("nfsd.reattach", icon="LINKED")
            row.operator("nfsd.forget", icon="X")
        job = jobs.job_for(obj) if obj is not None else None
        if job is not None:
            draw_job(layout, job, panel_chars(context))
        for n, line in enumerate(selection.others_lines(context)):  # the other selected objects' jobs
            layout.label(text=line, icon="TEXTURE" if n == 0 else "BLANK1")
        if selection.cancel_all_shown(context):
            layout.operator("nfsd.cancel_all", icon="CANCEL")


def draw_material(layout, settings) -> None:
    """Material: Albedo / PBR, and Normal Map beside it for PBR only."""
    row = layout.row(align=True)
    row.prop(settings, "material", expand=True)
    if settings.material == "pbr":
        row.prop(settings, "normal_map")


def material_inputs(settings) -> str:
    """The Principled BSDF inputs a run of these settings feeds."""
    if settings.material != "pbr":
        return "Base Color"
    return "Base Color, Roughness, Metallic" + (", Normal" if settings.normal_map else "")


def object_notes(obj, settings) -> list[str]:
    """What the artist should know before sending ``obj``: modifiers, linked duplicates."""
    if obj is None or obj.type != "MESH":
        return []
    notes = []
    if settings.selected_faces_only:
        notes.append("Only the faces selected in Edit Mode change; the rest of the texture stays")
    if settings.mode == "dds":
        notes.append("Edit keeps the selected run's texture and changes what the new prompt says: press Continue")
    if mesh_io.has_modifiers(obj):
        if settings.offsets:
            notes.append("Refine Shape works on the base mesh: modifiers are ignored for the shape")
        elif settings.selected_faces_only:
            notes.append("Selected faces are sent on the base mesh: modifiers are ignored")
        else:
            notes.append("Modifiers are applied for texturing (the mesh as the viewport shows it)")
    sharing = scene_state.objects_sharing_mesh(obj)
    if sharing:
        names = ", ".join(other.name for other in sharing[:3]) + (" ..." if len(sharing) > 3 else "")
        notes.append(f"The result also changes {len(sharing)} linked duplicate(s) sharing this mesh: {names}")
    return notes


class NFSD_PT_advanced(bpy.types.Panel):
    bl_label = "Advanced"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "NFSD"
    bl_parent_id = "NFSD_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        settings = context.scene.nfsd
        layout.prop(settings, "negative_prompt")
        layout.prop(settings, "steps")
        layout.prop(settings, "render_size")
        layout.prop(settings, "guidance_scale")
        layout.prop(settings, "batch")


class NFSD_UL_runs(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_property, index=0, flt_flag=0):
        row = layout.row(align=True)
        row.label(text=run_label(item), icon="IMAGE_DATA")
        row.operator("nfsd.apply_run", text="", icon="CHECKMARK").index = index


def run_label(run) -> str:
    """``"moss (NFSD, builtin, 500 steps, 1024 px, seed 7)"``; a pbr run ends with ", PBR"."""
    model = run.model or "default model"
    pbr = ", PBR" if run.roughness_image is not None or run.metallic_image is not None else ""
    return (f"{run.prompt} ({run.mode.upper()}, {model}, {run.steps} steps, {run.texture_size} px, "
            f"seed {run.seed}{pbr})")


class NFSD_PT_history(bpy.types.Panel):
    bl_label = "Earlier Runs"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "NFSD"
    bl_parent_id = "NFSD_PT_main"  # open by default: Original and the runs are one look away

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and len(getattr(obj, "nfsd_runs", ())) > 0 and not jobs.is_copy(obj)

    def draw(self, context):
        obj = context.active_object
        layout = self.layout
        row = layout.row(align=True)
        row.label(text=f"Original: {len(obj.nfsd_original.slots)} material slot(s)", icon="MATERIAL")
        row.operator("nfsd.restore_original", text="", icon="LOOP_BACK")
        layout.template_list("NFSD_UL_runs", "", obj, "nfsd_runs", obj, "nfsd_run_index", rows=3)
        row = layout.row(align=True)
        row.operator("nfsd.apply_run", icon="CHECKMARK")
        row.operator("nfsd.export_run", text="", icon="EXPORT")
        row.operator("nfsd.delete_run", text="", icon="TRASH")
        if 0 <= obj.nfsd_run_index < len(obj.nfsd_runs):
            draw_warnings(self.layout, obj.nfsd_runs[obj.nfsd_run_index].warnings.splitlines(),
                          panel_chars(context))


def draw_status_bar(self, _context) -> None:
    text = jobs.status_line()
    if text:
        self.layout.label(text=text, icon="TEXTURE")


classes = (NFSD_PT_main, NFSD_PT_advanced, NFSD_UL_runs, NFSD_PT_history)


_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register_classes()
    bpy.types.STATUSBAR_HT_header.append(draw_status_bar)


def unregister() -> None:
    bpy.types.STATUSBAR_HT_header.remove(draw_status_bar)
    _unregister_classes()

