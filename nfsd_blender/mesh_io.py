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


@contextlib.contextmanager
def out_of_edit_mode(obj):
    """Object Mode for the duration (Edit Mode keeps the mesh in its own copy: its UV maps and
    selection are read from the mesh only outside it), then Edit Mode again."""
    import bpy

    if obj.mode != "EDIT":
        yield
        return
    override = dict(active_object=obj, object=obj, selected_objects=[obj], selected_editable_objects=[obj])
    with bpy.context.temp_override(**override):
        bpy.ops.object.mode_set(mode="OBJECT")
    try:
        yield
    finally:
        with bpy.context.temp_override(**override):
            bpy.ops.object.mode_set(mode="EDIT")


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
    if obj.mode == "EDIT":
        with out_of_edit_mode(obj):
            return mesh_arrays(obj, uv_map, shape_key, evaluated, selected_faces)
    if evaluated:
        import bpy

        evaluated_obj = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
        mesh = evaluated_obj.to_mesh()
        try:
            return _arrays(obj, mesh, uv_map, None)
        finally:
            evaluated_obj.to_mesh_clear()
    arrays = _arrays(obj, obj.data, uv_map, shape_key_data(obj, shape_key) if shape_key else None)
    if selected_faces:
        arrays["face_mask"] = selected_triangles(obj.data)
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
    keys = obj.data.shape_keys
    key = keys.key_blocks.get(name) if keys is not None else None
    if key is None:
        raise ValueError(f"'{obj.name}' lost the shape key '{name}'")
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
    """A parsed result .npz. ``texture`` float32 ``[H, W, 4]`` in 0..1, row 0 = bottom."""

    texture: np.ndarray
    uvs: np.ndarray
    uvs_generated: bool
    offsets: np.ndarray | None
    meta: dict = field(default_factory=dict)


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
        if texture.ndim != 3 or texture.shape[2] not in (3, 4):
            raise ValueError(f"the result texture has shape {list(texture.shape)}, expected [H, W, 4]")
        if texture.dtype == np.uint8:
            texture = texture.astype(np.float32) / 255.0
        if texture.shape[2] == 3:
            texture = np.concatenate([texture, np.ones(texture.shape[:2] + (1,), np.float32)], axis=2)
        uvs = np.asarray(npz["uvs"], np.float32)
        offsets = np.asarray(npz["offsets"], np.float32) if "offsets" in npz.files else None
        generated = bool(npz["uvs_generated"]) if "uvs_generated" in npz.files else False
        meta = {}
        if "meta" in npz.files:
            try:
                meta = json.loads(str(npz["meta"]))
            except ValueError:
                meta = {}
    return Result(texture.astype(np.float32), uvs, generated, offsets, meta)


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


def write_uv_map(obj, name: str, uvs: np.ndarray, loops: np.ndarray | None = None):
    """Store per-loop-triangle-corner ``uvs`` float32 ``[F, 3, 2]`` as UV map ``name`` (made
    active); returns the layer. ``loops`` int32 ``[F, 3]``: the loop of each corner, as
    :func:`loop_triangles` gave them when the mesh was sent (default: the mesh's current ones)."""
    mesh = obj.data
    current = loop_triangles(mesh)[1]
    loops = current if loops is None else loops
    if uvs.shape != loops.shape + (2,) or loops.shape != current.shape or loops.max() >= len(mesh.loops):
        raise ValueError(f"the result has UVs for {uvs.shape[0]} triangles but '{obj.name}' has "
                         f"{current.shape[0]}; was the mesh edited while the job ran?")
    layer = mesh.uv_layers.get(name) or mesh.uv_layers.new(name=name)
    corner_uvs = np.zeros((len(mesh.loops), 2), np.float32)
    corner_uvs[loops.ravel()] = uvs.reshape(-1, 2)
    layer.data.foreach_set("uv", corner_uvs.ravel())
    mesh.uv_layers.active = layer
    mesh.update()
    return layer


def polygons_cut(obj, uvs: np.ndarray, loops: np.ndarray | None = None) -> int:
    """How many polygons of ``obj`` get two different UVs at one corner from per-loop-triangle-corner
    ``uvs`` float32 ``[F, 3, 2]`` (``loops`` as in :func:`write_uv_map`): an unwrap of the triangles
    alone (xatlas in the backend) may put a seam along a quad's diagonal, which a Blender UV map
    (one UV per loop) cannot hold."""
    mesh = obj.data
    loops = loop_triangles(mesh)[1] if loops is None else loops
    sizes = np.empty(len(mesh.polygons), np.int32)
    mesh.polygons.foreach_get("loop_total", sizes)
    polygon_of_loop = np.repeat(np.arange(len(sizes)), sizes)  # a polygon's loops are consecutive
    kept = np.zeros((len(mesh.loops), 2), np.float32)
    kept[loops.ravel()] = uvs.reshape(-1, 2)
    differs = (np.abs(kept[loops] - uvs) > 1e-5).any(axis=(1, 2))
    return int(np.unique(polygon_of_loop[loops[differs, 0]]).size)


def smart_unwrap(obj, name: str = GENERATED_UV_NAME, angle_limit: float = 1.15, island_margin: float = 0.01) -> str:
    """Give ``obj`` (object mode) a UV map ``name`` from Blender's Smart UV Project and make it the
    active map; returns its name.

    Blender keeps one UV per polygon corner, so its own unwrap cuts seams only along polygon edges;
    the backend's xatlas sees triangles and may cut through a quad's diagonal. The artist's
    edit-mode selection and the other objects are left as they were.
    """
    import bpy

    mesh = obj.data
    layer = mesh.uv_layers.get(name) or mesh.uv_layers.new(name=name)
    mesh.uv_layers.active = layer
    saved = {}  # by name: edit mode rebuilds the mesh's arrays
    for what in ("vertices", "edges", "polygons"):
        items = getattr(mesh, what)
        saved[what] = np.zeros(len(items), bool)
        items.foreach_get("select", saved[what])
    override = dict(active_object=obj, object=obj, selected_objects=[obj], selected_editable_objects=[obj])
    with bpy.context.temp_override(**override):
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


def new_offsets_key_name(obj) -> str:
    """"NFSD offsets" for an object's first run with offsets, then "NFSD offsets 2", 3, ..."""
    keys = obj.data.shape_keys.key_blocks if obj.data.shape_keys else {}
    name, n = SHAPE_KEY_NAME, 1
    while name in keys:
        n += 1
        name = f"{SHAPE_KEY_NAME} {n}"
    return name


def show_offsets_key(obj, name: str) -> None:
    """Set the NFSD shape key ``name`` to 1 and every other NFSD shape key to 0 (``""``: all 0)."""
    if obj.data.shape_keys is None:
        return
    for key in obj.data.shape_keys.key_blocks:
        if key.name.startswith(SHAPE_KEY_NAME):
            key.value = 1.0 if key.name == name else 0.0
    obj.data.update()


def write_offsets(obj, offsets: np.ndarray, name: str = SHAPE_KEY_NAME):
    """Store object-space ``offsets`` float32 ``[V, 3]`` as shape key ``name`` (value 1; other NFSD
    keys go to 0), relative to the basis key (created if the mesh had none); returns the key."""
    mesh = obj.data
    if offsets.shape != (len(mesh.vertices), 3):
        raise ValueError(f"the result has offsets for {offsets.shape[0]} vertices but '{obj.name}' has "
                         f"{len(mesh.vertices)}; was the mesh edited while the job ran?")
    if mesh.shape_keys is None:
        obj.shape_key_add(name="Basis", from_mix=False)
    basis = mesh.shape_keys.reference_key
    key = mesh.shape_keys.key_blocks.get(name) or obj.shape_key_add(name=name, from_mix=False)
    base = np.empty(len(mesh.vertices) * 3, np.float32)
    basis.data.foreach_get("co", base)
    key.data.foreach_set("co", base + offsets.astype(np.float32).ravel())
    key.relative_key = basis
    key.slider_max = max(key.slider_max, 1.0)
    show_offsets_key(obj, key.name)
    return key


def new_texture_image(name: str, width: int, height: int):
    """An sRGB RGBA image for an NFSD texture (filled later)."""
    import bpy

    image = bpy.data.images.new(name, width, height, alpha=True)
    image.colorspace_settings.name = "sRGB"
    return image


def texture_material(name: str, image, uv_map: str):
    """A material ``name``: Principled BSDF's Base Color fed by an Image Texture of ``image``,
    which reads UV map ``uv_map`` through a UV Map node."""
    import bpy

    material = bpy.data.materials.new(name)
    if bpy.app.version < (5, 0, 0):  # 5.0 materials always use nodes; the flag goes in 6.0
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    bsdf = next((n for n in nodes if n.type == "BSDF_PRINCIPLED"), None) or nodes.new("ShaderNodeBsdfPrincipled")
    texture = nodes.new("ShaderNodeTexImage")
    texture.name = texture.label = "NFSD Texture"
    texture.image = image
    texture.location = (bsdf.location.x - 320, bsdf.location.y)
    uv_node = nodes.new("ShaderNodeUVMap")
    uv_node.name = "NFSD UV Map"
    uv_node.uv_map = uv_map
    uv_node.location = (texture.location.x - 220, texture.location.y - 120)
    links.new(uv_node.outputs["UV"], texture.inputs["Vector"])
    links.new(texture.outputs["Color"], bsdf.inputs["Base Color"])
    return material


def set_uv_map_of_material(material, uv_map: str) -> None:
    """Point the material's NFSD UV Map node at ``uv_map``."""
    node = material.node_tree.nodes.get("NFSD UV Map") if material.node_tree else None
    if node is not None:
        node.uv_map = uv_map


def assign_material(obj, material) -> list[str]:
    """Put ``material`` in every material slot of ``obj`` (one slot if it had none), so the
    whole mesh shows the texture while each face keeps its material index. Returns the names of
    the materials that were there before ("" for an empty slot); scene_state records them for real."""
    slots = obj.material_slots
    previous = [slot.material.name if slot.material else "" for slot in slots]
    if not slots:
        obj.data.materials.append(material)
    for slot in obj.material_slots:
        slot.material = material
    return previous

