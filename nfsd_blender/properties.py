# SPDX-License-Identifier: GPL-3.0-or-later
"""Property groups: the scene's texturing settings, each object's run history, the artist's original
materials, and the record of a running job (kept on the object so a saved file can reattach)."""

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty,
                       PointerProperty, StringProperty)

MODES = [
    ("nfsd", "Clean (NFSD)", "Noise-Free Score Distillation: clean detail at normal guidance (recommended)"),
    ("sds", "Classic (SDS)", "Score Distillation Sampling: the classic method; needs very high guidance and "
                             "gives flatter, more saturated colours"),
    ("csd", "Prompt only (CSD)", "Classifier Score Distillation: follows the prompt's direction alone; "
                                 "strong, stylised results"),
    ("dds", "Edit (DDS)", "Delta Denoising Score: change what the prompt says and keep the rest of the selected "
                          "run's texture (select a run and press Continue)"),
]

# What each quality preset sets when the model does not say its own defaults (GET /models entries
# without "defaults"); the model's render size, when known, replaces render_size.
PRESETS = {
    "FAST": {"steps": 200, "render_size": 256, "texture_size": 512},
    "BALANCED": {"steps": 500, "render_size": 512, "texture_size": 1024},
    "HIGH": {"steps": 1000, "render_size": 512, "texture_size": 2048},
}
PRESET_ITEMS = [
    ("FAST", "Fast", "Quick look: {steps} steps, {render_size} px renders, {texture_size} px texture"),
    ("BALANCED", "Balanced", "Good default: {steps} steps, {render_size} px renders, {texture_size} px texture"),
    ("HIGH", "High", "Final quality: {steps} steps, {render_size} px renders, {texture_size} px texture"),
    ("CUSTOM", "Custom", "Steps and sizes set by hand"),
]


# What the backend accepts (backend/nfsd/server.py JobSettings): texture sizes a multiple of 64 in
# 64..4096, render sizes a multiple of 8 in 32..1024. The panel offers these as choices.
TEXTURE_SIZES = (64, 128, 256, 512, 1024, 2048, 4096)
RENDER_SIZES = (64, 128, 256, 384, 512, 640, 768, 1024)
SIZE_KEYS = ("texture_size", "render_size")


def _size_items(sizes):
    # Each item's number is its size: a file saved when these were plain numbers opens with them.
    return [(str(size), f"{size} px", f"{size} x {size} pixels", size) for size in sizes]


def _snap(value: int, sizes) -> int:
    """The largest of ``sizes`` not above ``value`` (the smallest when all are)."""
    return max([size for size in sizes if size <= value] or [min(sizes)])


def presets_for(model: str) -> dict:
    """What each preset sets for ``model`` ("" = the backend's default). From the model's
    ``defaults`` (GET /models): Fast = half the steps and half the texture, Balanced = the
    defaults, High = twice the steps and twice the texture; else :data:`PRESETS`, with the model's
    render size when the backend says it."""
    from . import backend_status

    entry = backend_status.model_entry(model) or {}
    defaults = entry.get("defaults") or {}
    render = defaults.get("render_size") or entry.get("render_size")
    render = _snap(render, RENDER_SIZES) if render else None
    if "steps" in defaults:
        steps, texture = defaults["steps"], _snap(defaults.get("texture_size", 1024), TEXTURE_SIZES)
        render = render or 512
        return {"FAST": {"steps": max(1, round(steps / 2)), "render_size": render,
                         "texture_size": _snap(texture // 2, TEXTURE_SIZES)},
                "BALANCED": {"steps": steps, "render_size": render, "texture_size": texture},
                "HIGH": {"steps": steps * 2, "render_size": render, "texture_size": _snap(texture * 2, TEXTURE_SIZES)}}
    return {name: dict(values, render_size=render or values["render_size"]) for name, values in PRESETS.items()}


def settings_summary(settings) -> str:
    """What will run, from the panel's own values: ``"500 steps · 512 px render · 1024 px texture ·
    4 views/step"`` (the panel shows the backend's resolution instead once it answered: estimate)."""
    from . import backend_status, estimate

    batch = settings.batch
    if batch <= 0:
        batch = ((backend_status.model_entry(settings.model) or {}).get("defaults") or {}).get("batch")
    return estimate.what_runs(settings.steps, settings.render_size, settings.texture_size, batch)


def current_preset(settings) -> str:
    """The preset the current values match ("CUSTOM" when none does)."""
    current = {key: int(getattr(settings, key)) for key in PRESETS["FAST"]}
    return next((name for name, values in presets_for(settings.model).items() if values == current), "CUSTOM")


def _get_preset(self) -> int:
    # The preset shown is the one the current values match: editing a value shows "Custom".
    name = current_preset(self)
    return next(index for index, item in enumerate(PRESET_ITEMS) if item[0] == name)


def _set_preset(self, index: int) -> None:
    values = presets_for(self.model).get(PRESET_ITEMS[index][0])
    for key, value in (values or {}).items():
        setattr(self, key, str(value) if key in SIZE_KEYS else value)


_preset_items: list = []


def preset_items(self, _context=None):
    global _preset_items
    values = presets_for(getattr(self, "model", "") or "")
    _preset_items = [(name, label, desc.format(**values.get(name, {})), n)
                     for n, (name, label, desc) in enumerate(PRESET_ITEMS)]
    return _preset_items


# The model list comes from the backend (GET /models, see backend_status); Blender needs the item
# tuples kept alive while it shows them, hence this cache. The backend's default has an identifier
# of its own: Blender takes an item with identifier "" for a heading that cannot be chosen.
DEFAULT_MODEL_ID = "__default__"
_model_items: list = []


def model_items(_self=None, _context=None):
    from . import backend_status

    global _model_items
    items = [(DEFAULT_MODEL_ID, f"Backend default ({backend_status.default_model_name()})",
              "The model the backend was started with (--model)", 0)]
    for n, entry in enumerate(backend_status.models(), start=1):
        name = entry["name"]
        family = f" ({entry['family']})" if entry.get("family") else ""
        items.append((name, name + family, f"Model '{name}' on the backend", n))
    _model_items = items
    return items


def _get_model(self) -> int:
    identifier = self.model or DEFAULT_MODEL_ID
    return next((number for ident, _label, _description, number in model_items() if ident == identifier), 0)


def _set_model(self, number: int) -> None:
    """Choose a model; the sizes follow it: a named preset is applied again for the new model,
    Custom keeps steps and texture and takes the model's render size."""
    preset = current_preset(self)
    identifier = next((ident for ident, _label, _description, n in model_items() if n == number), DEFAULT_MODEL_ID)
    self.model = "" if identifier == DEFAULT_MODEL_ID else identifier
    presets = presets_for(self.model)
    values = presets.get(preset) or {"render_size": presets["BALANCED"]["render_size"]}
    for key, value in values.items():
        setattr(self, key, str(value) if key in SIZE_KEYS else value)


class NFSD_PG_settings(bpy.types.PropertyGroup):
    """Texturing settings, stored with the scene."""

    prompt: StringProperty(name="Prompt", description="What the texture should look like")
    negative_prompt: StringProperty(
        name="Negative Prompt",
        description="What to steer away from; empty uses the backend's default (the NFSD paper's list)")
    mode: EnumProperty(name="Mode", items=MODES, default="nfsd")
    model: StringProperty(name="Model", description="The backend's model id ('' = its default)")
    model_choice: EnumProperty(name="Model", items=model_items, get=_get_model, set=_set_model,
                               description="The models the backend offers")
    preset: EnumProperty(name="Quality", items=preset_items, get=_get_preset, set=_set_preset,
                         description="Sets steps, render size and texture size (relative to the model's "
                                     "defaults when the backend says them)")
    steps: IntProperty(name="Steps", default=500, min=1, soft_max=3000,
                       description="Optimization steps; time grows linearly with them")
    render_size: EnumProperty(name="Render Size", items=_size_items(RENDER_SIZES), default="512",
                              description="Side of each rendered view fed to the diffusion model")
    texture_size: EnumProperty(name="Texture Size", items=_size_items(TEXTURE_SIZES), default="1024",
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
        description="Wire the texture into a copy of the active material's Base Color (Principled BSDF), "
                    "keeping its other inputs; off: a new NFSD material goes in every slot")
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
