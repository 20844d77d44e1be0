# SPDX-License-Identifier: GPL-3.0-or-later
"""Copies of a textured object start clean. Main thread only.

Shift+D, Alt+D and ``obj.copy()`` copy an object's custom properties: its identity key, the record
of its running job (with the snapshot of its materials before the job) and its run list. A copy
shares the key with its original, which tells them apart: the original is the object the running
job belongs to (its ``session_uid``), else the one whose ``nfsd_uid`` stamp is its own session id
(stamped when its key was made, and for every object when a file is opened), else the first by
name. Each copy then gets its own key, loses the job record and the run list, and gets back the
materials the object had before the job (the preview on it is the original's and goes away with
the original's job); a linked duplicate shares the original's mesh, so only its own
object-linked slots are put back.

Panels and polls cannot write to objects: they ask :func:`is_copy`; the pump (``jobs.process_events``),
the operators, saving and opening a file call :func:`separate_copies`, which writes.
"""

from __future__ import annotations

import uuid

from . import preview, scene_state

_object_count = -1  # bpy.data.objects' length at the last scan: a copy adds an object


def _objects():
    import bpy

    return bpy.data.objects


def owner_of(sharing: list, running_uid: int | None):
    """The original among ``sharing`` (objects with one key); ``running_uid``: the session id of
    the object the key's job was started for, if one runs."""
    for obj in sharing:
        if running_uid is not None and scene_state.session_uid(obj) == running_uid:
            return obj
    stamped = [obj for obj in sharing if obj.nfsd_uid and obj.nfsd_uid == scene_state.session_uid(obj)]
    if len(stamped) == 1:
        return stamped[0]
    return min(stamped or sharing, key=lambda obj: obj.name)


def is_copy(obj, running_uid: int | None = None) -> bool:
    """True when ``obj`` shares its key with another object and is not the original (read only)."""
    key = getattr(obj, "nfsd_key", "")
    if not key:
        return False
    sharing = [other for other in _objects() if other.nfsd_key == key]
    return len(sharing) > 1 and owner_of(sharing, running_uid) != obj


def separate_copies(running: dict, *, force: bool = True) -> list:
    """Make every copy independent (see the module doc); ``running``: ``{key: session id}`` of the
    running jobs. Without ``force`` nothing is scanned while the number of objects is unchanged.
    Returns the copies that were made independent."""
    global _object_count
    objects = _objects()
    if not force and len(objects) == _object_count:
        return []
    _object_count = len(objects)
    groups: dict[str, list] = {}
    for obj in objects:
        key = getattr(obj, "nfsd_key", "")
        if key:
            groups.setdefault(key, []).append(obj)
    separated = []
    for key, sharing in groups.items():
        if len(sharing) < 2:
            continue
        owner = owner_of(sharing, running.get(key))
        for copy in sharing:
            if copy != owner and copy.library is None:
                make_independent(copy, owner)
                separated.append(copy)
    return separated


def stamp_all() -> None:
    """Stamp each object with a key with its session id (a file was opened: the ids are new)."""
    for obj in _objects():
        if getattr(obj, "nfsd_key", "") and obj.library is None:
            obj.nfsd_uid = scene_state.session_uid(obj) or 0


def make_independent(copy, owner) -> None:
    """Give ``copy`` its own identity, no job record, no run list, and the materials the object
    had before ``owner``'s job (when the job record was copied); ``owner`` None: it was deleted."""
    record = copy.nfsd_job
    if record.job_id or record.before.captured:
        shown = [slot.material for slot in copy.material_slots]
        if owner is None or copy.data != owner.data:  # its own mesh (Shift+D): the artist's slots and UV map back
            if record.before.captured:
                scene_state.restore(copy, record.before)
            _remove_created_uv_map(copy, record)
        else:  # a linked duplicate: the mesh's slots are the original's; only its own ones
            for slot, item in zip(copy.material_slots, record.before.slots):
                if slot.link == "OBJECT" and scene_state.is_ours(slot.material):
                    slot.material = item.material
        preview.clear_record(copy)
        for material in shown:  # a copy of the preview material (Duplicate Data: Material)
            scene_state.remove_if_unused(material)
    copy.nfsd_runs.clear()
    copy.nfsd_run_index = 0
    copy.nfsd_key = uuid.uuid4().hex
    copy.nfsd_uid = scene_state.session_uid(copy) or 0


def _remove_created_uv_map(copy, record) -> None:
    created = record.created_uv_map
    layers = copy.data.uv_layers
    if not created or copy.mode == "EDIT" or created not in layers:
        return
    layers.remove(layers[created])
    if record.before.uv_map in layers:
        layers.active = layers[record.before.uv_map]
