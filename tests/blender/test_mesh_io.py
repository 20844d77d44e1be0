# SPDX-License-Identifier: GPL-3.0-or-later
"""Mesh objects to the wire format and results back into Blender, with no backend at all."""

import io
import json
from types import SimpleNamespace

import bpy
import numpy as np
import pytest
from PIL import Image

from conftest import RecordingLayout, add_mesh
from fake_backend import result_texture


def result_npz(obj, *, size=16, generated=False, offsets=None, triangles=None, meta=None, uvs=None):
    """A result .npz for ``obj``. Its UVs are one random UV per loop, spread to the corners of the
    loop triangles, as a real unwrap is: the two triangles of a quad agree on their shared corners
    (a loop holds one UV, so per-corner noise could not survive the trip into Blender)."""
    mesh = obj.data
    mesh.calc_loop_triangles()
    loops = np.array([list(triangle.loops) for triangle in mesh.loop_triangles])
    loop_uvs = np.random.default_rng(0).random((len(mesh.loops), 2)).astype(np.float32)
    uvs = loop_uvs[loops][:triangles] if uvs is None else uvs
    arrays = {"texture": result_texture(size), "uvs": uvs,
              "uvs_generated": np.array(generated), "meta": np.array(json.dumps(meta or {"seed": 7}))}
    if offsets is not None:
        arrays["offsets"] = offsets
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue(), arrays


def test_wire_arrays_of_a_cube(addon, scene):
    obj = add_mesh("cube")
    arrays = addon.mesh_io.mesh_arrays(obj)
    assert arrays["positions"].shape == (8, 3) and arrays["positions"].dtype == np.float32
    assert arrays["triangles"].shape == (12, 3) and arrays["triangles"].dtype == np.int32
    assert arrays["uvs"].shape == (12, 3, 2) and arrays["uvs"].dtype == np.float32
    # Object space: the cube of size 2 spans -1..1 whatever its location.
    assert np.abs(arrays["positions"]).max() == pytest.approx(1.0)
    # Row-major, column vectors: the translation is the last column.
    assert np.allclose(arrays["world_matrix"][:3, 3], [1.0, 2.0, 3.0])
    # Each corner's UV is the active map's UV of that loop.
    mesh = obj.data
    first = mesh.loop_triangles[0]
    assert np.allclose(arrays["uvs"][0, 1], mesh.uv_layers.active.data[first.loops[1]].uv)
    assert list(arrays["triangles"][0]) == list(first.vertices)


def test_a_mesh_without_uvs_sends_none_and_reasons_name_the_problem(addon, scene):
    obj = add_mesh("plane", uvs=False)
    assert "uvs" not in addon.mesh_io.mesh_arrays(obj)
    bpy.ops.object.light_add(type="POINT")
    assert "not a mesh" in addon.mesh_io.mesh_problem(bpy.context.active_object)
    empty = bpy.data.objects.new("Empty Mesh", bpy.data.meshes.new("nothing"))
    assert addon.mesh_io.mesh_problem(empty) == "'Empty Mesh' has no faces"


def test_apply_result_builds_image_material_links_and_history(addon, scene):
    obj = add_mesh("cube")
    data, arrays = result_npz(obj, size=16)
    run = addon.results.apply_result(obj, data, {"prompt": "rusty metal", "seed": 7, "mode": "nfsd"},
                                  uv_map="UVMap", job_id="abc")
    image, material = run.image, run.material
    assert tuple(image.size) == (16, 16) and image.packed_file is not None
    pixels = np.array(image.pixels[:]).reshape(16, 16, 4)
    assert np.allclose(pixels[0, 0], [1, 0, 0, 1])   # row 0 of the result = bottom row of the image
    assert np.allclose(pixels[-1, 0], [0, 0, 1, 1])
    assert material.name == "NFSD: rusty metal"
    assert obj.material_slots[0].material == material
    nodes = material.node_tree.nodes
    texture = nodes["NFSD Texture"]
    assert texture.image == image
    assert texture.outputs["Color"].links[0].to_node.type == "BSDF_PRINCIPLED"
    assert texture.outputs["Color"].links[0].to_socket.name == "Base Color"
    assert texture.inputs["Vector"].links[0].from_node.uv_map == "UVMap"
    assert "NFSD_UV" not in obj.data.uv_layers  # the artist's own UVs were used
    assert (run.prompt, run.seed, run.uv_map, len(obj.nfsd_runs)) == ("rusty metal", 7, "UVMap", 1)


def test_generated_uvs_become_nfsd_uv_and_offsets_a_shape_key(addon, scene):
    obj = add_mesh("sphere", uvs=False)
    count = len(obj.data.vertices)
    offsets = np.tile(np.array([0.0, 0.0, 0.25], np.float32), (count, 1))
    data, arrays = result_npz(obj, generated=True, offsets=offsets)
    run = addon.results.apply_result(obj, data, {"prompt": "marble"}, uv_map="")
    layer = obj.data.uv_layers["NFSD_UV"]
    assert obj.data.uv_layers.active == layer and run.uv_map == "NFSD_UV"
    written = np.empty(len(obj.data.loops) * 2, np.float32)
    layer.data.foreach_get("uv", written)
    obj.data.calc_loop_triangles()
    loops = np.array([list(triangle.loops) for triangle in obj.data.loop_triangles])
    assert np.array_equal(written.reshape(-1, 2)[loops], arrays["uvs"])  # every corner, quads included
    key = obj.data.shape_keys.key_blocks["NFSD offsets"]
    assert key.value == 1.0 and len(key.data) == count
    basis = obj.data.shape_keys.reference_key
    assert np.allclose(np.array(key.data[3].co) - np.array(basis.data[3].co), [0, 0, 0.25])
    assert run.material.node_tree.nodes["NFSD UV Map"].uv_map == "NFSD_UV"


def test_uvs_land_on_the_loops_they_were_sent_for_after_blender_re_splits_a_quad(addon, scene):
    obj = add_mesh("plane", uvs=False)  # one quad, split along its loops 0-2
    sent = addon.mesh_io.loop_triangles(obj.data)[1]
    _, arrays = result_npz(obj, generated=True)
    loop_uvs = np.zeros((4, 2), np.float32)
    loop_uvs[sent.ravel()] = arrays["uvs"].reshape(-1, 2)
    obj.data.vertices[1].co = (-0.2, 0.0, 0.0)  # the artist drags a corner while the job runs: concave
    assert addon.mesh_io.loop_triangles(obj.data)[1].tolist() != sent.tolist()  # now split along 1-3
    data, _ = result_npz(obj, generated=True, uvs=arrays["uvs"])
    addon.results.apply_result(obj, data, {"prompt": "p"}, loops=sent)
    written = np.empty(8, np.float32)
    obj.data.uv_layers["NFSD_UV"].data.foreach_get("uv", written)
    assert np.array_equal(written.reshape(4, 2), loop_uvs)  # each loop kept its own UV


def test_the_backends_mesh_warnings_and_a_quad_cut_by_its_unwrap_are_kept_on_the_run(addon, scene):
    obj = add_mesh("cube", uvs=False)  # six quads, twelve triangles
    _, arrays = result_npz(obj)
    assert addon.mesh_write.polygons_cut(obj, arrays["uvs"]) == 0  # one UV per loop: nothing to lose
    cut = arrays["uvs"].copy()
    cut[0] += 0.5  # triangle 0 leaves its quad partner at their shared diagonal: a seam inside a quad
    assert addon.mesh_write.polygons_cut(obj, cut) == 1
    meta = {"mesh": {"warnings": ["2 duplicate vertices (same position, different index)"]}}
    run = addon.results.apply_result(obj, result_npz(obj, generated=True, uvs=cut, meta=meta)[0], {"prompt": "p"})
    warnings = run.warnings.splitlines()
    assert warnings[0] == "Mesh: 2 duplicate vertices (same position, different index)"
    assert "cut 1 polygon(s)" in warnings[1] and "Unwrap in Blender" in warnings[1]
    layout = RecordingLayout()  # the Earlier Runs panel shows the selected run's warnings
    addon.ui.NFSD_PT_history.draw(SimpleNamespace(layout=layout), bpy.context)
    shown = " ".join(entry[1] for entry in layout.log if entry[0] == "label")
    assert "Mesh: 2 duplicate vertices" in shown and "Unwrap in Blender" in shown


def test_a_result_that_does_not_fit_changes_nothing(addon, scene):
    obj = add_mesh("cube")
    data, _ = result_npz(obj, triangles=11)
    images_before = len(bpy.data.images)
    with pytest.raises(ValueError, match="11 triangles"):
        addon.results.apply_result(obj, data, {"prompt": "x"}, uv_map="UVMap")
    assert len(bpy.data.images) == images_before and len(obj.material_slots) == 0 and len(obj.nfsd_runs) == 0


def test_png_round_trip_keeps_row_0_at_the_bottom(addon, scene):
    texture = result_texture(8)
    png = addon.image_io.encode_png(texture)
    # A PNG viewer shows the top row first: blue (the texture's last row).
    shown = np.array(Image.open(io.BytesIO(png)))
    assert tuple(shown[0, 0]) == (0, 0, 255, 255) and tuple(shown[-1, 0]) == (255, 0, 0, 255)
    decoded = addon.image_io.decode_png(png)
    assert np.allclose(decoded * 255, texture)


def test_reapplying_an_earlier_run_puts_its_material_back(addon, scene):
    obj = add_mesh("cube")
    first = addon.results.apply_result(obj, result_npz(obj)[0], {"prompt": "oak"}, uv_map="UVMap").material
    second = addon.results.apply_result(obj, result_npz(obj)[0], {"prompt": "pine"}, uv_map="UVMap").material
    assert obj.material_slots[0].material == second and obj.nfsd_run_index == 1
    bpy.ops.nfsd.apply_run(index=0)
    assert obj.material_slots[0].material == first and obj.nfsd_run_index == 0


def test_reapplying_a_run_brings_back_its_own_offsets(addon, scene):
    obj = add_mesh("sphere", uvs=False)
    count = len(obj.data.vertices)

    def run_with(dz):
        offsets = None if dz is None else np.tile(np.array([0.0, 0.0, dz], np.float32), (count, 1))
        return addon.results.apply_result(obj, result_npz(obj, generated=True, offsets=offsets)[0], {"prompt": "p"})

    first, second, plain = run_with(0.1), run_with(0.3), run_with(None)
    keys = obj.data.shape_keys.key_blocks
    assert (first.shape_key, second.shape_key, plain.shape_key) == ("NFSD offsets", "NFSD offsets 2", "")
    assert (keys["NFSD offsets"].value, keys["NFSD offsets 2"].value) == (0.0, 0.0)  # the plain run shows the base shape
    bpy.ops.nfsd.apply_run(index=0)
    assert (keys["NFSD offsets"].value, keys["NFSD offsets 2"].value) == (1.0, 0.0)
    bpy.ops.nfsd.apply_run(index=1)
    assert (keys["NFSD offsets"].value, keys["NFSD offsets 2"].value) == (0.0, 1.0)
    basis = obj.data.shape_keys.reference_key
    assert np.allclose(np.array(keys["NFSD offsets 2"].data[3].co) - np.array(basis.data[3].co), [0, 0, 0.3])
    obj.shape_key_remove(keys["NFSD offsets"])
    with pytest.raises(RuntimeError, match="lost the shape key"):
        bpy.ops.nfsd.apply_run(index=0)
