# SPDX-License-Identifier: GPL-3.0-or-later
"""Property groups: the scene's texturing settings, each object's run history, the artist's original
materials, and the record of a running job (kept on the object so a saved file can reattach)."""

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty,
                       PointerProperty, StringProperty)

from . import presets

MODES = [
    ("nfsd", "Clean (NFSD)", "Noise-Free Score Distillation: clean detail at normal guidance (recommended)"),
    ("sds", "Classic (SDS)", "Score Distillation Sampling: the classic method; needs very high guidance and "
                             "gives flatter, more saturated colours"),
    ("csd", "Prompt only (CSD)", "Classifier Score Distillation: follows the prompt's direction alone; "
                                 "strong, stylised results"),
    ("dds", "Edit (DDS)", "Delta Denoising Score: change what the prompt says and keep the rest of the selected "
                          "run's texture (select a run and press Continue)"),
]
MATERIALS = [
    ("albedo", "Albedo", "One colour texture (sRGB) into Base Color; lighting the prior imagined may be painted in"),
    ("pbr", "PBR", "Base colour, roughness and metallic maps optimized under changing lights, wired into the "
                   "Principled BSDF (Base Color, Roughness, Metallic; Normal with Normal Map)"),
]


class NFSD_PG_settings(bpy.types.PropertyGroup):
    """Texturing settings, stored with the scene."""

    prompt: StringProperty(name="Prompt", description="What the texture should look like")
    negative_prompt: StringProperty(
        name="Negative Prompt",
        description="What to steer away from; empty uses the backend's default (the NFSD paper's list)")
    mode: EnumProperty(name="Mode", items=MODES, default="nfsd")
    model: StringProperty(name="Model", description="The backend's model id ('' = its default)")
    model_choice: EnumProperty(name="Model", items=presets.model_items, get=presets.get_model,
                               set=presets.set_model,
                               description="The models the backend offers")
    preset: EnumProperty(name="Quality", items=presets.preset_items, get=presets.get_preset,
                         set=presets.set_preset,
                         description="Sets steps, render size and texture size (relative to the model's "
                                     "defaults when the backend says them)")
    steps: IntProperty(name="Steps", default=500, min=1, soft_max=3000,
                       description="Optimization steps; time grows linearly with them")
    render_size: EnumProperty(name="Render Size", items=presets.size_items(presets.RENDER_SIZES), default="512",
                              description="Side of each rendered view fed to the diffusion model")
    texture_size: EnumProperty(name="Texture Size", items=presets.size_items(presets.TEXTURE_SIZES),
                               default="1024",
                               description="Side of the square texture image")
    seed: IntProperty(name="Seed", default=0, min=0, max=2 ** 31 - 1,  # Blender ints are 32-bit signed
                      description="Same seed and settings give the same texture")
    unwrap_in_blender: BoolProperty(
        name="Unwrap in Blender", default=True,
        description="A mesh without UVs gets an 'NFSD_UV' map from Smart UV Project before it is sent "
                    "(seams follow its polygons); off: the backend unwraps it with xatlas")
    selected_faces_only: BoolProperty(
        name="Selected Faces Only", default=False,
        description="Re-texture only the faces selected in Edit Mode; the rest of the texture stays as it is "
                    "(works from Edit Mode)")
    apply_into_material: BoolProperty(
        name="Apply into Existing Material", default=False,
        description="Wire the texture into a copy of the active material's Base Color (Principled BSDF; PBR: "
                    "also Roughness, Metallic and Normal), keeping its other inputs; off: a new NFSD material "
                    "goes in every slot")
    material: EnumProperty(name="Material", items=MATERIALS, default="albedo",
                           description="What the run makes: one colour texture, or PBR maps")
    normal_map: BoolProperty(name="Normal Map", default=False,
                             description="PBR: also optimize a tangent-space normal map, wired through a Normal "
                                         "Map node into the Principled BSDF's Normal")
    offsets: BoolProperty(name="Refine Shape", default=False,
                          description="Also optimize small vertex offsets, stored as a shape key")
    offset_strength: FloatProperty(name="Strength", default=0.1, min=0.0, max=0.2, soft_max=0.2, step=0.1,
                                   precision=3, description="Largest offset as a fraction of the object's size")
    guidance_scale: FloatProperty(name="Guidance Scale", default=0.0, min=0.0, soft_max=100.0,
                                  description="0 uses the mode's usual value (7.5 for NFSD, 100 for SDS)")
    batch: IntProperty(name="Views per Step", default=0, min=0, soft_max=8,
                       description="Camera views per step; 0 uses the backend's default")
    allow_unknown_words: BoolProperty(
        name="Run anyway", default=False,
        description="Run even when the prompt has words the model does not know (the built-in prior knows only "
                    "solid colours, stripes, dots, checkerboards, gradients and waves in eight colours)")


def settings_dict(settings) -> dict:
    """The API's ``settings`` JSON for a :class:`NFSD_PG_settings` (defaults left to the backend)."""
    data = {
        "prompt": settings.prompt.strip(),
        "mode": settings.mode,
        "steps": settings.steps,
        "render_size": int(settings.render_size),
        "texture_size": int(settings.texture_size),
        "seed": settings.seed,
        "offsets": settings.offsets,
    }
    if settings.material != "albedo":  # albedo is the backend's default
        data["material"] = settings.material
        if settings.normal_map:  # a normal map is a pbr run's only
            data["normal_map"] = True
    if settings.offsets:
        data["offset_strength"] = settings.offset_strength
    if settings.negative_prompt.strip():
        data["negative_prompt"] = settings.negative_prompt.strip()
    if settings.guidance_scale > 0:
        data["guidance_scale"] = settings.guidance_scale
    if settings.batch > 0:
        data["batch"] = settings.batch
    if settings.model:
        data["model"] = settings.model
    if settings.allow_unknown_words:  # sent only when on: false is the backend's default
        data["allow_unknown_words"] = True
    return data


class NFSD_PG_run(bpy.types.PropertyGroup):
    """One finished run of an object, kept so it can be re-applied."""

    prompt: StringProperty(name="Prompt")
    mode: StringProperty(name="Mode")
    seed: IntProperty(name="Seed")
    steps: IntProperty(name="Steps")
    model: StringProperty(name="Model", description="'' = the backend's default")
    texture_size: IntProperty(name="Texture Size")
    job_id: StringProperty(name="Backend Job")
    image: PointerProperty(name="Image", type=bpy.types.Image)
    # A pbr run's other maps (material_maps), None for an albedo run; their nodes are in ``material``.
    roughness_image: PointerProperty(name="Roughness", type=bpy.types.Image)
    metallic_image: PointerProperty(name="Metallic", type=bpy.types.Image)
    normal_image: PointerProperty(name="Normal", type=bpy.types.Image)
    material: PointerProperty(name="Material", type=bpy.types.Material)
    target_material: PointerProperty(name="Into Material", type=bpy.types.Material,
                                     description="the artist's material this run's copy replaces (Apply into "
                                                 "Existing Material); None: the run's material fills every slot")
    uv_map: StringProperty(name="UV Map")
    shape_key: StringProperty(name="Shape Key", description="the shape key holding this run's offsets ('': none)")
    created: StringProperty(name="Created")
    warnings: StringProperty(name="Warnings", description="what the backend and the add-on noticed, one per line")


class NFSD_PG_slot(bpy.types.PropertyGroup):
    """One material slot as it was (see scene_state)."""

    material: PointerProperty(name="Material", type=bpy.types.Material)
    link: StringProperty(name="Link", default="DATA")


class NFSD_PG_snapshot(bpy.types.PropertyGroup):
    """An object's materials, per-face material indices, active UV map and NFSD key values
    (scene_state.capture); the face indices and key values are ID properties of this group."""

    captured: BoolProperty(name="Captured")
    slots: CollectionProperty(type=NFSD_PG_slot)
    uv_map: StringProperty(name="Active UV Map")


class NFSD_PG_job(bpy.types.PropertyGroup):
    """The object's running job (job_id "" = none): enough to put the scene back after a failure,
    to leave the preview out of a saved file, and to reattach when the file is opened again."""

    job_id: StringProperty(name="Backend Job")
    settings: StringProperty(name="Settings", description="the settings JSON that was sent")
    uv_map: StringProperty(name="UV Map", description="the UV map whose UVs were sent ('': the backend unwraps)")
    base_key: StringProperty(name="Base Shape Key")
    created_uv_map: StringProperty(name="Created UV Map", description="a UV map this job made (removed if it fails)")
    evaluated: BoolProperty(name="Evaluated Mesh", description="the mesh was sent with its modifiers applied")
    selected_faces_only: BoolProperty(
        name="Selected Faces Only", default=False,
        description="Re-texture only the faces selected in Edit Mode; the rest of the texture stays as it is "
                    "(works from Edit Mode)")
    apply_into_material: BoolProperty(name="Apply into Existing Material")
    preview_material: PointerProperty(name="Preview Material", type=bpy.types.Material)
    preview_image: PointerProperty(name="Preview Image", type=bpy.types.Image)
    before: PointerProperty(type=NFSD_PG_snapshot)


classes = (NFSD_PG_settings, NFSD_PG_run, NFSD_PG_slot, NFSD_PG_snapshot, NFSD_PG_job)


_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register_classes()
    bpy.types.Scene.nfsd = PointerProperty(type=NFSD_PG_settings)
    bpy.types.Object.nfsd_runs = CollectionProperty(type=NFSD_PG_run)
    bpy.types.Object.nfsd_run_index = IntProperty(name="Run", default=0, min=0)
    bpy.types.Object.nfsd_key = StringProperty(name="NFSD Key", description="identifies the object after a reload")
    bpy.types.Object.nfsd_uid = IntProperty(name="NFSD Session Id", options={"HIDDEN"},
                                            description="the session id of the object its key was made for "
                                                        "(a copy carries its original's: duplicates module)")
    bpy.types.Object.nfsd_original = PointerProperty(type=NFSD_PG_snapshot, name="Original Materials")
    bpy.types.Object.nfsd_job = PointerProperty(type=NFSD_PG_job, name="NFSD Job")


def unregister() -> None:
    del bpy.types.Object.nfsd_job
    del bpy.types.Object.nfsd_original
    del bpy.types.Object.nfsd_uid
    del bpy.types.Object.nfsd_key
    del bpy.types.Object.nfsd_run_index
    del bpy.types.Object.nfsd_runs
    del bpy.types.Scene.nfsd
    _unregister_classes()
