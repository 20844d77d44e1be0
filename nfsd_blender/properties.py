# SPDX-License-Identifier: GPL-3.0-or-later
"""Property groups: the scene's texturing settings and each object's run history."""

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty,
                       PointerProperty, StringProperty)

MODES = [
    ("nfsd", "NFSD", "Noise-Free Score Distillation: clean detail at normal guidance (recommended)"),
    ("sds", "SDS", "Score Distillation Sampling: the classic baseline, needs very high guidance"),
    ("csd", "CSD", "Classifier Score Distillation: the guidance direction alone"),
]

# What each quality preset sets. Values are shown next to the preset in the panel.
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


def preset_summary(name: str) -> str:
    """``"500 steps · 512 px render · 1024 px texture"`` for a preset name."""
    values = PRESETS[name]
    return f"{values['steps']} steps · {values['render_size']} px render · {values['texture_size']} px texture"


def _get_preset(self) -> int:
    # The preset shown is the one the current values match: editing a value shows "Custom".
    current = {key: getattr(self, key) for key in PRESETS["FAST"]}
    for index, (name, *_rest) in enumerate(PRESET_ITEMS):
        if PRESETS.get(name) == current:
            return index
    return len(PRESET_ITEMS) - 1


def _set_preset(self, index: int) -> None:
    values = PRESETS.get(PRESET_ITEMS[index][0])
    for key, value in (values or {}).items():
        setattr(self, key, value)


class NFSD_PG_settings(bpy.types.PropertyGroup):
    """Texturing settings, stored with the scene."""

    prompt: StringProperty(name="Prompt", description="What the texture should look like")
    negative_prompt: StringProperty(
        name="Negative Prompt",
        description="What to steer away from; empty uses the backend's default (the NFSD paper's list)")
    mode: EnumProperty(name="Mode", items=MODES, default="nfsd")
    preset: EnumProperty(
        name="Quality",
        items=[(n, label, desc.format(**PRESETS.get(n, {}))) for n, label, desc in PRESET_ITEMS],
        get=_get_preset, set=_set_preset,
        description="Sets steps, render size and texture size")
    steps: IntProperty(name="Steps", default=500, min=1, soft_max=3000,
                       description="Optimization steps; time grows linearly with them")
    render_size: IntProperty(name="Render Size", default=512, min=32, max=1024, step=8,
                             subtype="PIXEL",
                             description="Side of each rendered view fed to the diffusion model (a multiple of 8)")
    texture_size: IntProperty(name="Texture Size", default=1024, min=64, max=4096, step=64,
                              subtype="PIXEL", description="Side of the square texture image (a multiple of 64)")
    seed: IntProperty(name="Seed", default=0, min=0, max=2 ** 31 - 1,  # Blender ints are 32-bit signed
                      description="Same seed and settings give the same texture")
    unwrap_in_blender: BoolProperty(
        name="Unwrap in Blender", default=True,
        description="A mesh without UVs gets an 'NFSD_UV' map from Smart UV Project before it is sent "
                    "(seams follow its polygons); off: the backend unwraps it with xatlas")
    offsets: BoolProperty(name="Refine Shape", default=False,
                          description="Also optimize small vertex offsets, stored as a shape key")
    offset_strength: FloatProperty(name="Strength", default=0.02, min=0.0, max=0.2, soft_max=0.1, step=0.1,
                                   precision=3, description="Largest offset as a fraction of the object's size")
    guidance_scale: FloatProperty(name="Guidance Scale", default=0.0, min=0.0, soft_max=100.0,
                                  description="0 uses the mode's usual value (7.5 for NFSD, 100 for SDS)")
    batch: IntProperty(name="Views per Step", default=0, min=0, soft_max=8,
                       description="Camera views per step; 0 uses the backend's default")


def settings_dict(settings) -> dict:
    """The API's ``settings`` JSON for a :class:`NFSD_PG_settings` (defaults left to the backend)."""
    data = {
        "prompt": settings.prompt.strip(),
        "mode": settings.mode,
        "steps": settings.steps,
        "render_size": settings.render_size,
        "texture_size": settings.texture_size,
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
    return data


class NFSD_PG_run(bpy.types.PropertyGroup):
    """One finished run of an object, kept so it can be re-applied."""

    prompt: StringProperty(name="Prompt")
    mode: StringProperty(name="Mode")
    seed: IntProperty(name="Seed")
    steps: IntProperty(name="Steps")
    job_id: StringProperty(name="Backend Job")
    image: PointerProperty(name="Image", type=bpy.types.Image)
    material: PointerProperty(name="Material", type=bpy.types.Material)
    uv_map: StringProperty(name="UV Map")
    shape_key: StringProperty(name="Shape Key", description="the shape key holding this run's offsets ('': none)")
    created: StringProperty(name="Created")
    warnings: StringProperty(name="Warnings", description="what the backend and the add-on noticed, one per line")


classes = (NFSD_PG_settings, NFSD_PG_run)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.nfsd = PointerProperty(type=NFSD_PG_settings)
    bpy.types.Object.nfsd_runs = CollectionProperty(type=NFSD_PG_run)
    bpy.types.Object.nfsd_run_index = IntProperty(name="Run", default=0, min=0)


def unregister() -> None:
    del bpy.types.Object.nfsd_run_index
    del bpy.types.Object.nfsd_runs
    del bpy.types.Scene.nfsd
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
