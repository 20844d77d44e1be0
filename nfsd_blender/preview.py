# SPDX-License-Identifier: GPL-3.0-or-later
"""The live preview of a running job on its object, and putting the scene back when a job ends
without a result (failed, cancelled, interrupted, object deleted).

What a job put on the object is named in the object's job record (``obj.nfsd_job``, see
properties.NFSD_PG_job): the preview material and image, a UV map it created, and the snapshot of
the object before the job (scene_state). Main thread only.
"""

from __future__ import annotations

import json

from . import image_io, mesh_io, mesh_write, scene_state


def material_name(settings: dict) -> str:
    return mesh_io.MATERIAL_PREFIX + settings.get("prompt", "")


def image_name(obj, settings: dict) -> str:
    return f"NFSD {obj.name}: {settings.get('prompt', '')}"


def begin(obj, job, *, uv_map: str, base_key: str, created_uv_map: str, evaluated: bool,
          apply_into: bool) -> None:
    """Fill the object's job record for ``job`` (the snapshot was taken before anything changed)."""
    record = obj.nfsd_job
    record.settings = json.dumps(job.settings)
    record.uv_map, record.base_key, record.created_uv_map = uv_map, base_key, created_uv_map
    record.evaluated, record.apply_into_material = evaluated, apply_into
    job.cleanup.mesh_name = obj.data.name
    job.cleanup.slots_before = [(item.material.name if item.material else "", item.link)
                                for item in record.before.slots]


def show_png(job, obj, png: bytes) -> None:
    """Put a preview snapshot (PNG bytes) into the preview image, and the preview material on the
    object once there is a UV map to lay it on."""
    if obj.type != "MESH" or not job.active:
        return
    try:
        pixels = image_io.decode_png(png)
    except ValueError:
        return  # a half-written snapshot; the next one will do
    record = obj.nfsd_job
    image = record.preview_image
    if image is None:
        image = mesh_write.new_texture_image(image_name(obj, job.settings), pixels.shape[1], pixels.shape[0])
        scene_state.tag(image)
        record.preview_image = image
        job.cleanup.preview_image_name = image.name
    image_io.set_image_pixels(image, pixels)
    job.previews += 1
    show_material(job, obj)


def show_material(job, obj) -> None:
    """The preview material on every slot of ``obj``, reading the sent UV map or, for a mesh sent
    without UVs, the backend's unwrap (until it arrives the image updates in the Image Editor only)."""
    record = obj.nfsd_job
    uv_map = job.uv_map or job.preview_uv_map
    if not uv_map or record.preview_image is None or obj.mode == "EDIT" or record.preview_material is not None:
        return
    material = mesh_write.texture_material(material_name(job.settings), record.preview_image, uv_map)
    scene_state.tag(material)
    record.preview_material = material
    job.cleanup.preview_material_name = material.name
    mesh_write.assign_material(obj, material)


def apply_uvs(job, obj) -> None:
    """Store the backend's unwrap (``job.pending_uvs``) as UV map "NFSD_UV", then show the preview."""
    if not job.active or job.state == "cancelling" or obj.type != "MESH":
        job.pending_uvs = None
        return
    if obj.mode == "EDIT":
        return  # Edit Mode would overwrite the layer on exit: a later process_events call applies it
    uvs, job.pending_uvs = job.pending_uvs, None
    existed = mesh_io.GENERATED_UV_NAME in obj.data.uv_layers
    try:
        layer = mesh_write.write_uv_map(obj, mesh_io.GENERATED_UV_NAME, uvs, job.loops)
    except ValueError:
        return  # the mesh was edited since it was sent: no preview on it; the result says why
    job.preview_uv_map = layer.name
    if not existed:
        obj.nfsd_job.created_uv_map = layer.name
    show_material(job, obj)


def detach_for_save(obj) -> tuple | None:
    """Take the preview out of ``obj`` before a save (the file then holds the artist's materials and
    no unsaved image); returns what :func:`reattach_after_save` puts back, or None."""
    record = obj.nfsd_job
    material, image = record.preview_material, record.preview_image
    if material is None and image is None:
        return None
    if record.before.captured:
        scene_state.restore(obj, record.before)
    node = material.node_tree.nodes.get("NFSD Texture") if material is not None and material.node_tree else None
    if node is not None:
        node.image = None
    record.preview_material = record.preview_image = None
    return material, image


def reattach_after_save(obj, stashed: tuple) -> None:
    material, image = stashed
    record = obj.nfsd_job
    record.preview_material, record.preview_image = material, image
    if material is not None:
        node = material.node_tree.nodes.get("NFSD Texture")
        if node is not None:
            node.image = image
        mesh_write.assign_material(obj, material)
    if record.base_key:
        mesh_write.show_offsets_key(obj, record.base_key)


def drop_preview(obj) -> None:
    """Put the slots back as they were and remove the preview material and image, keeping the job
    record (a reopened file whose autosave held the preview; the job may still be reattached)."""
    import bpy

    record = obj.nfsd_job
    if record.before.captured:
        scene_state.restore(obj, record.before)
    material, image = record.preview_material, record.preview_image
    record.preview_material = record.preview_image = None
    if scene_state.is_ours(material):
        bpy.data.materials.remove(material)
    if scene_state.is_ours(image) and image.users == 0:
        bpy.data.images.remove(image)


def discard(obj) -> None:
    """Leave ``obj`` as it was before its job: slots, face materials, UV map, key values; the preview
    material and image and a UV map the job made are removed; the job record is cleared."""
    record = obj.nfsd_job
    drop_preview(obj)
    created = record.created_uv_map
    if created and obj.mode != "EDIT":
        layer = obj.data.uv_layers.get(created)
        if layer is not None:
            obj.data.uv_layers.remove(layer)
        if record.before.uv_map in obj.data.uv_layers:
            obj.data.uv_layers.active = obj.data.uv_layers[record.before.uv_map]
    clear_record(obj)


def clear_record(obj) -> None:
    record = obj.nfsd_job
    record.job_id = record.settings = record.uv_map = record.base_key = record.created_uv_map = ""
    record.evaluated = record.apply_into_material = False
    record.preview_material = record.preview_image = None
    scene_state.clear(record.before)


def discard_orphan(job) -> None:
    """Clean up after a job whose object was deleted: its preview material and image go, and a mesh
    still used by other objects (linked duplicates) gets its materials back."""
    import bpy

    cleanup = job.cleanup
    mesh = bpy.data.meshes.get(cleanup.mesh_name) if cleanup.mesh_name else None
    if mesh is not None:
        for index, (name, link) in enumerate(cleanup.slots_before):
            if link == "DATA" and index < len(mesh.materials):
                mesh.materials[index] = bpy.data.materials.get(name) if name else None
    material = bpy.data.materials.get(cleanup.preview_material_name) if cleanup.preview_material_name else None
    if scene_state.is_ours(material):
        bpy.data.materials.remove(material)
    image = bpy.data.images.get(cleanup.preview_image_name) if cleanup.preview_image_name else None
    if scene_state.is_ours(image):
        bpy.data.images.remove(image)
