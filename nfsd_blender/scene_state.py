# SPDX-License-Identifier: GPL-3.0-or-later
"""What a run may change on an object, recorded so it can be put back exactly; and object identity.

A snapshot (:class:`properties.NFSD_PG_snapshot`, stored on the object so it survives undo, save
and reload) holds:

- each material slot's material and link (``"DATA"``/``"OBJECT"``), as ID pointers: the artist's
  materials keep a user while a snapshot names them, so Blender never drops them on save;
- each polygon's ``material_index`` (ID property ``"face_materials"``, int ``[P]``);
- the active UV map's name and the values of the NFSD shape keys (ID property ``"key_values"``).

Objects are found by identity, not name: ``session_uid`` (unique in a session, kept across undo)
while Blender runs, and the ``nfsd_key`` string property (saved with the file) after a reload.
Main thread only.
"""

from __future__ import annotations

import uuid

import numpy as np

NFSD_TAG = "nfsd"  # ID property on the materials and images the add-on made


# -- identity -----------------------------------------------------------------------------------
def object_key(obj) -> str:
    """``obj``'s persistent key, made (or remade, when a duplicate copied another's) as needed."""
    key = obj.nfsd_key
    if not key or any(other.nfsd_key == key and other != obj for other in _objects()):
        key = obj.nfsd_key = uuid.uuid4().hex
    obj.nfsd_uid = session_uid(obj) or 0  # a copy carries this stamp, not its own id (duplicates)
    return key


def session_uid(obj) -> int | None:
    return getattr(obj, "session_uid", None)


def find_object(uid: int | None, key: str):
    """The object with session id ``uid`` (what Blender keeps across renames and undo); without one,
    the one object carrying ``key``; None when it was deleted (or several claim the key)."""
    if uid is not None:
        for obj in _objects():
            if session_uid(obj) == uid:
                return obj if obj.users else None
    if key and uid is None:  # with a session id, an object carrying the key is a copy (duplicates)
        found = [obj for obj in _objects() if obj.nfsd_key == key]
        if len(found) == 1 and found[0].users:
            return found[0]
    return None


def _objects():
    import bpy

    return bpy.data.objects


# -- snapshots ------------------------------------------------------------------------------------
def capture(obj, snapshot) -> None:
    """Record ``obj``'s slots, per-face material indices, active UV map and NFSD key values."""
    from . import mesh_io

    snapshot.slots.clear()
    for slot in obj.material_slots:
        item = snapshot.slots.add()
        item.material = slot.material
        item.link = slot.link
    mesh = obj.data
    indices = np.zeros(len(mesh.polygons), np.int32)
    mesh.polygons.foreach_get("material_index", indices)
    snapshot["face_materials"] = indices
    snapshot.uv_map = mesh_io.active_uv_name(obj)
    keys = mesh.shape_keys.key_blocks if mesh.shape_keys else []
    snapshot["key_values"] = {k.name: k.value for k in keys if k.name.startswith(mesh_io.SHAPE_KEY_NAME)}
    snapshot.captured = True


def restore(obj, snapshot) -> None:
    """Put back what :func:`capture` recorded: the same number of slots with the same materials and
    links, each face's material index (when the face count is unchanged), UV map, key values."""
    from . import mesh_io

    mesh = obj.data
    if len(mesh.materials) != len(snapshot.slots):
        # clear() (unlike pop()) also resizes the object's own slot list at once.
        mesh.materials.clear()
        for _item in snapshot.slots:
            mesh.materials.append(None)
    for slot, item in zip(obj.material_slots, snapshot.slots):
        slot.link = item.link or "DATA"
        slot.material = item.material
    indices = snapshot.get("face_materials")
    if indices is not None and len(indices) == len(mesh.polygons):
        mesh.polygons.foreach_set("material_index", np.asarray(indices, np.int32))
    if snapshot.uv_map and snapshot.uv_map in mesh.uv_layers:
        mesh.uv_layers.active = mesh.uv_layers[snapshot.uv_map]
    values = snapshot.get("key_values")
    if mesh.shape_keys is not None:
        for key in mesh.shape_keys.key_blocks:
            if key.name.startswith(mesh_io.SHAPE_KEY_NAME):
                key.value = float(values[key.name]) if values is not None and key.name in values else 0.0
    mesh.update()


def clear(snapshot) -> None:
    snapshot.slots.clear()
    for name in ("face_materials", "key_values"):
        if name in snapshot:
            del snapshot[name]
    snapshot.uv_map = ""
    snapshot.captured = False


def materials_in(snapshot) -> list:
    return [item.material for item in snapshot.slots if item.material is not None]


# -- what the add-on made -------------------------------------------------------------------------
def tag(data_block) -> None:
    """Mark a material or image as made by the add-on (so a run never takes it for the artist's)."""
    data_block[NFSD_TAG] = True


def is_ours(data_block) -> bool:
    return data_block is not None and bool(data_block.get(NFSD_TAG))


def shows_nfsd(obj) -> bool:
    """True when any slot of ``obj`` holds a material the add-on made."""
    return any(is_ours(slot.material) for slot in obj.material_slots)


def remove_if_unused(data_block) -> bool:
    """Remove a material/image the add-on made once nothing uses it; True if removed."""
    import bpy

    if data_block is None or not is_ours(data_block) or data_block.users > 0:
        return False
    collection = bpy.data.materials if isinstance(data_block, bpy.types.Material) else bpy.data.images
    collection.remove(data_block)
    return True


def objects_sharing_mesh(obj) -> list:
    """The other objects that use ``obj``'s mesh (linked duplicates): a result changes them too."""
    return [other for other in _objects() if other.data == obj.data and other != obj]


def push_undo(message: str) -> None:
    """Make what was just changed one undo step; quietly skipped where there is no undo stack."""
    import bpy

    try:
        if bpy.ops.ed.undo_push.poll():
            bpy.ops.ed.undo_push(message=message)
    except RuntimeError:
        pass
