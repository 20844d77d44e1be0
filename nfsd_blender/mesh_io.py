# SPDX-License-Identifier: GPL-3.0-or-later
"""Blender mesh objects to the backend's wire format, and the backend's result back into Blender.

Wire format (docs/ARCHITECTURE.md), one ``.npz``:

- ``positions``    float32 ``[V, 3]`` object-space vertex positions, Blender's vertex order
- ``triangles``    int32 ``[F, 3]`` vertex indices of the mesh's loop triangles
- ``uvs``          float32 ``[F, 3, 2]`` per-corner UVs of one UV map (absent: the backend unwraps)
- ``world_matrix`` float32 ``[4, 4]`` object -> world, row-major, column vectors
- ``face_mask``    bool ``[F]`` optional: True where the triangle's polygon is selected (only those
                   faces are re-textured)

Result format: ``texture`` uint8 ``[H, W, 4]`` (row 0 = bottom), ``uvs`` float32 ``[F, 3, 2]``,
``uvs_generated`` bool, optional ``offsets`` float32 ``[V, 3]``, ``meta`` JSON text. The UVs alone
(``GET /jobs/{id}/uvs``, known before the optimization starts): ``uvs`` and ``uvs_generated``.

Everything here touches bpy data and runs on the main thread only, except the pure-numpy readers
(:func:`read_result`, :func:`read_uvs`).
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, field

import numpy as np

GENERATED_UV_NAME = "NFSD_UV"
SHAPE_KEY_NAME = "NFSD offsets"
MATERIAL_PREFIX = "NFSD: "


def mesh_problem(obj, edit_mode_ok: bool = False) -> str | None:
    """Why ``obj`` cannot be textured (a sentence for the panel), or None when it can.
    ``edit_mode_ok``: sending from Edit Mode is fine ("Selected faces only")."""
    if obj is None:
        return "Select a mesh object"
    if obj.type != "MESH":
        return f"'{obj.name}' is not a mesh (it is a {obj.type.lower()})"
    if obj.mode == "EDIT" and not edit_mode_ok:
        return f"Leave Edit Mode on '{obj.name}' first"
    if len(obj.data.polygons) == 0:
        return f"'{obj.name}' has no faces"
    return None


def active_uv_name(obj) -> str:
    """Name of the mesh's active UV map, or "" when it has none."""
    layer = obj.data.uv_layers.active
    return layer.name if layer is not None else ""


def loop_triangles(mesh) -> tuple[np.ndarray, np.ndarray]:
    """``(vertex_indices, loop_indices)``, both int32 ``[F, 3]``, of the mesh's loop triangles.

    Keep the loop indices of what was sent: Blender re-splits a quad when an edit makes it concave,
    so triangle ``f`` later may cover other loops of the same polygon; loop indices stay valid as
    long as the topology does not change."""
    mesh.calc_loop_triangles()
    count = len(mesh.loop_triangles)
    vertices = np.empty(count * 3, np.int32)
    loops = np.empty(count * 3, np.int32)
    mesh.loop_triangles.foreach_get("vertices", vertices)
    mesh.loop_triangles.foreach_get("loops", loops)
    return vertices.reshape(count, 3), loops.reshape(count, 3)


def sync_from_edit_mode(obj) -> None:
    """Edit Mode keeps the mesh in its own copy: write it (UV maps, selection) into ``obj.data`` so
    it can be read, staying in Edit Mode.

    No operator runs here: a Python-called operator under ``context.temp_override`` crashes
    Blender (4.2 and 5.0) when another Python thread (a job's worker) runs at the same moment.
    """
    if obj.mode == "EDIT":
        obj.update_from_editmode()


@contextlib.contextmanager
def alone_in_object_mode(obj):
    """``obj`` the only selected object and the active one for the duration (what operators such
    as Smart UV Project act on), then the view layer's selection and active object as they were.

    Selection is changed through properties, not ``context.temp_override`` (see
    :func:`sync_from_edit_mode`). Call it from Object Mode.
    """
    import bpy

    view_layer = bpy.context.view_layer
    active = view_layer.objects.active
    selected = [other for other in view_layer.objects if other.select_get()]
    try:
        for other in selected:
            other.select_set(False)
        obj.select_set(True)
        view_layer.objects.active = obj
        yield
    finally:
        obj.select_set(False)
        for other in selected:
            other.select_set(True)
        view_layer.objects.active = active


def has_modifiers(obj) -> bool:
    """True when a modifier shows in the viewport: the artist sees a different mesh than ``obj.data``."""
    return any(modifier.show_viewport for modifier in obj.modifiers)


def mesh_arrays(obj, uv_map: str | None = None, shape_key: str = "", evaluated: bool = False,
                selected_faces: bool = False) -> dict[str, np.ndarray]:
    """The wire-format arrays of ``obj`` (see module doc).

    ``uv_map``: name of the UV map to send; None means the active one; "" sends no UVs so the
    backend unwraps. ``shape_key``: send that shape key's positions instead of the mesh's own (the
    basis), e.g. the refined shape of an earlier run. ``evaluated``: send the mesh with its
    modifiers applied, as the viewport shows it (texture only: its UVs are ``uv_map``'s, so the
    texture fits the base mesh too; offsets need the base mesh, whose vertices a shape key holds).
    ``selected_faces``: add ``face_mask`` from the polygons' selection (Edit Mode's, synced first).
    """
    problem = mesh_problem(obj, edit_mode_ok=selected_faces)
    if problem:
        raise ValueError(problem)
    import bpy

    if obj.mode == "EDIT":
        # In Edit Mode a mesh's UV maps read as empty: read a copy of the synced mesh instead.
        sync_from_edit_mode(obj)
        copy = obj.data.copy()
        try:
            return _base_arrays(obj, copy, uv_map, shape_key, selected_faces)
        finally:
            bpy.data.meshes.remove(copy)
    if evaluated:
        evaluated_obj = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
        mesh = evaluated_obj.to_mesh()
        try:
            return _arrays(obj, mesh, uv_map, None)
        finally:
            evaluated_obj.to_mesh_clear()
    return _base_arrays(obj, obj.data, uv_map, shape_key, selected_faces)


def _base_arrays(obj, mesh, uv_map: str | None, shape_key: str, selected_faces: bool) -> dict[str, np.ndarray]:
    arrays = _arrays(obj, mesh, uv_map, _key_data(mesh, shape_key, obj.name) if shape_key else None)
    if selected_faces:
        arrays["face_mask"] = selected_triangles(mesh)
        if not arrays["face_mask"].any():
            raise ValueError(f"No faces of '{obj.name}' are selected: select the faces to re-texture in Edit Mode")
    return arrays


def selected_triangles(mesh) -> np.ndarray:
    """bool ``[F]``: for each loop triangle, whether its polygon is selected."""
    mesh.calc_loop_triangles()
    polygon = np.empty(len(mesh.loop_triangles), np.int32)
    mesh.loop_triangles.foreach_get("polygon_index", polygon)
    selected = np.zeros(len(mesh.polygons), bool)
    mesh.polygons.foreach_get("select", selected)
    return selected[polygon]


def _arrays(obj, mesh, uv_map: str | None, key_data) -> dict[str, np.ndarray]:
    positions = np.empty(len(mesh.vertices) * 3, np.float32)
    if key_data is not None:
        key_data.foreach_get("co", positions)
    else:
        mesh.vertices.foreach_get("co", positions)
    triangles, loops = loop_triangles(mesh)
    arrays = {
        "positions": positions.reshape(-1, 3),
        "triangles": triangles,
        # mathutils.Matrix iterates over rows, so this is row-major with column vectors.
        "world_matrix": np.array(obj.matrix_world, dtype=np.float32),
    }
    name = (mesh.uv_layers.active.name if mesh.uv_layers.active else "") if uv_map is None else uv_map
    if name:
        layer = mesh.uv_layers.get(name)
        if layer is None:
            raise ValueError(f"'{obj.name}' has no UV map named '{name}'")
        corner_uvs = np.empty(len(mesh.loops) * 2, np.float32)
        layer.data.foreach_get("uv", corner_uvs)
        arrays["uvs"] = corner_uvs.reshape(-1, 2)[loops]
    return arrays


def mesh_to_wire(obj, uv_map: str | None = None, shape_key: str = "", evaluated: bool = False,
                 selected_faces: bool = False) -> bytes:
    """``obj`` as wire-format .npz bytes (see :func:`mesh_arrays`)."""
    buffer = io.BytesIO()
    np.savez(buffer, **mesh_arrays(obj, uv_map, shape_key, evaluated, selected_faces))
    return buffer.getvalue()


def shape_key_data(obj, name: str):
    """The per-vertex data of ``obj``'s shape key ``name``; ValueError when it is gone."""
    return _key_data(obj.data, name, obj.name)


def _key_data(mesh, name: str, object_name: str):
    keys = mesh.shape_keys
    key = keys.key_blocks.get(name) if keys is not None else None
    if key is None:
        raise ValueError(f"'{object_name}' lost the shape key '{name}'")
    return key.data


def shape_key_offsets(obj, name: str) -> np.ndarray:
    """float32 ``[V, 3]``: shape key ``name`` minus the basis, in object space."""
    shaped = np.empty(len(obj.data.vertices) * 3, np.float32)
    shape_key_data(obj, name).foreach_get("co", shaped)
    basis = np.empty_like(shaped)
    obj.data.shape_keys.reference_key.data.foreach_get("co", basis)
    return (shaped - basis).reshape(-1, 3)


@dataclass
class Result:
    """A parsed result .npz. ``texture`` float32 ``[H, W, 4]`` in 0..1, row 0 = bottom; for a mesh laid
    out in UDIM tiles ``[T, H, W, 4]``, one per tile of ``tiles`` (int ``[T]``: 1001, 1002...)."""

    texture: np.ndarray
    uvs: np.ndarray
    uvs_generated: bool
    offsets: np.ndarray | None
    meta: dict = field(default_factory=dict)
    tiles: np.ndarray | None = None


def read_result(data: bytes) -> Result:
    """Parse result .npz bytes; ValueError with what is missing or malformed."""
    try:
        npz = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as error:
        raise ValueError(f"the backend's result is not a readable .npz file ({error})") from None
    with npz:
        missing = {"texture", "uvs"} - set(npz.files)
        if missing:
            raise ValueError(f"the backend's result lacks {sorted(missing)}")
        texture = npz["texture"]
        tiles = np.asarray(npz["tiles"]).astype(np.int64) if "tiles" in npz.files else None
        if tiles is not None:  # UDIM: one texture per tile
            if tiles.ndim != 1 or texture.ndim != 4 or texture.shape[0] != len(tiles) or len(tiles) == 0:
                raise ValueError(f"the result has {tiles.size} tile numbers and a texture of shape "
                                 f"{list(texture.shape)}, expected [T, H, W, 4] for T tiles")
        elif texture.ndim != 3:
            raise ValueError(f"the result texture has shape {list(texture.shape)}, expected [H, W, 4]")
        if texture.shape[-1] not in (3, 4):
            raise ValueError(f"the result texture has shape {list(texture.shape)}, expected [H, W, 4]")
        if texture.dtype == np.uint8:
            texture = texture.astype(np.float32) / 255.0
        if texture.shape[-1] == 3:
            texture = np.concatenate([texture, np.ones(texture.shape[:-1] + (1,), np.float32)], axis=-1)
        uvs = np.asarray(npz["uvs"], np.float32)
        offsets = np.asarray(npz["offsets"], np.float32) if "offsets" in npz.files else None
        generated = bool(npz["uvs_generated"]) if "uvs_generated" in npz.files else False
        meta = {}
        if "meta" in npz.files:
            try:
                meta = json.loads(str(npz["meta"]))
            except ValueError:
                meta = {}
    return Result(texture.astype(np.float32), uvs, generated, offsets, meta, tiles)


def read_uvs(data: bytes) -> tuple[np.ndarray, bool]:
    """Parse ``GET /jobs/{id}/uvs`` .npz bytes into ``(uvs float32 [F, 3, 2], uvs_generated)``;
    ValueError with what is missing or malformed. numpy only: safe on a worker thread."""
    try:
        npz = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as error:
        raise ValueError(f"the backend's UVs are not a readable .npz file ({error})") from None
    with npz:
        if "uvs" not in npz.files:
            raise ValueError("the backend's UVs .npz lacks 'uvs'")
        uvs = np.asarray(npz["uvs"], np.float32)
        generated = bool(npz["uvs_generated"]) if "uvs_generated" in npz.files else False
    if uvs.ndim != 3 or uvs.shape[1:] != (3, 2):
        raise ValueError(f"the backend's UVs have shape {list(uvs.shape)}, expected [F, 3, 2]")
    return uvs, generated


def smart_unwrap(obj, name: str = GENERATED_UV_NAME, angle_limit: float = 1.15, island_margin: float = 0.01) -> str:
    """Give ``obj`` (object mode) a UV map ``name`` from Blender's Smart UV Project and make it the
    active map; returns its name.

    Blender keeps one UV per polygon corner, so its own unwrap cuts seams only along polygon edges;
    the backend's xatlas sees triangles and may cut through a quad's diagonal. The artist's
    edit-mode selection and the other objects are left as they were.
    """
    import bpy

    if bpy.context.mode != "OBJECT":
        raise ValueError("Leave Edit Mode first: Blender's unwrap works from Object Mode")
    mesh = obj.data
    layer = mesh.uv_layers.get(name) or mesh.uv_layers.new(name=name)
    mesh.uv_layers.active = layer
    saved = {}  # by name: edit mode rebuilds the mesh's arrays
    for what in ("vertices", "edges", "polygons"):
        items = getattr(mesh, what)
        saved[what] = np.zeros(len(items), bool)
        items.foreach_get("select", saved[what])
    with alone_in_object_mode(obj):
        bpy.ops.object.mode_set(mode="EDIT")
        try:
            bpy.ops.mesh.select_all(action="SELECT")
            bpy.ops.uv.smart_project(angle_limit=angle_limit, island_margin=island_margin)
        finally:
            bpy.ops.object.mode_set(mode="OBJECT")
    for what, flags in saved.items():
        getattr(mesh, what).foreach_set("select", flags)
    mesh.update()
    return name
