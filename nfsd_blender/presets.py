# SPDX-License-Identifier: GPL-3.0-or-later
"""The quality presets and the model picker of the panel: what each preset sets for a model (from
the backend's ``GET /models`` defaults when it says them), the sizes offered, and the item lists and
getters/setters Blender's enum properties in ``properties.NFSD_PG_settings`` call. No bpy."""

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


def size_items(sizes):
    # Each item's number is its size: a file saved when these were plain numbers opens with them.
    return [(str(size), f"{size} px", f"{size} x {size} pixels", size) for size in sizes]


def snap(value: int, sizes) -> int:
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
    render = snap(render, RENDER_SIZES) if render else None
    if "steps" in defaults:
        steps, texture = defaults["steps"], snap(defaults.get("texture_size", 1024), TEXTURE_SIZES)
        render = render or 512
        return {"FAST": {"steps": max(1, round(steps / 2)), "render_size": render,
                         "texture_size": snap(texture // 2, TEXTURE_SIZES)},
                "BALANCED": {"steps": steps, "render_size": render, "texture_size": texture},
                "HIGH": {"steps": steps * 2, "render_size": render, "texture_size": snap(texture * 2, TEXTURE_SIZES)}}
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


def get_preset(self) -> int:
    # The preset shown is the one the current values match: editing a value shows "Custom".
    name = current_preset(self)
    return next(index for index, item in enumerate(PRESET_ITEMS) if item[0] == name)


def set_preset(self, index: int) -> None:
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


def get_model(self) -> int:
    identifier = self.model or DEFAULT_MODEL_ID
    return next((number for ident, _label, _description, number in model_items() if ident == identifier), 0)


def set_model(self, number: int) -> None:
    """Choose a model; the sizes follow it: a named preset is applied again for the new model,
    Custom keeps steps and texture and takes the model's render size."""
    preset = current_preset(self)
    identifier = next((ident for ident, _label, _description, n in model_items() if n == number), DEFAULT_MODEL_ID)
    self.model = "" if identifier == DEFAULT_MODEL_ID else identifier
    presets = presets_for(self.model)
    values = presets.get(preset) or {"render_size": presets["BALANCED"]["render_size"]}
    for key, value in values.items():
        setattr(self, key, str(value) if key in SIZE_KEYS else value)
