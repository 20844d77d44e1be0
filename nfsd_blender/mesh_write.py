# SPDX-License-Identifier: GPL-3.0-or-later
"""What a result writes into a Blender mesh object: a UV map from per-triangle-corner UVs, offsets
as shape keys, the texture image and a material that shows it. Main thread only.

Arrays follow mesh_io's conventions: ``uvs`` float32 ``[F, 3, 2]`` per loop-triangle corner,
``loops`` int32 ``[F, 3]`` (mesh_io.loop_triangles at send time), ``offsets`` float32 ``[V, 3]``
in object space.
"""

from __future__ import annotations

import numpy as np

from .mesh_io import SHAPE_KEY_NAME, loop_triangles


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


def new_tiled_texture_image(name: str, tiles, textures: np.ndarray):
    """An sRGB UDIM image for an NFSD result laid out in tiles: tile ``tiles[k]`` holds ``textures[k]``
    (float32 ``[T, H, W, 4]``, row 0 bottom), packed. Wired like a single image: Blender's Image
    Texture node reads a tiled image through the mesh's own UDIM UVs."""
    from .image_io import new_tiled_image

    image = new_tiled_image(name, tiles, textures)
    image.colorspace_settings.name = "sRGB"
    return image


def set_image_of_material(material, image) -> None:
    """Point the material's NFSD Texture node at ``image``."""
    node = material.node_tree.nodes.get("NFSD Texture") if material.node_tree else None
    if node is not None:
        node.image = image


def texture_material(name: str, image, uv_map: str):
    """A material ``name``: Principled BSDF's Base Color fed by an Image Texture of ``image``,
    which reads UV map ``uv_map`` through a UV Map node."""
    import bpy

    material = bpy.data.materials.new(name)
    if bpy.app.version < (5, 0, 0):  # 5.0 materials always use nodes; the flag goes in 6.0
        material.use_nodes = True
    nodes = material.node_tree.nodes
    bsdf = next((n for n in nodes if n.type == "BSDF_PRINCIPLED"), None) or nodes.new("ShaderNodeBsdfPrincipled")
    wire_base_color(material, bsdf, image, uv_map)
    return material


def wire_base_color(material, bsdf, image, uv_map: str) -> None:
    """Feed ``bsdf``'s Base Color from a new Image Texture node of ``image`` that reads UV map
    ``uv_map`` through a new UV Map node, made the material's active node; only Base Color's
    link is replaced."""
    nodes, links = material.node_tree.nodes, material.node_tree.links
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
    nodes.active = texture  # what Workbench's Texture colour, Texture Paint and baking use


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
