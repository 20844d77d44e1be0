# SPDX-License-Identifier: GPL-3.0-or-later
"""Results on the object and the run list: apply a result, re-apply an earlier run, put the
artist's original materials back, delete a run, export a run's texture. Main thread only.

A result goes on the object one of two ways:

- a new material "NFSD: <prompt>" (Principled BSDF, Base Color from the texture) in every slot, so
  the whole mesh shows it while each face keeps its material index;
- "Apply into existing material": a copy of the active material, "<name> + NFSD", whose Principled
  BSDF Base Color is fed by the texture, its other inputs untouched, in the slots that held it.

A pbr result's maps (material_maps) feed the same Principled BSDF's Roughness, Metallic and Normal.

Either way the artist's materials stay referenced by ``obj.nfsd_original`` (so Blender never drops
them) and :func:`restore_original` puts the slots and per-face material indices back exactly.
"""

from __future__ import annotations

import os
import time

import numpy as np

from . import image_io, material_maps, mesh_io, mesh_write, preview, scene_state


def result_warnings(meta: dict) -> list[str]:
    """The mesh warnings the backend put in a result's ``meta`` (non-manifold edges, duplicate
    vertices, ...), each prefixed "Mesh: "; [] when there are none or ``meta`` is malformed."""
    mesh = meta.get("mesh") if isinstance(meta, dict) else None
    found = mesh.get("warnings") if isinstance(mesh, dict) else None
    if not isinstance(found, list):
        return []
    return [f"Mesh: {text}" for text in found if isinstance(text, str) and text.strip()]


def apply_pending(job, obj) -> None:
    """Apply ``job.pending_result`` to ``obj`` (waits while it is in Edit Mode) as one undo step."""
    if obj.mode == "EDIT":
        return
    data, job.pending_result = job.pending_result, None
    record = obj.nfsd_job
    try:
        run = apply_result(obj, data, job.settings, uv_map=job.uv_map, base_key=job.base_key, loops=job.loops,
                           job_id=job.job_id, image=record.preview_image, material=record.preview_material,
                           evaluated=record.evaluated, apply_into=record.apply_into_material)
    except ValueError as error:
        job.fail(f"The result could not be applied: {error}")
        preview.discard(obj)
        return
    job.warnings = run.warnings.splitlines()
    preview.clear_record(obj)
    scene_state.push_undo(f"NFSD texture '{obj.name}'")


def apply_result(obj, data: bytes, settings: dict, *, uv_map: str = "", base_key: str = "",
                 loops: np.ndarray | None = None, job_id: str = "", image=None, material=None,
                 evaluated: bool = False, apply_into: bool = False):
    """Put a result .npz on ``obj``: image (packed), material, UV map "NFSD_UV" when the backend
    unwrapped, shape key "NFSD offsets" when offsets came back, and a new entry in
    ``obj.nfsd_runs`` (returned). ``uv_map`` is the UV map whose UVs were sent ("" = none);
    ``base_key`` the shape key whose positions were sent ("" = the basis): the result's offsets add
    to it. ``loops``: the loop of each sent triangle corner (default: the current ones).
    ``evaluated``: the mesh was sent with its modifiers applied (its UVs are ``uv_map``'s, so the
    result's per-triangle UVs are not written back). ``image``/``material``: the live preview's,
    reused so the viewport does not flicker. Raises ValueError, with nothing changed, when the
    result does not fit the mesh."""
    result = mesh_io.read_result(data)
    mesh = obj.data
    base_offsets = mesh_io.shape_key_offsets(obj, base_key) if base_key else None  # ValueError if gone
    mesh.calc_loop_triangles()
    if not evaluated and result.uvs.shape != (len(mesh.loop_triangles), 3, 2):
        raise ValueError(f"the result has UVs for {result.uvs.shape[0]} triangles but '{obj.name}' has "
                         f"{len(mesh.loop_triangles)}; was the mesh edited while the job ran?")
    if result.offsets is not None and result.offsets.shape != (len(mesh.vertices), 3):
        raise ValueError(f"the result has offsets for {result.offsets.shape[0]} vertices but '{obj.name}' "
                         f"has {len(mesh.vertices)}; was the mesh edited while the job ran?")

    maps = material_maps.read_maps(data, result.texture.shape)  # {} for albedo; ValueError: nothing changed

    warnings = result_warnings(result.meta)
    if not evaluated and (result.uvs_generated or not uv_map or uv_map not in mesh.uv_layers):
        uv_map = mesh_write.write_uv_map(obj, uv_map if uv_map and not result.uvs_generated
                                      else mesh_io.GENERATED_UV_NAME, result.uvs, loops).name
        cut = mesh_write.polygons_cut(obj, result.uvs, loops)
        if cut:
            warnings.append(f"The backend's unwrap cut {cut} polygon(s) along a diagonal; Blender keeps one UV "
                            "per corner, so the texture shows a seam there. Turn on 'Unwrap in Blender' or "
                            "give the mesh a UV map, and run again.")
    height, width = result.texture.shape[-3:-1]
    if result.tiles is not None:  # UDIM tiles: a tiled image takes the place of the preview's single one
        tiled = mesh_write.new_tiled_texture_image(preview.image_name(obj, settings), result.tiles, result.texture)
        scene_state.tag(tiled)
        if image is not None:
            import bpy

            image.user_remap(tiled)  # the preview material's texture node
            if scene_state.is_ours(image) and image.users == 0:
                bpy.data.images.remove(image)
                tiled.name = preview.image_name(obj, settings)
        image = tiled
        if material is not None:
            mesh_write.set_image_of_material(material, image)
    else:
        if image is None:
            image = mesh_write.new_texture_image(preview.image_name(obj, settings), width, height)
            scene_state.tag(image)
        image_io.set_image_pixels(image, result.texture)
        image.pack()
    map_images = material_maps.new_images(preview.image_name(obj, settings), maps, result.tiles)

    target = None
    if apply_into:
        target = into_material(obj)
        if target is None or _principled(target) is None:
            warnings.append("The active material has no Principled BSDF, so the texture went into a new "
                            "NFSD material instead.")
            target = None
    if target is not None:
        if material is not None and scene_state.is_ours(material):
            import bpy

            bpy.data.materials.remove(material)  # the preview's: the texture goes into the copy instead
        material = material_with_texture(target, image, uv_map, settings)
        put_into_slots_of(obj, target, material)
    else:
        if material is None:
            material = mesh_write.texture_material(preview.material_name(settings), image, uv_map)
            scene_state.tag(material)
        else:
            mesh_write.set_uv_map_of_material(material, uv_map)
        mesh_write.assign_material(obj, material)
    if map_images:
        material_maps.wire_maps(material, _principled(material), map_images, uv_map)
    shape_key = base_key
    if result.offsets is not None:  # each run keeps its own key, so an earlier run can be re-applied
        offsets = result.offsets if base_offsets is None else base_offsets + result.offsets
        shape_key = mesh_write.write_offsets(obj, offsets, mesh_write.new_offsets_key_name(obj)).name
    else:
        mesh_write.show_offsets_key(obj, shape_key)  # the shape this run's texture was made on

    run = obj.nfsd_runs.add()
    run.prompt = settings.get("prompt", "")
    run.mode = str(settings.get("mode", "nfsd"))
    run.model = str(settings.get("model") or "")
    run.seed = int(settings.get("seed", 0))
    run.steps = int(settings.get("steps", 0) or 0)
    run.texture_size = int(width)
    run.job_id = job_id
    run.image = image
    material_maps.keep_in_run(run, map_images)
    run.material = material
    run.target_material = target
    run.uv_map = uv_map
    run.shape_key = shape_key
    run.created = time.strftime("%Y-%m-%d %H:%M")
    run.warnings = "\n".join(warnings)
    obj.nfsd_run_index = len(obj.nfsd_runs) - 1
    return run


# -- "Apply into existing material" ---------------------------------------------------------------
def into_material(obj):
    """The artist's material a run with "Apply into existing material" goes into: the active
    slot's, as it was before a running job; an NFSD copy of one ("Wood + NFSD: ...", from an
    earlier run) stands for the material it was made from. None: there is none."""
    index = obj.active_material_index
    record = obj.nfsd_job
    if record.before.captured and index < len(record.before.slots):
        material = record.before.slots[index].material
    else:
        material = obj.active_material
    if scene_state.is_ours(material):
        material = next((run.target_material for run in obj.nfsd_runs if run.material == material), None)
    return material


def into_note(obj, inputs: str = "Base Color") -> str:
    """The panel's line for "Apply into existing material": where the texture (and maps) will go,
    ``inputs`` naming the Principled BSDF inputs they feed."""
    target = into_material(obj)
    if target is None:
        return "No material in the active slot: a new NFSD material instead"
    if _principled(target) is None:
        return f"'{target.name}' has no Principled BSDF: a new NFSD material instead"
    return f"Into a copy of '{target.name}' ({inputs})"


def _principled(material):
    tree = material.node_tree if material is not None else None
    return next((n for n in tree.nodes if n.type == "BSDF_PRINCIPLED"), None) if tree else None


def material_with_texture(target, image, uv_map: str, settings: dict):
    """A copy of ``target`` named "<target> + NFSD: <prompt>" whose Principled BSDF Base Color is the
    texture of ``image`` on UV map ``uv_map``; every other input and node stays as it was."""
    material = target.copy()
    material.name = f"{target.name} + {preview.material_name(settings)}"
    scene_state.tag(material)
    mesh_write.wire_base_color(material, _principled(material), image, uv_map)
    return material


def put_into_slots_of(obj, target, material) -> None:
    """The slots as they were before the job, with ``material`` wherever ``target`` was."""
    if obj.nfsd_job.before.captured:
        scene_state.restore(obj, obj.nfsd_job.before)
    elif obj.nfsd_original.captured:
        scene_state.restore(obj, obj.nfsd_original)
    # Slots showing an earlier run's copy of the same material take the new copy too.
    earlier = [run.material for run in obj.nfsd_runs if run.target_material == target and run.material]
    for slot in obj.material_slots:
        if slot.material == target or any(slot.material == copy for copy in earlier):
            slot.material = material


# -- the run list -----------------------------------------------------------------------------------
def apply_run(obj, index: int) -> None:
    """Re-apply an earlier run of ``obj``: its material (texture and UV map) goes back on the mesh,
    and its offsets shape key is the only NFSD key at 1 (all at 0 for a run without offsets)."""
    if not 0 <= index < len(obj.nfsd_runs):
        raise ValueError(f"'{obj.name}' has no NFSD run number {index + 1}")
    run = obj.nfsd_runs[index]
    if run.material is None:
        raise ValueError("That run's material was deleted")
    if run.uv_map and run.uv_map not in obj.data.uv_layers:
        raise ValueError(f"'{obj.name}' lost the UV map '{run.uv_map}' of that run")
    keys = obj.data.shape_keys.key_blocks if obj.data.shape_keys else {}
    if run.shape_key and run.shape_key not in keys:
        raise ValueError(f"'{obj.name}' lost the shape key '{run.shape_key}' with that run's offsets")
    if run.target_material is not None:
        if obj.nfsd_original.captured:
            scene_state.restore(obj, obj.nfsd_original)
        for slot in obj.material_slots:
            if slot.material == run.target_material:
                slot.material = run.material
    else:
        mesh_write.assign_material(obj, run.material)
    mesh_write.show_offsets_key(obj, run.shape_key)
    if run.uv_map:
        obj.data.uv_layers.active = obj.data.uv_layers[run.uv_map]
    obj.nfsd_run_index = index


def restore_original(obj) -> None:
    """Put back the artist's materials as they were before the first NFSD run: the same slots, links
    and per-face material indices, the active UV map; every NFSD shape key at 0."""
    if not obj.nfsd_original.captured:
        raise ValueError(f"'{obj.name}' has no original materials recorded (it was never textured)")
    scene_state.restore(obj, obj.nfsd_original)
    mesh_write.show_offsets_key(obj, "")


def delete_run(obj, index: int) -> None:
    """Remove run ``index`` from the list; its material, image and shape key go when nothing else
    uses them. A run on show is first replaced by the original materials."""
    if not 0 <= index < len(obj.nfsd_runs):
        raise ValueError(f"'{obj.name}' has no NFSD run number {index + 1}")
    run = obj.nfsd_runs[index]
    material, image, key = run.material, run.image, run.shape_key
    maps = list(material_maps.run_images(run).values())
    if material is not None and any(slot.material == material for slot in obj.material_slots):
        if obj.nfsd_original.captured:
            restore_original(obj)
        else:
            for slot in obj.material_slots:
                if slot.material == material:
                    slot.material = None
    obj.nfsd_runs.remove(index)
    obj.nfsd_run_index = max(0, min(obj.nfsd_run_index, len(obj.nfsd_runs) - 1))
    scene_state.remove_if_unused(material)
    for unused in [image] + maps:
        scene_state.remove_if_unused(unused)
    keys = obj.data.shape_keys.key_blocks if obj.data.shape_keys else {}
    if key and key in keys and not any(other.shape_key == key for other in obj.nfsd_runs):
        obj.shape_key_remove(keys[key])


def export_run_png(run, path: str) -> str:
    """Write the run's texture to ``path`` as an 8-bit RGBA PNG (".png" added if missing), a pbr
    run's maps beside it ("<name>_roughness.png", "_metallic.png", "_normal.png"); returns the
    texture's path."""
    if run.image is None:
        raise ValueError("That run's image is gone")
    path = bpy_abspath(path)
    if not path.lower().endswith(".png"):
        path += ".png"
    rgba = image_io.image_rgba8(run.image)
    folder = os.path.dirname(path)
    if folder and not os.path.isdir(folder):
        raise ValueError(f"The folder {folder} does not exist")
    with open(path, "wb") as file:
        file.write(image_io.encode_png(rgba))
    material_maps.export_pngs(run, path)
    return path


def bpy_abspath(path: str) -> str:
    import bpy

    return bpy.path.abspath(path)
