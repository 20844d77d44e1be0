# SPDX-License-Identifier: GPL-3.0-or-later
"""The add-on's bpy calls while a job's worker thread runs Python.

An operator called from Python under ``context.temp_override`` crashes Blender (4.2 and 5.0,
segmentation fault within ~50 calls) when another Python thread runs at the same moment: a
job's worker thread, polling the backend. The add-on used it to leave Edit Mode and to unwrap;
CI crashed on it. A crash kills the process, so each check runs in its own Blender process.
"""

import os
import subprocess
import sys
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

SCRIPT = """
    import sys, threading, json
    import bpy
    sys.path.insert(0, {root!r})
    from nfsd_blender import mesh_io

    stop = threading.Event()

    def worker():  # what a job's thread does between requests: plain Python
        while not stop.is_set():
            json.dumps({{"prompt": "red and white stripes", "steps": 150, "sizes": [512, 1024]}})

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        bpy.ops.mesh.primitive_cube_add()
        cube = bpy.context.active_object
        bpy.ops.mesh.primitive_uv_sphere_add(location=(3, 0, 0))
        other = bpy.context.active_object  # active and selected: the unwrap must leave it so
        for _ in range({rounds}):
            {body}
    finally:
        stop.set()
        thread.join()
    print("survived")
"""

UNWRAP = """mesh_io.smart_unwrap(cube)
            assert bpy.context.view_layer.objects.active == other and other.select_get() and not cube.select_get()"""
EDIT_MODE = """bpy.context.view_layer.objects.active = cube
            bpy.ops.object.mode_set(mode="EDIT")
            arrays = mesh_io.mesh_arrays(cube, selected_faces=True)
            assert cube.mode == "EDIT" and arrays["face_mask"].all()
            bpy.ops.object.mode_set(mode="OBJECT")"""


def run_with_a_worker_thread(body: str, rounds: int = 150) -> subprocess.CompletedProcess:
    script = textwrap.dedent(SCRIPT.format(root=ROOT, rounds=rounds, body=body))
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)


def test_smart_unwrap_survives_a_running_worker_thread_and_keeps_the_selection():
    result = run_with_a_worker_thread(UNWRAP)
    assert result.returncode == 0 and "survived" in result.stdout, result.stderr[-2000:]


def test_reading_the_edit_mode_selection_survives_a_running_worker_thread():
    result = run_with_a_worker_thread(EDIT_MODE)
    assert result.returncode == 0 and "survived" in result.stdout, result.stderr[-2000:]
