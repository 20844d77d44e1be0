# SPDX-License-Identifier: GPL-3.0-or-later
"""A pbr result's maps beside its colour texture: read from the result .npz, made into packed
Non-Color images, wired into a Principled BSDF, written out as PNGs. Main thread only (but
:func:`read_maps`, numpy only).

The result (docs/API.md) adds, for ``material`` ``"pbr"``: ``roughness`` and ``metallic`` uint8
``[H, W]`` (UDIM ``[T, H, W]``) linear, and with ``normal_map`` ``normal`` uint8 ``[H, W, 3]``
(``[T, H, W, 3]``) tangent space, OpenGL convention (+Y up, what Blender's Normal Map node reads);
row 0 = the BOTTOM, as ``texture`` (which is then the base colour). Here every map becomes float32
RGBA ``[H, W, 4]`` (``[T, H, W, 4]``) in 0..1: a grey map's value in R, G and B, alpha 1.

In a material the nodes are named "NFSD Roughness", "NFSD Metallic", "NFSD Normal" (Image Texture)
and "NFSD Normal Map" (Normal Map, tangent space, on the result's UV map); each image node reads
the UV map through the material's "NFSD UV Map" node, as the colour texture does.
"""

from __future__ import annotations

import io
import os

import numpy as np

from . import image_io, scene_state

MAPS = ("roughness", "metallic", "normal")  # the result's keys, in the order they are wired
SOCKETS = {"roughness": "Roughness", "metallic": "Metallic", "normal": "Normal"}  # Principled BSDF inputs
LABELS = {"roughness": "Roughness", "metallic": "Metallic", "normal": "Normal"}
NON_COLOR = "Non-Color"  # the colour space of data maps (4.2 and 5.0 alike)


def read_maps(data: bytes, texture_shape: tuple) -> dict[str, np.ndarray]:
    """The maps in result .npz ``data`` as float32 RGBA (see the module doc); ``{}`` for an albedo
    result. ``texture_shape``: the colour texture's ``[H, W, 4]`` (``[T, H, W, 4]``), which every
    map must match. Raises ValueError naming a map of the wrong shape or type."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        found = {name: np.asarray(npz[name]) for name in MAPS if name in npz.files}
    maps = {}
    for name, array in found.items():
        grey = name != "normal"
        expected = tuple(texture_shape[:-1]) if grey else tuple(texture_shape[:-1]) + (3,)
        if array.shape != expected or array.dtype != np.uint8:
            raise ValueError(f"the result's {name} map is {array.dtype} {list(array.shape)}, expected uint8 "
                             f"{list(expected)} (the texture's size)")
        rgb = np.repeat(array[..., None], 3, axis=-1) if grey else array
        alpha = np.full(rgb.shape[:-1] + (1,), 255, np.uint8)
        maps[name] = np.concatenate([rgb, alpha], axis=-1).astype(np.float32) / 255.0
    return maps


def image_name(base: str, name: str) -> str:
    """``"NFSD Cube: moss (Roughness)"`` for base image name ``"NFSD Cube: moss"``."""
    return f"{base} ({LABELS[name]})"


def new_images(base: str, maps: dict, tiles=None) -> dict:
    """One packed Non-Color image per map, named after the colour image ``base``; a UDIM result
    (``tiles``: its tile numbers) gets tiled images, one tile per tile as the colour image."""
    import bpy

    images = {}
    for name, pixels in maps.items():
        if tiles is not None:
            image = image_io.new_tiled_image(image_name(base, name), tiles, pixels)
        else:
            height, width = pixels.shape[:2]
            image = bpy.data.images.new(image_name(base, name), width, height, alpha=True)
        image.colorspace_settings.name = NON_COLOR  # before the pixels: a data map is never converted
        if tiles is None:
            image_io.set_image_pixels(image, pixels)
            image.pack()
        scene_state.tag(image)
        images[name] = image
    return images


def wire_maps(material, bsdf, images: dict, uv_map: str) -> None:
    """Feed ``bsdf``'s Roughness, Metallic (and through a tangent-space Normal Map node on UV map
    ``uv_map``, Normal) from Image Texture nodes of ``images`` (map name -> image); the UV map is
    read through the material's "NFSD UV Map" node (made with the colour texture). Only those
    inputs' links are replaced; nodes of an earlier wiring are reused."""
    nodes, links = material.node_tree.nodes, material.node_tree.links
    uv_node = nodes.get("NFSD UV Map")
    for row, name in enumerate(name for name in MAPS if name in images):
        node = nodes.get(f"NFSD {LABELS[name]}") or nodes.new("ShaderNodeTexImage")
        node.name = node.label = f"NFSD {LABELS[name]}"
        node.image = images[name]
        node.location = (bsdf.location.x - 320, bsdf.location.y - 300 * (row + 1))
        if uv_node is not None:
            links.new(uv_node.outputs["UV"], node.inputs["Vector"])
        output = node.outputs["Color"]
        if name == "normal":
            normal = nodes.get("NFSD Normal Map") or nodes.new("ShaderNodeNormalMap")
            normal.name = normal.label = "NFSD Normal Map"
            normal.space = "TANGENT"
            normal.uv_map = uv_map
            normal.location = (bsdf.location.x - 160, node.location.y)
            node.location = (node.location.x - 160, node.location.y)
            links.new(output, normal.inputs["Color"])
            output = normal.outputs["Normal"]
        links.new(output, bsdf.inputs[SOCKETS[name]])


def run_images(run) -> dict:
    """A run's map images that exist: map name -> image (``{}`` for an albedo run)."""
    found = {name: getattr(run, f"{name}_image") for name in MAPS}
    return {name: image for name, image in found.items() if image is not None}


def init_maps(run, settings: dict, shape: tuple) -> dict[str, np.ndarray]:
    """What a run continuing ``run`` (Continue, Edit, Selected Faces) sends beside its texture as
    ``init_roughness`` / ``init_metallic`` / ``init_normal`` (docs/API.md): map name -> uint8 RGBA
    ``[H, W, 4]``, row 0 = bottom, of each of ``run``'s map images that still exists and has the texture's
    ``shape`` ``[H, W, ...]``; only when the new run's API ``settings`` are pbr (the normal only with
    ``normal_map``). ``{}`` for an albedo run, a pbr run whose maps are gone, or a new albedo run."""
    if settings.get("material") != "pbr":
        return {}
    maps = {}
    for name, image in run_images(run).items():
        if name == "normal" and not settings.get("normal_map"):
            continue
        rgba = image_io.image_rgba8(image)
        if tuple(rgba.shape[:2]) != tuple(shape[:2]):
            continue  # a tiled or resized image: the backend wants the texture's own size
        maps[name] = rgba
    return maps


def keep_in_run(run, images: dict) -> None:
    for name in MAPS:
        setattr(run, f"{name}_image", images.get(name))


def export_pngs(run, colour_path: str) -> list[str]:
    """Write each of the run's maps as an 8-bit RGBA PNG beside ``colour_path`` ("oak.png" ->
    "oak_roughness.png", ...); returns the paths written. The values are the map's own (linear)."""
    stem = colour_path[:-4] if colour_path.lower().endswith(".png") else colour_path
    written = []
    for name, image in run_images(run).items():
        rgba = image_io.image_rgba8(image)
        path = f"{stem}_{name}.png"
        with open(path, "wb") as file:
            file.write(image_io.encode_png(rgba))
        written.append(os.path.abspath(path))
    return written
