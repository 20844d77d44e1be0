"""A pbr run continued from its maps: the engine starts from the given roughness / metallic / normal (and keeps
them outside a face mask), and POST /jobs takes them as init_roughness / init_metallic / init_normal."""

import numpy as np
import pytest
import torch

from nfsd.distill.engine import texture_mesh
from nfsd.errors import ConfigError
from nfsd.geometry.mesh import Mesh
from nfsd.priors.analytic import AnalyticPrior
from nfsd.settings import TextureConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def octahedron() -> Mesh:
    pos = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float32)
    tri = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]], np.int32)
    return Mesh(positions=pos, triangles=tri, uvs=(pos[tri][:, :, :2] * 0.45 + 0.5).astype(np.float32))


def cfg(**kw) -> TextureConfig:
    return TextureConfig(**{**dict(prompt="solid red", model="analytic", mode="sds", steps=1, render_size=32,
                                   texture_size=32, batch=1, device="cpu", material="pbr", lr=0.0), **kw})


def init_maps(size=32, seed=0):
    rng = np.random.default_rng(seed)
    rough = rng.integers(20, 230, (size, size), dtype=np.uint8)
    metal = rng.integers(0, 255, (size, size), dtype=np.uint8)
    xy = rng.uniform(-0.5, 0.5, (size, size, 2))
    n = np.concatenate([xy, np.sqrt(1 - (xy ** 2).sum(-1, keepdims=True))], -1)
    normal = np.round((n + 1) / 2 * 255).astype(np.uint8)
    return {"roughness": rough, "metallic": metal, "normal": normal}


def covered(mesh, size=32):
    from nfsd.distill.texels import uv_coverage

    return uv_coverage(torch.from_numpy(mesh.uvs), size).numpy()


@pytest.mark.parametrize("parametrization", ["pixels", "pyramid"])
def test_a_run_with_no_learning_returns_its_init_maps(parametrization):
    maps, init = init_maps(), np.full((32, 32, 3), 120, np.uint8)
    result = texture_mesh(octahedron(), cfg(parametrization=parametrization, normal_map=True), prior=AnalyticPrior(),
                          init_texture=init, init_maps=maps)
    seen = covered(octahedron())  # the result is dilated beyond the UV islands
    for name in ("roughness", "metallic"):
        assert np.abs(result.maps[name][seen].astype(int) - maps[name][seen]).max() <= 1, name
    # the normal's x, y round-trip; z is derived from them, within a step of rounding
    assert np.abs(result.maps["normal"][seen].astype(int) - maps["normal"][seen]).max() <= 2
    # without maps: the constants, as before
    plain = texture_mesh(octahedron(), cfg(), prior=AnalyticPrior(), init_texture=init)
    assert np.abs(plain.maps["roughness"].astype(int) - 128).max() <= 1


def test_a_map_given_alone_leaves_the_others_at_their_start():
    maps = init_maps()
    result = texture_mesh(octahedron(), cfg(), prior=AnalyticPrior(), init_texture=np.full((32, 32, 3), 9, np.uint8),
                          init_maps={"metallic": maps["metallic"]})
    seen = covered(octahedron())
    assert np.abs(result.maps["metallic"][seen].astype(int) - maps["metallic"][seen]).max() <= 1
    assert np.abs(result.maps["roughness"].astype(int) - 128).max() <= 1


def test_a_face_mask_keeps_the_init_maps_outside_bit_exactly():
    from nfsd.bench.materials import toy_sphere
    from nfsd.distill.texture import face_region

    mesh, init, maps = toy_sphere(), np.full((32, 32, 3), 90, np.uint8), init_maps()
    mask = mesh.positions[mesh.triangles].mean(1)[:, 0] < 0  # the left half
    result = texture_mesh(mesh, cfg(steps=4, lr=0.2, normal_map=True), prior=AnalyticPrior(), init_texture=init,
                          face_mask=mask, init_maps=maps)
    region = face_region(torch.from_numpy(mesh.uvs), torch.from_numpy(mask), 32).numpy()
    assert np.array_equal(result.texture[~region], init[~region])
    for name in ("roughness", "metallic", "normal"):
        assert np.array_equal(result.maps[name][~region], maps[name][~region]), name
    assert (result.maps["roughness"][region] != maps["roughness"][region]).any()  # inside, it learned


@pytest.mark.parametrize("kw, init_kw, words", [
    (dict(material="albedo"), {}, "material 'pbr'"),
    (dict(), {"normal": None}, "normal_map"),
    (dict(), {"init": None}, "initial texture"),
    (dict(), {"size": 16}, "roughness map: expected uint8 32x32"),
])
def test_unusable_init_maps_are_refused_naming_the_problem(kw, init_kw, words):
    from nfsd.distill.engine import TextureJob

    maps = init_maps(init_kw.get("size", 32))
    if "normal" not in init_kw:
        maps.pop("normal")
    init = None if "init" in init_kw else np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ConfigError, match=words):
        TextureJob(octahedron(), cfg(**kw), prior=AnalyticPrior(), init_texture=init, init_maps=maps)


# ---------------------------------------------------------------------------------------------
# POST /jobs: init_roughness, init_metallic, init_normal

def png_of(arr) -> bytes:
    """uint8 ``[H, W]`` or ``[H, W, 3]`` with row 0 at the bottom -> PNG bytes (top row first)."""
    from nfsd.distill.image_files import encode_png

    arr = np.asarray(arr)
    return encode_png(np.repeat(arr[..., None], 3, 2) if arr.ndim == 2 else arr)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from server_kit import PROMPT, LiveServer, config

    from nfsd.priors.tiny import build_tiny_model

    torch.set_num_threads(1)
    model = str(build_tiny_model(tmp_path_factory.mktemp("model") / "tiny", prompt_words=(PROMPT,)))
    with LiveServer(config(model, tmp_path_factory.mktemp("data"))) as live:
        yield live


def post(server, settings, init=True, size=16, **maps):
    import json

    from server_kit import cube, npz

    files = {"mesh": ("mesh.npz", npz(**cube()), "application/octet-stream")}
    if init:
        files["init_texture"] = ("init.png", png_of(np.full((size, size, 3), 120, np.uint8)), "image/png")
    for field, data in maps.items():
        files[field] = (f"{field}.png", data, "image/png")
    return server.client.post("/jobs", files=files, data={"settings": json.dumps(settings)})


PBR = {"prompt": "red brick wall", "steps": 1, "render_size": 32, "texture_size": 16, "material": "pbr",
       "normal_map": True, "lr": 0.0}


def test_a_job_with_init_maps_returns_them_and_keeps_them_for_resubmit(server):
    import io

    from server_kit import wait_for

    maps = init_maps(16, seed=3)
    r = post(server, PBR, init_roughness=png_of(maps["roughness"]), init_metallic=png_of(maps["metallic"]),
             init_normal=png_of(maps["normal"]))
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    folder = server.app.state.manager.store.dir(job_id)
    s = wait_for(server.client, job_id)
    assert s["state"] == "done", s
    z = np.load(io.BytesIO(server.client.get(f"/jobs/{job_id}/result").content), allow_pickle=False)
    for name in ("roughness", "metallic"):  # the cube's UVs cover every texel: no dilation
        assert np.abs(z[name].astype(int) - maps[name]).max() <= 1, name
    assert np.abs(z["normal"].astype(int) - maps["normal"]).max() <= 2
    assert {p.name for p in folder.glob("init_*.png")} == {"init_texture.png", "init_roughness.png",
                                                         "init_metallic.png", "init_normal.png"}
    # a re-submitted job (here: straight from the manager, as POST /jobs/{id}/resubmit) carries them too
    from nfsd.jobs.store import FAILED

    manager = server.app.state.manager
    manager.get(job_id).state = FAILED
    again = manager.resubmit(job_id)
    assert (manager.store.dir(again.id) / "init_normal.png").read_bytes() == (folder / "init_normal.png").read_bytes()
    wait_for(server.client, again.id)


@pytest.mark.parametrize("settings, init, size, maps, words", [
    (PBR, True, 16, {"init_roughness": png_of(np.zeros((8, 8), np.uint8))}, "init_roughness is 8x8; it must be the size of init_texture (16x16)"),
    (PBR, True, 16, {"init_metallic": b"\xff\xd8\xff\xe0 not a png"}, "init_metallic must be a PNG image"),
    (PBR, False, 16, {"init_roughness": png_of(np.zeros((16, 16), np.uint8))}, "init_roughness continues a pbr texture"),
    ({**PBR, "material": "albedo", "normal_map": False}, True, 16, {"init_metallic": png_of(np.zeros((16, 16), np.uint8))},
     "init_metallic is a map of the pbr material"),
    ({**PBR, "normal_map": False}, True, 16, {"init_normal": png_of(np.zeros((16, 16, 3), np.uint8))},
     "init_normal is a normal map"),
])
def test_bad_init_maps_get_a_422_naming_the_field(server, settings, init, size, maps, words):
    r = post(server, settings, init=init, size=size, **maps)
    assert r.status_code == 422 and words in r.json()["detail"], r.text


def test_the_cli_continues_a_pbr_run_from_its_map_files(tmp_path, capsys, tiny_model):
    from nfsd.cli import main
    from nfsd.distill.image_files import load_png, save_png
    from nfsd.distill.material import START_METALLIC_NORMAL_MAP

    quad = tmp_path / "quad.obj"  # two triangles covering the whole UV square: no texel is dilated
    quad.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\n"
                    "f 1/1 2/2 3/3\nf 1/1 3/3 4/4\n")
    maps = init_maps(16, seed=5)
    save_png(np.full((16, 16, 3), 99, np.uint8), tmp_path / "base.png")
    save_png(np.repeat(maps["roughness"][..., None], 3, 2), tmp_path / "rough.png")
    save_png(maps["normal"], tmp_path / "normal.png")
    out = tmp_path / "out"
    code = main(["texture", str(quad), "red", "--out", str(out), "--model", str(tiny_model), "--material", "pbr",
                 "--normal-map", "--steps", "1", "--lr", "0", "--render-size", "32", "--texture-size", "16",
                 "--init-texture", str(tmp_path / "base.png"), "--init-roughness", str(tmp_path / "rough.png"),
                 "--init-normal", str(tmp_path / "normal.png")])
    assert code == 0, capsys.readouterr().err
    assert np.abs(load_png(out / "roughness.png")[..., 0].astype(int) - maps["roughness"]).max() <= 1
    assert np.abs(load_png(out / "normal.png").astype(int) - maps["normal"]).max() <= 2
    start = round(255 * START_METALLIC_NORMAL_MAP)  # not given: the start of a run with a normal map
    assert np.abs(load_png(out / "metallic.png")[..., 0].astype(int) - start).max() <= 1
