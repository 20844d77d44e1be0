"""The edit loop end to end, as the artist runs it: texture, edit a colour with DDS, re-texture a region,
through the CLI and through the server, on a tiny random model."""

import io
import json
import re
import time

import numpy as np
import pytest
import torch
from PIL import Image

from nfsd.cli import main
from nfsd.geometry.mesh import Mesh
from nfsd.geometry.wire import write_wire_npz
from nfsd.distill.image_files import encode_png
from nfsd.distill.texture import face_region

FAST = ["--steps", "2", "--render-size", "32", "--texture-size", "64", "--batch", "1", "--device", "cpu",
        "--threads", "1"]
UPPER = np.array([True] * 4 + [False] * 4)


def two_islands() -> Mesh:
    """An octahedron: upper four faces in the left half of the texture, lower four in the right."""
    pos = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float32)
    tri = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]], np.int32)
    uv = pos[tri][:, :, :2] * 0.2 + 0.25
    uv[4:, :, 0] += 0.5
    return Mesh(positions=pos, triangles=tri, uvs=uv.astype(np.float32))


def region(size: int) -> np.ndarray:
    return face_region(torch.from_numpy(two_islands().uvs), torch.from_numpy(UPPER), size).numpy()


def read_png_bottom_first(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))[::-1]


@pytest.fixture(scope="module")
def mesh_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("mesh") / "octahedron.npz"
    write_wire_npz(two_islands(), path)
    return path


def test_cli_texture_then_edit_a_colour_then_retexture_a_region(tiny_model, mesh_file, tmp_path):
    model = ["--model", str(tiny_model)]
    first, edited, region_out = tmp_path / "first", tmp_path / "edited", tmp_path / "region"
    assert main(["texture", str(mesh_file), "red and white stripes", "--out", str(first), *model, *FAST]) == 0

    # DDS: the source prompt comes from the report.json beside the texture being edited.
    assert main(["texture", str(mesh_file), "blue dots on yellow", "--out", str(edited), "--mode", "dds",
                 "--init-texture", str(first / "texture.png"), *model, *FAST]) == 0
    report = json.loads((edited / "report.json").read_text())
    assert report["settings"]["mode"] == "dds" and report["settings"]["source_prompt"] == "red and white stripes"

    # A region: faces given as indices; every texel outside it is the input's own byte.
    faces = tmp_path / "faces.npy"
    np.save(faces, np.nonzero(UPPER)[0])
    assert main(["texture", str(mesh_file), "solid green", "--out", str(region_out), "--faces", str(faces),
                 "--init-texture", str(edited / "texture.png"), *model, *FAST]) == 0
    before = read_png_bottom_first(edited / "texture.png")
    after = read_png_bottom_first(region_out / "texture.png")
    keep = ~region(before.shape[0])
    assert np.array_equal(after[keep], before[keep]) and not np.array_equal(after, before)


@pytest.mark.parametrize("extra, reason", [
    (["--mode", "dds"], "--mode dds edits a texture: give it with --init-texture"),
    (["--mode", "dds", "--init-texture", "{png}"], "--mode dds needs --source-prompt"),
    (["--faces", "{faces}", "--init-texture", "{png}"], "--faces .*: face mask: face index out of range 0..7"),
    (["--faces", "{good}"], "give the current texture"),
])
def test_cli_edit_options_explain_what_is_missing(extra, reason, mesh_file, tmp_path, capsys):
    png = tmp_path / "lone.png"  # no report.json beside it
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(png)
    faces = tmp_path / "faces.npy"
    np.save(faces, np.array([0, 8]))
    good = tmp_path / "good.npy"
    np.save(good, UPPER)
    extra = [a.replace("{png}", str(png)).replace("{faces}", str(faces)).replace("{good}", str(good)) for a in extra]
    code = main(["texture", str(mesh_file), "solid green", "--out", str(tmp_path / "o"), *FAST, *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert re.search(reason, err), err


# ---------------------------------------------------------------------------------------------
# server

@pytest.fixture(scope="module")
def client(tiny_model, tmp_path_factory):
    from fastapi.testclient import TestClient

    from nfsd.server import ServerConfig, create_app

    config = ServerConfig(data_dir=tmp_path_factory.mktemp("data"), model=str(tiny_model), device="cpu",
                          preview_interval=0.1, torch_threads=1)
    with TestClient(create_app(config), base_url="http://127.0.0.1") as c:
        yield c


def wire(face_mask=None) -> bytes:
    mesh = two_islands()
    mesh.face_mask = face_mask
    buf = io.BytesIO()
    write_wire_npz(mesh, buf)
    return buf.getvalue()


def submit(client, mesh: bytes, settings: dict, init: np.ndarray | None = None):
    files = {"mesh": ("mesh.npz", mesh, "application/octet-stream")}
    if init is not None:
        files["init_texture"] = ("init.png", encode_png(init), "image/png")
    return client.post("/jobs", files=files, data={"settings": json.dumps(settings)})


def test_server_dds_edit_of_selected_faces_keeps_every_other_texel(client):
    init = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)  # row 0 bottom
    settings = {"prompt": "blue dots on yellow", "mode": "dds", "source_prompt": "red and white stripes",
                "steps": 2, "render_size": 32, "texture_size": 64, "offsets": True}
    r = submit(client, wire(UPPER), settings, init)
    assert r.status_code == 202, r.text
    job = r.json()["id"]
    deadline = time.monotonic() + 120
    while (state := client.get(f"/jobs/{job}").json())["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    assert state["state"] == "done", state["error"]
    with np.load(io.BytesIO(client.get(f"/jobs/{job}/result").content)) as result:
        texture, offsets = result["texture"][:, :, :3], result["offsets"]
    keep = ~region(64)
    assert np.array_equal(texture[keep], init[keep]) and not np.array_equal(texture, init)
    assert np.all(offsets[5] == 0)  # the bottom vertex belongs to unselected faces only


@pytest.mark.parametrize("mesh, settings, with_init, reason", [
    ("plain", {"prompt": "solid green", "mode": "dds", "source_prompt": "solid red"}, False, "send the current texture"),
    ("masked", {"prompt": "solid green"}, False, "face_mask re-textures part of a texture"),
    ("bad_mask", {"prompt": "solid green"}, True, "'face_mask' must be bool"),
])
def test_server_refuses_an_edit_it_cannot_do(client, mesh, settings, with_init, reason):
    data = {"plain": wire(), "masked": wire(UPPER)}.get(mesh)
    if data is None:
        buf = io.BytesIO()
        np.savez(buf, positions=two_islands().positions, triangles=two_islands().triangles,
                 face_mask=UPPER.astype(np.int32))
        data = buf.getvalue()
    init = np.zeros((64, 64, 3), np.uint8) if with_init else None
    r = submit(client, data, settings, init)
    assert r.status_code == 422 and reason in r.text, r.text
