"""Mesh input: every format reads to the same arrays, Blender's vertex order is kept, bad meshes are
refused with a message naming the problem, and the export / normalization helpers invert cleanly."""

import io
import json
import struct
import sys

import numpy as np
import pytest
import trimesh
from PIL import Image

from nfsd.errors import Cancelled, ConfigError, MeshError
from nfsd.geometry.builtin_meshes import BUILTIN_MESHES, builtin_mesh
from nfsd.geometry.glb_export import save_textured_glb
from nfsd.geometry.mesh import Mesh, check_mesh, framing_transform, render_offsets_to_object, unit_sphere_transform
from nfsd.geometry.mesh_files import load_mesh
from nfsd.geometry.unwrap import ensure_uvs
from nfsd.geometry.wire import read_wire_npz, write_wire_npz

# A lopsided closed double pyramid in Blender's axes (Z up), one UV per vertex so every format
# can carry it.
POSITIONS = np.array(
    [[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.3, 0.3, 3.0], [0.5, 0.2, -1.0]], np.float32
)
TRIANGLES = np.array([[0, 1, 3], [1, 2, 3], [2, 0, 3], [1, 0, 4], [2, 1, 4], [0, 2, 4]], np.int32)
VERTEX_UV = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.5], [0.25, 1.0], [0.75, 0.8]], np.float32)


def _z_to_y_up(p):
    """Blender (x, y, z) -> the Y-up file's (x, z, -y)."""
    return np.stack([p[:, 0], p[:, 2], -p[:, 1]], axis=1)


def _write_obj(path):
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in _z_to_y_up(POSITIONS)]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in VERTEX_UV]
    lines += ["f " + " ".join(f"{i + 1}/{i + 1}" for i in tri) for tri in TRIANGLES]
    path.write_text("o wedge\n" + "\n".join(lines) + "\n")


def _write_ply(path):
    header = [
        "ply", "format ascii 1.0", f"element vertex {len(POSITIONS)}",
        "property float x", "property float y", "property float z", "property float s", "property float t",
        f"element face {len(TRIANGLES)}", "property list uchar int vertex_indices", "end_header",
    ]
    rows = [" ".join(map(str, [*p, *uv])) for p, uv in zip(POSITIONS.tolist(), VERTEX_UV.tolist())]
    rows += ["3 " + " ".join(map(str, t)) for t in TRIANGLES.tolist()]
    path.write_text("\n".join(header + rows) + "\n")


def _write_glb(path):
    geometry = trimesh.Trimesh(
        _z_to_y_up(POSITIONS), TRIANGLES, visual=trimesh.visual.TextureVisuals(uv=VERTEX_UV), process=False
    )
    path.write_bytes(trimesh.Scene(geometry).export(file_type="glb"))


def _write_npz(path):
    write_wire_npz(Mesh(POSITIONS, TRIANGLES, uvs=VERTEX_UV[TRIANGLES]), path)


@pytest.mark.parametrize("suffix,writer", [(".obj", _write_obj), (".ply", _write_ply), (".glb", _write_glb), (".npz", _write_npz)])
def test_every_format_reads_to_the_same_arrays(tmp_path, suffix, writer):
    path = tmp_path / f"wedge{suffix}"
    writer(path)
    mesh = load_mesh(path)
    np.testing.assert_allclose(mesh.positions, POSITIONS, atol=1e-6)
    np.testing.assert_array_equal(mesh.triangles, TRIANGLES)
    np.testing.assert_allclose(mesh.uvs, VERTEX_UV[TRIANGLES], atol=1e-6)
    np.testing.assert_allclose(mesh.world_matrix, np.eye(4))
    assert (mesh.positions.dtype, mesh.triangles.dtype, mesh.uvs.dtype) == (np.float32, np.int32, np.float32)
    assert mesh.warnings == []


def test_forced_up_axis_reads_coordinates_as_they_are(tmp_path):
    _write_obj(tmp_path / "wedge.obj")
    as_is = load_mesh(tmp_path / "wedge.obj", up_axis="Z")
    np.testing.assert_allclose(as_is.positions, _z_to_y_up(POSITIONS), atol=1e-6)
    with pytest.raises(ConfigError, match="up_axis must be"):
        load_mesh(tmp_path / "wedge.obj", up_axis="X")


def test_obj_keeps_every_v_line_and_takes_uvs_per_corner_from_vt(tmp_path):
    # v5 duplicates v1, v6 is unreferenced, v2 has two UVs (a seam), the last face is a quad.
    (tmp_path / "seam.obj").write_text(
        "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nv 0 0 0\nv 9 9 9\n"
        "vt 0 0\nvt 1 0\nvt 0 1\nvt 0.5 0.5\nvt 1 1\n"
        "f 1/1 2/2 3/3\nf 5/1 -5/4 -3/5 3/3\n"
    )
    mesh = load_mesh(tmp_path / "seam.obj", up_axis="Z")
    assert mesh.num_vertices == 6
    np.testing.assert_array_equal(mesh.positions[5], [9, 9, 9])
    np.testing.assert_array_equal(mesh.triangles, [[0, 1, 2], [4, 1, 3], [4, 3, 2]])
    np.testing.assert_allclose(mesh.uvs[:, :, 0], [[0, 1, 0], [0, 0.5, 1], [0, 1, 0]])
    assert any("unreferenced" in w for w in mesh.warnings)
    assert any("duplicate" in w for w in mesh.warnings)


def test_ply_keeps_duplicate_and_unreferenced_vertices(tmp_path):
    # trimesh alone would drop vertex 3 here; the reader must not.
    (tmp_path / "dup.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 5\nproperty float x\nproperty float y\nproperty float z\n"
        "property float s\nproperty float t\nelement face 2\nproperty list uchar int vertex_indices\nend_header\n"
        "0 0 0 0 0\n1 0 0 1 0\n0 1 0 0 1\n9 9 9 0.5 0.5\n0 0 0 0.2 0.3\n3 0 1 2\n3 4 2 1\n"
    )
    mesh = load_mesh(tmp_path / "dup.ply")
    assert mesh.num_vertices == 5
    np.testing.assert_array_equal(mesh.triangles, [[0, 1, 2], [4, 2, 1]])
    np.testing.assert_allclose(mesh.uvs[1, 0], [0.2, 0.3])



def test_ply_triangle_strips_read_as_triangles_not_a_point_cloud(tmp_path):
    # Two quads as one strip (every second triangle flipped back, so all face +Z like the first; the
    # repeated vertex a strip uses to turn a corner makes no triangle), then after -1 a lone triangle.
    (tmp_path / "strip.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 7\nproperty float x\nproperty float y\nproperty float z\n"
        "element tristrips 1\nproperty list int int vertex_indices\nend_header\n"
        "0 0 0\n0 1 0\n1 0 0\n1 1 0\n2 0 0\n2 1 0\n5 5 0\n"
        "11 1 0 3 2 5 4 4 -1 2 4 6\n"
    )
    mesh = load_mesh(tmp_path / "strip.ply")
    np.testing.assert_array_equal(mesh.triangles, [[1, 0, 3], [3, 0, 2], [3, 2, 5], [5, 2, 4], [2, 4, 6]])
    p = mesh.positions[mesh.triangles]
    assert (np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])[:, 2] > 0).all()


def test_binary_ply_with_per_face_texcoords(tmp_path):
    mesh = builtin_mesh("cube")
    ply = trimesh.exchange.ply.export_ply(trimesh.Trimesh(mesh.positions, mesh.triangles, process=False), encoding="binary")
    # Re-encode with a per-face texcoord list (MeshLab's layout), still binary.
    header, body = ply.split(b"end_header\n")
    header = header.replace(b"property list uchar int vertex_indices\n", b"property list uchar int vertex_indices\nproperty list uchar float texcoord\n")
    vertex_bytes = mesh.num_vertices * 12
    face_dtype = np.dtype([("n", "u1"), ("i", "<i4", (3,)), ("m", "u1"), ("uv", "<f4", (6,))])
    faces = np.zeros(mesh.num_faces, face_dtype)
    faces["n"], faces["i"], faces["m"], faces["uv"] = 3, mesh.triangles, 6, mesh.uvs.reshape(-1, 6)
    (tmp_path / "cube.ply").write_bytes(header + b"end_header\n" + body[:vertex_bytes] + faces.tobytes())
    back = load_mesh(tmp_path / "cube.ply")
    np.testing.assert_allclose(back.positions, mesh.positions)
    np.testing.assert_array_equal(back.triangles, mesh.triangles)
    np.testing.assert_allclose(back.uvs, mesh.uvs)


def test_glb_keeps_unreferenced_vertices_and_node_transform(tmp_path):
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 5, 5]], float)  # Y-up, vertex 3 unused
    node = trimesh.transformations.rotation_matrix(0.5, [0, 1, 0])  # a turn about the file's up axis
    node[:3, 3] = [1.0, 2.0, 3.0]
    scene = trimesh.Scene()
    scene.add_geometry(trimesh.Trimesh(vertices, [[0, 1, 2]], process=False), transform=node)
    (tmp_path / "node.glb").write_bytes(scene.export(file_type="glb"))
    mesh = load_mesh(tmp_path / "node.glb")
    assert mesh.num_vertices == 4 and mesh.uvs is None
    world_in_file = vertices @ node[:3, :3].T + node[:3, 3]
    np.testing.assert_allclose(mesh.world_positions(), _z_to_z(world_in_file), atol=1e-5)
    # A turn about the file's Y (up) is a turn about Blender's Z: the matrix keeps Z fixed.
    np.testing.assert_allclose(mesh.world_matrix[:3, 2], [0, 0, 1], atol=1e-6)


def _z_to_z(p_y_up):
    """Y-up file coordinates -> Blender's: (x, y, z) -> (x, -z, y)."""
    return np.stack([p_y_up[:, 0], -p_y_up[:, 2], p_y_up[:, 1]], axis=1)


def test_glb_with_several_meshes_is_merged_with_a_warning(tmp_path):
    scene = trimesh.Scene()
    tri = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]], process=False)
    scene.add_geometry(tri, node_name="a")
    scene.add_geometry(tri.copy(), node_name="b", transform=trimesh.transformations.translation_matrix([0, 0, 2]))
    (tmp_path / "two.glb").write_bytes(scene.export(file_type="glb"))
    mesh = load_mesh(tmp_path / "two.glb")
    assert (mesh.num_vertices, mesh.num_faces) == (6, 2)
    assert sorted(mesh.positions[:, 1].round(3).tolist()) == [-2, -2, -2, 0, 0, 0]  # file z=2 -> Blender y=-2
    assert any("2 meshes" in w and "merged" in w for w in mesh.warnings)


# --- refusals -------------------------------------------------------------------------------


def _npz_bytes(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


GOOD = dict(positions=POSITIONS, triangles=TRIANGLES)
BAD_WIRE = {
    "empty": (dict(positions=np.zeros((0, 3), np.float32), triangles=np.zeros((0, 3), np.int32)), "empty"),
    "no faces": (dict(positions=POSITIONS, triangles=np.zeros((0, 3), np.int32)), "no faces"),
    "nan position": (dict(GOOD, positions=np.where(np.arange(5)[:, None] == 2, np.nan, POSITIONS)), "'positions'.*NaN"),
    "nan uv": (dict(GOOD, uvs=np.full((6, 3, 2), np.nan, np.float32)), "'uvs'.*NaN"),
    "index out of range": (dict(GOOD, triangles=np.array([[0, 1, 7]], np.int32)), "index 7 is out of range.*5 vertices"),
    "negative index": (dict(GOOD, triangles=np.array([[0, -1, 2]], np.int32)), "negative"),
    "float16 positions": (dict(GOOD, positions=POSITIONS.astype(np.float16)), "'positions' has dtype float16"),
    "float triangles": (dict(GOOD, triangles=TRIANGLES.astype(np.float32)), "'triangles' has dtype float32"),
    "2d positions": (dict(GOOD, positions=POSITIONS[:, :2]), r"'positions' has shape \[5, 2\]"),
    "uvs per vertex": (dict(GOOD, uvs=VERTEX_UV), r"'uvs' has shape \[5, 2\]"),
    "missing triangles": (dict(positions=POSITIONS), "missing array 'triangles'"),
    "unknown array": (dict(GOOD, normals=POSITIONS), r"unknown array.*normals"),
    "transposed world matrix": (dict(GOOD, world_matrix=np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [5, 0, 0, 1]], np.float32)), "transposed"),
    "all degenerate": (dict(positions=POSITIONS, triangles=np.array([[0, 0, 1], [2, 2, 2]], np.int32)), "every face.*degenerate"),
}


@pytest.mark.parametrize("case", list(BAD_WIRE))
def test_bad_wire_mesh_is_refused_naming_the_problem(case):
    arrays, message = BAD_WIRE[case]
    with pytest.raises(MeshError, match=message):
        read_wire_npz(_npz_bytes(**arrays))


def test_wire_accepts_64_bit_arrays_from_path_bytes_and_file(tmp_path):
    data = _npz_bytes(positions=POSITIONS.astype(np.float64), triangles=TRIANGLES.astype(np.int64))
    (tmp_path / "m.npz").write_bytes(data)
    for source in (tmp_path / "m.npz", str(tmp_path / "m.npz"), data, io.BytesIO(data)):
        mesh = read_wire_npz(source)
        assert mesh.positions.dtype == np.float32 and mesh.triangles.dtype == np.int32
        np.testing.assert_array_equal(mesh.triangles, TRIANGLES)


def test_not_a_mesh_file_is_refused_naming_the_file(tmp_path):
    (tmp_path / "notes.obj").write_text("just some text\n")
    (tmp_path / "junk.glb").write_bytes(b"\x00\x01garbage" * 10)
    (tmp_path / "junk.npz").write_bytes(b"PK not really")
    (tmp_path / "cloud.ply").write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\nend_header\n0 0 0\n")
    for name, message in [("notes.obj", "no vertices"), ("junk.glb", "could not read"), ("junk.npz", "not a valid .npz"), ("cloud.ply", "no faces")]:
        with pytest.raises(MeshError, match=message) as info:
            load_mesh(tmp_path / name)
        assert name in str(info.value)
    with pytest.raises(MeshError, match="unsupported mesh file type '.stl'"):
        load_mesh(tmp_path / "model.stl")
    with pytest.raises(MeshError, match="file not found"):
        load_mesh(tmp_path / "missing.obj")


def test_too_many_faces_names_the_limit():
    with pytest.raises(MeshError, match="6 faces, more than the limit of 4"):
        check_mesh(Mesh(POSITIONS, TRIANGLES), max_faces=4)
    with pytest.raises(MeshError, match="more than the limit of 5"):
        read_wire_npz(_npz_bytes(**GOOD), max_faces=5)


# --- warnings -------------------------------------------------------------------------------


def test_warnings_for_degenerate_faces_non_manifold_edges_and_uvs_outside():
    # Three faces on edge (0, 1) make it non-manifold; face (1, 1, 2) has zero area.
    positions = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]], np.float32)
    triangles = np.array([[0, 1, 2], [1, 0, 3], [0, 1, 4], [1, 1, 2]], np.int32)
    uvs = np.zeros((4, 3, 2), np.float32)
    uvs[0, 0] = [1.5, 0.2]
    mesh = Mesh(positions, triangles, uvs=uvs)
    found = check_mesh(mesh)
    assert mesh.warnings == found and len(found) == 3
    assert "1 degenerate" in found[0] and "face 3" in found[0]
    assert "1 non-manifold edges" in found[1]
    assert "1 faces have UVs outside [0, 1]" in found[2]
    assert check_mesh(builtin_mesh("sphere")) == []


# --- UVs, normalization, offsets, export ----------------------------------------------------


def test_ensure_uvs_unwraps_a_mesh_without_uvs():
    sphere = builtin_mesh("sphere")
    bare = Mesh(sphere.positions.copy(), sphere.triangles.copy())
    unwrapped = ensure_uvs(bare)
    assert unwrapped is not bare and bare.uvs is None and unwrapped.uvs_generated
    assert unwrapped.uvs.shape == (bare.num_faces, 3, 2) and unwrapped.uvs.dtype == np.float32
    assert unwrapped.uvs.min() >= 0 and unwrapped.uvs.max() <= 1
    np.testing.assert_array_equal(unwrapped.positions, sphere.positions)
    np.testing.assert_array_equal(unwrapped.triangles, sphere.triangles)
    e1, e2 = unwrapped.uvs[:, 1] - unwrapped.uvs[:, 0], unwrapped.uvs[:, 2] - unwrapped.uvs[:, 0]
    uv_area = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    assert (uv_area > 0).all() and 0.3 < uv_area.sum() < 1.0  # every face charted, charts packed
    assert ensure_uvs(sphere) is sphere



def _icosphere(subdivisions: int) -> Mesh:
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions)
    return Mesh(np.asarray(sphere.vertices, np.float32), np.asarray(sphere.faces, np.int32))


def test_ensure_uvs_unwraps_the_icosphere_that_crashed_xatlas_and_reports_progress():
    # 81,920 faces in one piece segfault xatlas 0.0.11; in compact pieces they unwrap in about a second.
    bare = _icosphere(6)
    seen = []
    unwrapped = ensure_uvs(bare, on_progress=lambda text, elapsed: seen.append((text, elapsed)))
    assert unwrapped.uvs.shape == (81_920, 3, 2) and 0 <= unwrapped.uvs.min() and unwrapped.uvs.max() <= 1
    e1, e2 = unwrapped.uvs[:, 1] - unwrapped.uvs[:, 0], unwrapped.uvs[:, 2] - unwrapped.uvs[:, 0]
    uv_area = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    assert (uv_area > 0).all() and 0.3 < uv_area.sum() < 1.0
    assert seen[0] == ("unwrapping 81,920 faces", 0.0) and seen[-1][1] > 0


def test_a_crash_while_unwrapping_is_one_line_saying_what_to_do(monkeypatch):
    import nfsd.geometry.unwrap

    crash = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"  # what xatlas did on large meshes
    monkeypatch.setattr(nfsd.geometry.unwrap, "_child_command", lambda inp, out: [sys.executable, "-c", crash])
    with pytest.raises(MeshError) as err:
        ensure_uvs(_icosphere(1))
    message = str(err.value)
    assert "\n" not in message and "crashed" in message and "80 faces" in message and "SIGSEGV" in message
    assert "Smart UV Project" in message and "face count" in message


def test_a_cancel_while_unwrapping_ends_the_unwrap_at_once(monkeypatch):
    import nfsd.geometry.unwrap

    stuck = "import time; time.sleep(600)"  # an unwrap that would take ten minutes
    monkeypatch.setattr(nfsd.geometry.unwrap, "_child_command", lambda inp, out: [sys.executable, "-c", stuck])
    polls = []

    def cancelled():
        polls.append(1)
        return len(polls) > 3

    with pytest.raises(Cancelled, match="unwrapping 80 faces"):
        ensure_uvs(_icosphere(1), cancelled=cancelled)
    assert len(polls) == 4  # it returned at the first poll that saw the cancel: the child was killed

def test_unit_sphere_transform_fits_and_inverts():
    points = np.random.default_rng(0).normal(size=(200, 3)) * [3.0, 0.5, 1.0] + [10.0, -4.0, 2.0]
    transform = unit_sphere_transform(points)
    radii = np.linalg.norm(transform.apply(points), axis=1)
    assert radii.max() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(transform.invert(transform.apply(points)), points, atol=1e-4)


def test_framing_ignores_loose_vertices():
    sphere = builtin_mesh("sphere")
    stray = Mesh(np.concatenate([sphere.positions, [[50.0, 0.0, 0.0]]]).astype(np.float32), sphere.triangles)
    framed, plain = framing_transform(stray), unit_sphere_transform(sphere.world_positions())
    np.testing.assert_allclose(framed.center, plain.center, atol=1e-6)
    assert framed.scale == pytest.approx(plain.scale)


def test_render_offsets_to_object_undoes_rotation_and_scale():
    rng = np.random.default_rng(1)
    world = trimesh.transformations.rotation_matrix(0.7, [1, 2, 3]) @ np.diag([2.0, 0.5, 3.0, 1.0])
    world[:3, 3] = [4, 5, 6]
    mesh = Mesh(POSITIONS, TRIANGLES, world_matrix=world.astype(np.float32))
    transform = unit_sphere_transform(mesh.world_positions())
    object_offsets = rng.normal(scale=0.1, size=POSITIONS.shape).astype(np.float32)
    moved = Mesh(POSITIONS + object_offsets, TRIANGLES, world_matrix=mesh.world_matrix)
    render_offsets = transform.apply(moved.world_positions()) - transform.apply(mesh.world_positions())
    np.testing.assert_allclose(render_offsets_to_object(mesh, transform, render_offsets), object_offsets, atol=1e-4)


def _glb_texcoords_and_image(data):
    """TEXCOORD_0 as stored in the GLB (glTF convention: v = 0 at the image's TOP) and the image."""
    json_length = struct.unpack("<I", data[12:16])[0]
    gltf = json.loads(data[20 : 20 + json_length])
    binary = data[20 + json_length + 8 :]
    def view(index):
        v = gltf["bufferViews"][index]
        return binary[v.get("byteOffset", 0) : v.get("byteOffset", 0) + v["byteLength"]]
    accessor = gltf["accessors"][gltf["meshes"][0]["primitives"][0]["attributes"]["TEXCOORD_0"]]
    uv = np.frombuffer(view(accessor["bufferView"]), np.float32, offset=accessor.get("byteOffset", 0), count=2 * accessor["count"])
    image = np.asarray(Image.open(io.BytesIO(view(gltf["images"][0]["bufferView"]))).convert("RGB"))
    return uv.reshape(-1, 2), image


def test_save_textured_glb_round_trips_with_split_vertices_and_texture(tmp_path):
    # Two triangles sharing edge (1, 2): the same UVs there, except vertex 2 across a seam.
    positions = np.array([[0, 0, 0], [1, 0, 0], [0, 0, 1], [1, 0, 1]], np.float32)
    triangles = np.array([[0, 1, 2], [1, 3, 2]], np.int32)
    uvs = np.array([[[0.1, 0.1], [0.4, 0.1], [0.1, 0.4]], [[0.4, 0.1], [0.4, 0.9], [0.6, 0.9]]], np.float32)
    world = np.eye(4, dtype=np.float32)
    world[:3, 3] = [0, 0, 5]
    mesh = Mesh(positions, triangles, uvs=uvs, world_matrix=world)
    texture = np.zeros((32, 64, 3), np.uint8)
    texture[:16] = [255, 0, 0]  # rows 0..15 = the BOTTOM half (v < 0.5) is red, the top half blue
    texture[16:] = [0, 0, 255]
    offsets = np.zeros_like(positions)
    offsets[3] = [0, -1, 0]
    save_textured_glb(mesh, texture, tmp_path / "out.glb", offsets=offsets)

    scene = trimesh.load(tmp_path / "out.glb", process=False)
    (loaded,) = scene.geometry.values()
    assert len(loaded.vertices) == 5  # 4 vertices + vertex 2 split at the seam
    assert loaded.visual.material.baseColorTexture.size == (64, 32)
    # Blender world (1, -1, 6) (vertex 3 + offset, then the matrix) is glTF's (x, z, -y) = (1, 6, 1).
    assert np.isclose(loaded.vertices, [1, 6, 1], atol=1e-6).all(axis=1).any()

    uv_file, image = _glb_texcoords_and_image((tmp_path / "out.glb").read_bytes())
    for (u, v_file), expected in zip(uv_file, loaded.visual.uv):
        colour = image[int(v_file * 32), int(u * 64)]  # glTF: v = 0 is the image's top row
        assert (colour == ([255, 0, 0] if expected[1] < 0.5 else [0, 0, 255])).all()


def test_builtin_meshes():
    for name in BUILTIN_MESHES:
        mesh = builtin_mesh(name)
        assert check_mesh(mesh) == [] and mesh.num_faces <= 5000
        assert mesh.uvs.min() >= 0 and mesh.uvs.max() <= 1
        p, t = mesh.positions.astype(np.float64), mesh.triangles
        edges = np.sort(t[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
        assert set(np.unique(edges, axis=0, return_counts=True)[1]) == {2}  # closed
        assert np.einsum("ij,ij->i", p[t[:, 0]], np.cross(p[t[:, 1]], p[t[:, 2]])).sum() > 0  # outward winding
    blob = builtin_mesh("default")
    assert -blob.positions[:, 1].min() > 1.3 * blob.positions[:, 1].max()  # the nose points to -Y
    with pytest.raises(MeshError, match="unknown built-in mesh 'teapot'.*sphere.*cube"):
        builtin_mesh("teapot")
