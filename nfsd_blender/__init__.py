# SPDX-License-Identifier: GPL-3.0-or-later
"""NFSD Texturing: texture meshes from a text prompt on an NFSD backend (``nfsd serve``).

Modules, one concept each:

- ``client``          HTTP client of the backend API (standard library only, no bpy)
- ``backend_status``  the backend line: health, token check, the models offered (no bpy)
- ``estimate``        what the settings will run and how long, asked of the backend in the background (no bpy)
- ``image_io``        pixels between Blender images, numpy and PNG
- ``mesh_io``         mesh object -> wire .npz; the backend's answers parsed
- ``mesh_write``      a result into the object: UV map, shape keys, image, material
- ``material_maps``   a pbr result's roughness, metallic and normal maps: images, wiring, export
- ``scene_state``     snapshot/restore of an object's materials, face indices, UV map, key values;
                      object identity; one undo step
- ``worker``          a job's HTTP thread: submit, poll, fetch previews, UVs and the result (no bpy)
- ``submit_turns``    the jobs of one press of Texture submit one by one; a full queue stops the rest (no bpy)
- ``job``             one job: what was sent, the state the panel shows, what its clean-up needs (no bpy)
- ``jobs``            the running jobs: start, pump events into the scene, cancel, resubmit, reattach
- ``selection``       Texture on every selected mesh: what is sent or left out, the selection's jobs, Cancel All
- ``duplicates``      copies of an object (Shift+D, Alt+D) start without its job record, runs and key
- ``preview``         a job's live preview on its object, and the clean-up when a job ends without a result
- ``results``         results on the object and the run list (Original, delete, export)
- ``file_handlers``   saving and opening files while jobs run
- ``local_backend``   start/stop ``nfsd serve`` on this computer
- ``properties``      scene settings, per-object runs, original materials and job record
- ``presets``         quality presets and the model picker of the settings (no bpy)
- ``preferences``     backend URL, token, local backend program
- ``operators``       texturing operators and the timer that pumps job events
- ``run_operators``   the run list's operators (apply, Original, delete, export)
- ``backend_operators`` Test Connection, Unload Model, start/stop the local backend
- ``ui``              the sidebar panel and status bar line (drawing only)
"""

from . import (backend_operators, file_handlers, jobs, local_backend, operators, preferences, properties,
               run_operators, ui)

# Registration order matters: properties before the UI that draws them; reversed on unregister.
_modules = (properties, preferences, operators, run_operators, backend_operators, file_handlers, ui)


def register() -> None:
    for module in _modules:
        module.register()


def unregister() -> None:
    jobs.shutdown()
    local_backend.stop()
    for module in reversed(_modules):
        module.unregister()
