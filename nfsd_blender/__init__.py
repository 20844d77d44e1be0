# SPDX-License-Identifier: GPL-3.0-or-later
"""NFSD Texturing: texture meshes from a text prompt on an NFSD backend (``nfsd serve``).

Modules, one concept each:

- ``client``         HTTP client of the backend API (standard library only, no bpy)
- ``image_io``       pixels between Blender images, numpy and PNG
- ``mesh_io``        mesh object -> wire .npz; result -> image, material, UV map, shape key
- ``jobs``           worker threads per job, main-thread application of their results
- ``local_backend``  start/stop ``nfsd serve`` on this computer
- ``properties``     scene settings and per-object run history
- ``preferences``    backend URL, token, local backend command
- ``operators``      thin operators over the plain functions above
- ``ui``             the sidebar panel and status bar line (drawing only)
"""

from . import jobs, local_backend, operators, preferences, properties, ui

# Registration order matters: properties before the UI that draws them; reversed on unregister.
_modules = (properties, preferences, operators, ui)


def register() -> None:
    for module in _modules:
        module.register()


def unregister() -> None:
    jobs.shutdown()
    local_backend.stop()
    for module in reversed(_modules):
        module.unregister()
