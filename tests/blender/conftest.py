# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures for the Blender add-on tests. Run them in their own process:

    python -m pytest tests/blender -q

bpy must be imported before anything that loads pymeshlab (they clash the other way round), so
this directory is skipped when pymeshlab is already loaded in the process.

The add-on is installed the way an artist installs it: the built .zip into a local extension
repository, so it runs as ``bl_ext.<repo>.nfsd_blender`` and its preferences lookup is the real one.
"""

import importlib
import os
import sys
from types import SimpleNamespace

import pytest

if "pymeshlab" in sys.modules:  # see the module doc
    collect_ignore_glob = ["test_*.py"]
    bpy = None
else:
    import bpy  # noqa: E402  (first, on purpose)
    import addon_utils

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
REPO = "nfsd_tests"
PACKAGE = f"bl_ext.{REPO}.nfsd_blender"
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, HERE)

import build_extension  # noqa: E402
from fake_backend import FakeBackend  # noqa: E402


@pytest.fixture(scope="session")
def built_zip(tmp_path_factory):
    """The extension .zip, built and validated by Blender's extension tool."""
    return build_extension.build(str(tmp_path_factory.mktemp("dist")))


@pytest.fixture(scope="session")
def addon(built_zip, tmp_path_factory):
    """The installed, enabled add-on package (``bl_ext.nfsd_tests.nfsd_blender``)."""
    preferences = bpy.context.preferences
    preferences.use_preferences_save = False  # never touch the user's saved preferences
    repo = preferences.extensions.repos.new(name="NFSD Tests", module=REPO, source="USER",
                                            custom_directory=str(tmp_path_factory.mktemp("extensions")))
    result = bpy.ops.extensions.package_install_files(filepath=built_zip, repo=REPO, enable_on_install=True)
    assert result == {"FINISHED"}
    module = importlib.import_module(PACKAGE)
    yield module
    addon_utils.disable(PACKAGE)
    preferences.extensions.repos.remove(repo)


@pytest.fixture
def prefs(addon):
    return bpy.context.preferences.addons[PACKAGE].preferences


@pytest.fixture
def scene(addon):
    """An empty scene with the add-on's job registry cleared, and a prompt typed."""
    addon.jobs._jobs.clear()
    addon.backend_status._backend.__init__()
    addon.estimate.wait()
    for collection in (bpy.data.objects, bpy.data.meshes, bpy.data.materials, bpy.data.images):
        for item in list(collection):
            collection.remove(item)
    settings = bpy.context.scene.nfsd
    settings.prompt = "a weathered bronze statue"
    settings.preset = "FAST"
    settings.texture_size = "64"
    settings.render_size = "64"
    settings.steps = 3
    settings.offsets = False
    settings.apply_into_material = False
    settings.selected_faces_only = False
    settings.mode = "nfsd"
    settings.model = ""
    settings.seed = 7
    settings.batch = 0
    settings.guidance_scale = 0.0
    settings.negative_prompt = ""
    settings.offset_strength = 0.1
    settings.allow_unknown_words = False
    settings.material = "albedo"
    settings.normal_map = False
    addon.estimate.clear()
    yield bpy.context.scene
    for job in addon.jobs.all_jobs():
        job.request_cancel()
        job.worker.thread.join(5)
    addon.jobs._jobs.clear()


def add_mesh(kind: str = "cube", uvs: bool = True, name: str | None = None):
    """A new selected, active mesh object (cube: 8 vertices, 12 triangles)."""
    if kind == "cube":
        bpy.ops.mesh.primitive_cube_add(size=2.0, calc_uvs=uvs, location=(1.0, 2.0, 3.0))
    elif kind == "plane":
        bpy.ops.mesh.primitive_plane_add(size=2.0, calc_uvs=uvs)
    elif kind == "sphere":
        bpy.ops.mesh.primitive_uv_sphere_add(segments=16, ring_count=8, calc_uvs=uvs)
    obj = bpy.context.active_object
    if name:
        obj.name = name
    if not uvs:
        while obj.data.uv_layers:
            obj.data.uv_layers.remove(obj.data.uv_layers[0])
    return obj


@pytest.fixture
def fake_backend():
    """A backend started with a Stable Diffusion model (the tests' prompts are open text, which the
    built-in prior's closed vocabulary refuses, as the real server does)."""
    with FakeBackend(total_steps=4, default_model="/models/sd15") as backend:
        yield backend


@pytest.fixture
def fast_connection(addon, fake_backend):
    """A connection to the fake backend that polls without waiting."""
    return addon.jobs.Connection(url=fake_backend.url, poll_interval=0.01, preview_interval=0.0)


class RecordingLayout:
    """Stands in for bpy's UILayout (which only exists while Blender draws): records calls."""

    def __init__(self, log=None, buttons=None):
        self.log = [] if log is None else log
        self.buttons = {} if buttons is None else buttons  # operator -> the text it was drawn with
        self.alert = self.active = self.enabled = False
        self.scale_y = 1.0
        self.use_property_split = False

    def _child(self, *_args, **_kwargs):
        return RecordingLayout(self.log, self.buttons)

    row = column = box = split = _child

    def label(self, text="", icon="NONE", **_kwargs):
        self.log.append(("label", text, icon))

    def prop(self, data, name, **_kwargs):
        self.log.append(("prop", name))

    def operator(self, idname, **kwargs):
        self.log.append(("operator", idname))
        if "text" in kwargs:
            self.buttons[idname] = kwargs["text"]
        return SimpleNamespace()

    def progress(self, factor=0.0, type="BAR", text=""):
        self.log.append(("progress", factor, text))

    def template_list(self, *args, **_kwargs):
        self.log.append(("template_list",) + args[:1])

    def separator(self, **_kwargs):
        pass

    def texts(self):
        return [entry[-1] if entry[0] == "progress" else entry[1] for entry in self.log
                if entry[0] in ("label", "progress")]


_EXIT_STATUS = {"code": 0}


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS["code"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Leave without running bpy's own interpreter-exit teardown, which segfaults in the PyPI
    bpy module (seen with 4.2.23 after every test has passed). By now pytest has printed its
    summary; the process exits with pytest's own status."""
    if bpy is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_STATUS["code"])
