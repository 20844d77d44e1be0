# SPDX-License-Identifier: GPL-3.0-or-later
"""The extension as a package: it builds, validates, installs and registers like an artist's."""

import zipfile

import addon_utils
import bpy
import pytest

from conftest import PACKAGE


def test_zip_has_the_manifest_next_to_the_code_and_no_caches(built_zip):
    with zipfile.ZipFile(built_zip) as archive:
        names = set(archive.namelist())
    assert {"blender_manifest.toml", "__init__.py", "client.py", "jobs.py", "mesh_io.py", "ui.py"} <= names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


def test_every_file_carries_the_gpl_header(built_zip):
    with zipfile.ZipFile(built_zip) as archive:
        sources = [name for name in archive.namelist() if name.endswith(".py")]
        for name in sources:
            assert archive.read(name).startswith(b"# SPDX-License-Identifier: GPL-3.0-or-later"), name


def test_installed_as_an_extension_with_working_preferences(addon, prefs):
    assert addon.__name__ == PACKAGE
    assert addon.preferences.get_preferences().bl_rna is prefs.bl_rna
    prefs.backend_url = "localhost:9000/"  # the update callback shows the normalized form
    assert prefs.backend_url == "http://localhost:9000"
    prefs.backend_url = "http://127.0.0.1:7870"


def test_register_and_unregister_twice(addon):
    for _ in range(2):
        addon_utils.disable(PACKAGE)
        assert not hasattr(bpy.types.Scene, "nfsd")
        assert not hasattr(bpy.types, "NFSD_PT_main")
        assert not hasattr(bpy.types, "NFSD_OT_texture_selected")
        addon_utils.enable(PACKAGE)
        assert hasattr(bpy.types.Scene, "nfsd")
        assert hasattr(bpy.types, "NFSD_PT_main")
        assert bpy.ops.nfsd.texture_selected.get_rna_type().identifier == "NFSD_OT_texture_selected"
        assert PACKAGE in bpy.context.preferences.addons
        # Handlers are added once per enable, not once per enable ever.
        handlers = [h for h in bpy.app.handlers.load_pre if h.__name__ == "before_load"]
        assert len(handlers) == 1


def test_the_quality_preset_sets_and_shows_its_values(addon, scene):
    settings = scene.nfsd
    settings.preset = "HIGH"
    assert (settings.steps, settings.render_size, settings.texture_size) == (1000, "512", "2048")
    assert settings.preset == "HIGH"
    settings.steps = 777  # an edited value no longer matches any preset
    assert settings.preset == "CUSTOM"
    assert addon.presets.preset_items(settings)[0][2] == "Quick look: 200 steps, 256 px renders, 512 px texture"


def test_settings_dict_holds_only_api_keys_and_leaves_defaults_to_the_backend(addon, scene):
    settings = scene.nfsd
    settings.negative_prompt = ""
    settings.guidance_scale = 0.0
    settings.batch = 0
    data = addon.properties.settings_dict(settings)
    assert data == {"prompt": "a weathered bronze statue", "mode": "nfsd", "steps": 3, "render_size": 64,
                    "texture_size": 64, "seed": 7, "offsets": False}
    settings.offsets, settings.offset_strength, settings.guidance_scale = True, 0.05, 20.0
    data = addon.properties.settings_dict(settings)
    assert data["offset_strength"] == pytest.approx(0.05) and data["guidance_scale"] == 20.0



def test_a_size_saved_as_a_number_by_an_older_version_opens_as_that_choice(addon, scene):
    scene.nfsd["texture_size"] = 2048  # what the ID property held when the setting was an IntProperty
    scene.nfsd["render_size"] = 256
    assert (scene.nfsd.texture_size, scene.nfsd.render_size) == ("2048", "256")
