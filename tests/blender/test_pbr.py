# SPDX-License-Identifier: GPL-3.0-or-later
"""Material: PBR. The panel sends ``material`` and ``normal_map``; a pbr result (the server's own
``result_npz`` of a ``TextureResult`` with ``maps``, see fake_backend) becomes a Principled BSDF with
every map wired, packed, kept by a save, followed by the run list (Original, apply, delete, export)."""

import io
import json
from types import SimpleNamespace

import bpy
import numpy as np
import pytest
from PIL import Image

from conftest import RecordingLayout, add_mesh
from fake_backend import MAP_ROWS, FakeConfig
from test_scene_safety import FACES, face_materials, slot_names, two_material_cube
from test_udim import tile_pixels, udim_cube

from nfsd.server.validation import read_request, resolve_request

PROMPT = "a weathered bronze statue"


def pbr(scene, normal_map=True):
    scene.nfsd.material = "pbr"
    scene.nfsd.normal_map = normal_map


def run_job(addon, scene, obj, connection, **kwargs):
    job = addon.jobs.wait(addon.jobs.start_job(obj, addon.properties.settings_dict(scene.nfsd), connection, **kwargs))
    assert job.state == "done", job.error
    return obj.nfsd_runs[len(obj.nfsd_runs) - 1]


def bsdf_of(material):
    return next(n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")


def feeding(bsdf, socket):
    links = bsdf.inputs[socket].links
    return links[0].from_node if links else None


def pixel(image, row):
    """RGB of the first pixel of ``row`` (0 = bottom) of a single image, as Blender reads it."""
    width, height = image.size
    pixels = np.empty(width * height * image.channels, np.float32)
    image.pixels.foreach_get(pixels)
    return pixels.reshape(height, width, image.channels)[row, 0, :3]


def grey(value):
    return [value / 255] * 3


def check_wired(run, uv_map):
    """Base Color, Roughness, Metallic and (Normal Map ->) Normal of the run's material come from its
    images, with the right colour spaces and the fake's pixels, row 0 at the bottom."""
    bsdf = bsdf_of(run.material)
    colour, roughness, metallic = (feeding(bsdf, s) for s in ("Base Color", "Roughness", "Metallic"))
    assert colour.image == run.image and run.image.colorspace_settings.name == "sRGB"
    assert roughness.image == run.roughness_image and metallic.image == run.metallic_image
    normal_map = feeding(bsdf, "Normal")
    assert normal_map.type == "NORMAL_MAP" and normal_map.space == "TANGENT" and normal_map.uv_map == uv_map
    normal = normal_map.inputs["Color"].links[0].from_node
    assert normal.image == run.normal_image
    for node in (roughness, metallic, normal):
        assert node.image.colorspace_settings.name == "Non-Color"
        assert node.inputs["Vector"].links[0].from_node.uv_map == uv_map
        assert node.image.packed_file is not None
    return colour, roughness, metallic, normal


def check_pixels(run):
    assert np.allclose(pixel(run.image, 0), [1, 0, 0]) and np.allclose(pixel(run.image, -1), [0, 0, 1])
    for name in ("roughness", "metallic"):
        bottom, top, middle = MAP_ROWS[name]
        image = getattr(run, f"{name}_image")
        assert np.allclose(pixel(image, 0), grey(bottom), atol=1e-6), name
        assert np.allclose(pixel(image, -1), grey(top), atol=1e-6), name
        assert np.allclose(pixel(image, 5), grey(middle), atol=1e-6), name
    bottom, top, _middle = MAP_ROWS["normal"]
    assert np.allclose(pixel(run.normal_image, 0), np.array(bottom) / 255, atol=1e-6)
    assert np.allclose(pixel(run.normal_image, -1), np.array(top) / 255, atol=1e-6)


def node_tree_of(material):
    """Everything of a material's nodes that an apply could change: nodes, links, input values."""
    tree = material.node_tree
    if tree is None:
        return None
    nodes = sorted((n.name, n.type, getattr(n.image, "name", None) if n.type == "TEX_IMAGE" else None,
                    tuple(tuple(i.default_value) if hasattr(i.default_value, "__len__") else i.default_value
                          for i in n.inputs if hasattr(i, "default_value")))
                   for n in tree.nodes)
    links = sorted((lk.from_node.name, lk.from_socket.identifier, lk.to_node.name, lk.to_socket.identifier)
                   for lk in tree.links)
    return nodes, links


def test_the_panel_offers_material_and_normal_map_and_sends_them_as_every_setting(addon, scene, fake_backend):
    def panel():
        layout = RecordingLayout()
        addon.ui.NFSD_PT_main.draw(SimpleNamespace(layout=layout), bpy.context)
        return layout.log

    add_mesh("cube")
    assert ("prop", "material") in panel() and ("prop", "normal_map") not in panel()  # Albedo: no Normal Map
    assert not {"material", "normal_map"} & set(addon.properties.settings_dict(scene.nfsd))  # the defaults
    scene.nfsd.normal_map = True  # left on from an earlier PBR choice: an albedo run has no normal map
    assert not {"material", "normal_map"} & set(addon.properties.settings_dict(scene.nfsd))
    pbr(scene)
    assert ("prop", "normal_map") in panel()
    sent = addon.properties.settings_dict(scene.nfsd)
    assert sent["material"] == "pbr" and sent["normal_map"] is True
    text = json.dumps(sent)
    assert read_request(text) == sent  # the server takes both keys as sent
    resolved = resolve_request(read_request(text), FakeConfig(model="/models/sd15")).settings
    assert (resolved["material"], resolved["normal_map"]) == ("pbr", True)
    answer = addon.client.Client(fake_backend.url).resolve_settings(sent)  # the estimate keeps working
    assert answer["settings"]["material"] == "pbr" and answer["settings"]["normal_map"] is True
    scene.nfsd.apply_into_material = True
    obj = bpy.context.active_object
    obj.data.materials.append(bpy.data.materials.new("Paint"))
    if obj.data.materials[0].node_tree is None:  # 4.2: a new material has no nodes until asked
        obj.data.materials[0].use_nodes = True
    assert ("label", "Into a copy of 'Paint' (Base Color, Roughness, Metallic, Normal)", "MATERIAL") in panel()


def test_a_pbr_result_wires_every_map_and_a_saved_file_reopens_with_them(addon, scene, fast_connection,
                                                                         fake_backend, tmp_path):
    pbr(scene)
    obj = add_mesh("cube", name="Statue")
    run = run_job(addon, scene, obj, fast_connection)
    sent = fake_backend.jobs[run.job_id]
    assert sent["settings"]["material"] == "pbr" and sent["settings"]["normal_map"] is True
    assert obj.material_slots[0].material == run.material
    assert run.material.node_tree.nodes.active.image == run.image  # the colour stays the active node
    check_wired(run, "UVMap")
    check_pixels(run)
    assert addon.ui.run_label(run).endswith("seed 7, PBR)")

    path = str(tmp_path / "pbr.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    bpy.ops.wm.open_mainfile(filepath=path)
    obj = bpy.data.objects["Statue"]
    run = obj.nfsd_runs[0]
    for image in (run.image, run.roughness_image, run.metallic_image, run.normal_image):
        image.reload()  # read back from the file's packed data, not memory
    check_wired(run, "UVMap")
    check_pixels(run)


def test_without_a_normal_map_nothing_feeds_normal(addon, scene, fast_connection):
    pbr(scene, normal_map=False)
    obj = add_mesh("cube")
    run = run_job(addon, scene, obj, fast_connection)
    bsdf = bsdf_of(run.material)
    assert feeding(bsdf, "Roughness").image == run.roughness_image and not bsdf.inputs["Normal"].links
    assert run.normal_image is None and "NFSD Normal Map" not in run.material.node_tree.nodes


def test_pbr_into_an_existing_material_and_back_to_the_original_exactly(addon, scene, fast_connection):
    obj = two_material_cube()
    obj.active_material_index = 0  # Wood
    wood = bpy.data.materials["Wood"]
    before = node_tree_of(wood), node_tree_of(bpy.data.materials["Metal"])
    pbr(scene)
    run = run_job(addon, scene, obj, fast_connection, apply_into=True)
    assert slot_names(obj) == [f"Wood + NFSD: {PROMPT}", "Metal"] and face_materials(obj) == FACES
    check_wired(run, "UVMap")
    assert run.target_material == wood
    assert (node_tree_of(wood), node_tree_of(bpy.data.materials["Metal"])) == before  # the copy changed, not Wood

    addon.results.restore_original(obj)
    assert slot_names(obj) == ["Wood", "Metal"] and face_materials(obj) == FACES
    assert obj.material_slots[0].material == wood
    assert (node_tree_of(wood), node_tree_of(bpy.data.materials["Metal"])) == before
    assert not bsdf_of(wood).inputs["Roughness"].links and bsdf_of(wood).inputs["Roughness"].default_value == \
        pytest.approx(0.3)

    scene.nfsd.material = "albedo"  # an albedo run after it, then the pbr run again from the list
    albedo = run_job(addon, scene, obj, fast_connection, apply_into=True)
    assert not bsdf_of(albedo.material).inputs["Roughness"].links and albedo.roughness_image is None
    addon.results.apply_run(obj, 0)
    assert obj.material_slots[0].material == obj.nfsd_runs[0].material
    check_wired(obj.nfsd_runs[0], "UVMap")


def test_deleting_a_pbr_run_removes_its_maps_and_export_writes_them_beside_the_colour(addon, scene,
                                                                                     fast_connection, tmp_path):
    pbr(scene)
    obj = add_mesh("cube")
    run = run_job(addon, scene, obj, fast_connection)
    path = addon.results.export_run_png(run, str(tmp_path / "bronze"))
    assert path.endswith("bronze.png")
    for name in ("roughness", "metallic", "normal"):
        written = np.array(Image.open(tmp_path / f"bronze_{name}.png"))  # PNG: top row first
        bottom, top, _middle = MAP_ROWS[name]
        expected = lambda v: list(v) + [255] if name == "normal" else [v, v, v, 255]  # noqa: E731
        assert written[-1, 0].tolist() == expected(bottom) and written[0, 0].tolist() == expected(top), name
    names = [image.name for image in addon.material_maps.run_images(run).values()]
    assert len(names) == 3 and all(name in bpy.data.images for name in names)
    addon.results.delete_run(obj, 0)  # on show: the original (none) comes back, then the run's things go
    assert not [name for name in names if name in bpy.data.images]
    assert not [image for image in bpy.data.images if image.get("nfsd")]


def test_a_pbr_udim_result_gets_a_tiled_image_for_each_map(addon, scene, fast_connection):
    pbr(scene)
    obj = udim_cube()
    run = run_job(addon, scene, obj, fast_connection)
    colour, roughness, metallic, normal = check_wired(run, "UVMap")
    for node in (colour, roughness, metallic, normal):
        assert node.image.source == "TILED" and sorted(t.number for t in node.image.tiles) == [1001, 1002]
    for tile in (1001, 1002):
        for name in ("roughness", "metallic"):
            bottom, top, _middle = MAP_ROWS[name]
            pixels = tile_pixels(getattr(run, f"{name}_image"), tile, addon)
            assert np.allclose(pixels[0, 0, :3], grey(bottom)) and np.allclose(pixels[-1, 0, :3], grey(top))
        pixels = tile_pixels(run.normal_image, tile, addon)
        assert np.allclose(pixels[0, 0, :3], np.array(MAP_ROWS["normal"][0]) / 255)
    assert np.allclose(tile_pixels(run.image, 1002, addon)[5, 5], [0, 175 / 255, 0, 1])  # the colour as before


def test_an_albedo_result_wires_base_color_only(addon, scene, fast_connection, fake_backend):
    obj = add_mesh("cube")
    run = run_job(addon, scene, obj, fast_connection)
    assert fake_backend.jobs[run.job_id]["settings"]["material"] == "albedo"
    bsdf = bsdf_of(run.material)
    assert feeding(bsdf, "Base Color").image == run.image
    assert not any(bsdf.inputs[s].links for s in ("Roughness", "Metallic", "Normal"))
    assert addon.material_maps.run_images(run) == {} and not addon.ui.run_label(run).endswith("PBR)")
    assert [n.type for n in run.material.node_tree.nodes].count("TEX_IMAGE") == 1


def test_a_map_of_the_wrong_size_is_refused_naming_it(addon):
    buffer = io.BytesIO()
    np.savez(buffer, texture=np.zeros((8, 8, 4), np.uint8), roughness=np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"roughness map is uint8 \[4, 4\], expected uint8 \[8, 8\]"):
        addon.material_maps.read_maps(buffer.getvalue(), (8, 8, 4))


def sent_map(sent, name):
    """A map PNG the backend received (top row first) as uint8 RGBA rows, row 0 = bottom."""
    return np.array(Image.open(io.BytesIO(sent[name])).convert("RGBA"))[::-1]


def test_continue_on_a_pbr_run_sends_its_maps_beside_the_texture(addon, scene, fast_connection, fake_backend):
    from fake_backend import result_maps

    pbr(scene)
    obj = add_mesh("cube")
    first = run_job(addon, scene, obj, fast_connection)
    run_job(addon, scene, obj, fast_connection, continue_from=first)
    sent = fake_backend.jobs[obj.nfsd_runs[1].job_id]
    assert sent["init_texture"] is not None and set(sent["init_maps"]) == {"roughness", "metallic", "normal"}
    size = first.image.size[0]
    want = result_maps(size, normal_map=True)
    for name, image in addon.material_maps.run_images(first).items():
        got = sent_map(sent["init_maps"], name)
        assert got.shape == (size, size, 4)
        pixels = addon.image_io.image_pixels(image)  # the run's image as Blender holds it, row 0 bottom
        assert np.array_equal(got, (np.clip(pixels, 0, 1) * 255 + 0.5).astype(np.uint8)), name
        rgb = want[name] if name == "normal" else np.repeat(want[name][..., None], 3, -1)
        assert np.array_equal(got[..., :3], rgb), name  # = the result's own maps, rows in order

    # without a normal map now: roughness and metallic only (the backend would refuse init_normal)
    pbr(scene, normal_map=False)
    run_job(addon, scene, obj, fast_connection, continue_from=first)
    assert set(fake_backend.jobs[obj.nfsd_runs[2].job_id]["init_maps"]) == {"roughness", "metallic"}


def test_continue_sends_no_maps_from_an_albedo_run_or_a_pbr_run_whose_maps_are_gone(addon, scene, fast_connection,
                                                                                 fake_backend):
    obj = add_mesh("cube")
    albedo = run_job(addon, scene, obj, fast_connection)
    pbr(scene)
    run_job(addon, scene, obj, fast_connection, continue_from=albedo)
    assert fake_backend.jobs[obj.nfsd_runs[1].job_id]["init_maps"] == {}

    first = obj.nfsd_runs[1]
    for name in ("roughness", "metallic", "normal"):
        bpy.data.images.remove(getattr(first, f"{name}_image"))
    run_job(addon, scene, obj, fast_connection, continue_from=first)
    sent = fake_backend.jobs[obj.nfsd_runs[2].job_id]
    assert sent["init_maps"] == {} and sent["init_texture"] is not None

    scene.nfsd.material = "albedo"  # a pbr run continued as albedo: its maps stay home
    second = obj.nfsd_runs[2]
    assert addon.material_maps.run_images(second)
    run_job(addon, scene, obj, fast_connection, continue_from=second)
    assert fake_backend.jobs[obj.nfsd_runs[3].job_id]["init_maps"] == {}
