# SPDX-License-Identifier: GPL-3.0-or-later
"""A mesh laid out in UDIM tiles gets a tiled Blender image: one tile per tile the backend textured."""

import bpy
import numpy as np

from conftest import add_mesh


def udim_cube():
    """The cube primitive with its first three faces moved to tile 1002 (u + 1) on its own UV map."""
    obj = add_mesh("cube")
    mesh = obj.data
    uv = np.empty(len(mesh.loops) * 2, np.float32)
    layer = mesh.uv_layers["UVMap"]
    layer.data.foreach_get("uv", uv)
    uv = uv.reshape(-1, 2)
    for polygon in list(mesh.polygons)[:3]:
        uv[list(polygon.loop_indices), 0] += 1.0
    layer.data.foreach_set("uv", uv.ravel())
    mesh.update()
    return obj


def tile_pixels(image, tile: int, addon) -> np.ndarray:
    """A packed tile of ``image`` as float32 ``[H, W, 4]`` (row 0 bottom), read from its packed PNG."""
    packed = [p for p in image.packed_files if p.filepath.endswith(f".{tile}.png")]
    assert len(packed) == 1, [p.filepath for p in image.packed_files]
    return addon.image_io.decode_png(bytes(packed[0].packed_file.data))


def test_a_udim_result_becomes_a_tiled_image_wired_like_a_single_one(addon, scene, fast_connection, fake_backend):
    obj = udim_cube()
    job = addon.jobs.wait(addon.jobs.start_job(obj, addon.properties.settings_dict(scene.nfsd), fast_connection))
    assert job.state == "done", job.error
    sent = fake_backend.jobs[job.job_id]["mesh"]["uvs"]
    assert sent[:, :, 0].max() > 1.0  # the UDIM UVs went as they are
    run = obj.nfsd_runs[0]
    image = run.image
    assert image.source == "TILED" and sorted(t.number for t in image.tiles) == [1001, 1002]
    assert all(tuple(t.size) == (64, 64) for t in image.tiles) and run.texture_size == 64
    assert image.packed_file is not None or len(image.packed_files) == 2
    assert image.colorspace_settings.name == "sRGB"
    first, second = tile_pixels(image, 1001, addon), tile_pixels(image, 1002, addon)
    assert np.allclose(first[0, 0], [1, 0, 0, 1]) and np.allclose(second[0, 0], [1, 0, 0, 1])  # row 0 bottom
    assert np.allclose(first[5, 5], [0, 1, 0, 1])
    assert np.allclose(second[5, 5], [0, 175 / 255, 0, 1])  # the fake backend's second tile
    material = run.material
    assert obj.material_slots[0].material == material
    node = material.node_tree.nodes["NFSD Texture"]
    assert node.image == image
    assert node.inputs["Vector"].links[0].from_node.uv_map == "UVMap"  # the artist's UDIM UVs, untouched
    assert "NFSD_UV" not in obj.data.uv_layers
    # The preview's single image made way for the tiled one.
    assert [i.name for i in bpy.data.images if i.name.startswith("NFSD")] == [image.name]
