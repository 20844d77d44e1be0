"""Meshes as they come: UDIM tiles (one texture per tile, through an atlas) and ``uvs: unwrap``.

Real meshes: benchmarks/meshes/hardsurface.obj (Smart UV Project, every UV in [0, 1]); its UDIM
variant moves the faces on the right half of its UV square into tile 1002 (u + 1).
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nfsd.cli import main
from nfsd.distill.tiles import atlas_plan
from nfsd.errors import ConfigError
from nfsd.geometry.mesh import check_mesh
from nfsd.geometry.mesh_files import load_mesh
from nfsd.geometry.udim import UdimLayout, join_tiles, split_atlas, to_atlas, udim_tiles
from nfsd.geometry.wire import write_wire_npz
from nfsd.settings import resolve

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MESHES = Path(__file__).resolve().parents[1] / "benchmarks" / "meshes"
PROMPT = "red and white stripes"


def hardsurface():
    return load_mesh(MESHES / "hardsurface.obj")


def udim_variant(mesh):
    """``mesh`` with the faces on the right half of its UV square moved to tile 1002 (u + 1), as an artist
    splits a layout over two tiles; returns (mesh, faces of 1002)."""
    right = mesh.uvs.mean(axis=1)[:, 0] > 0.5
    uvs = mesh.uvs.copy()
    uvs[right, :, 0] += 1.0
    return dataclasses.replace(mesh, uvs=uvs, warnings=[]), right


def coverage(uvs: np.ndarray, size: int) -> np.ndarray:
    """``[size, size]`` bool (row 0 bottom): texels some triangle of ``uvs`` (in [0, 1]) touches."""
    from nfsd.distill.texels import uv_coverage

    return uv_coverage(torch.from_numpy(np.ascontiguousarray(uvs, np.float32)), size).numpy()


def grown(mask: np.ndarray, rings: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(rings):
        p = np.pad(out, 1)
        out = p[1:-1, 1:-1] | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:] | p[:-2, :-2] | p[2:, 2:] \
            | p[:-2, 2:] | p[2:, :-2]
    return out


# ---------------------------------------------------------------------------------------------
# geometry.udim


def test_a_two_tile_layout_is_udim_and_round_trips_through_the_atlas():
    mesh, right = udim_variant(hardsurface())
    assert 0 < right.sum() < len(right)
    layout = udim_tiles(mesh.uvs)
    assert layout == UdimLayout(tiles=(1001, 1002), cols=2, rows=2)
    atlas = to_atlas(mesh.uvs, layout)
    assert atlas.dtype == np.float32 and atlas.shape == mesh.uvs.shape
    assert atlas.min() >= 0 and atlas.max() <= 1
    # tile 1001 -> slot (0, 0) = the bottom-left quarter; 1002 -> slot (1, 0), bottom-right
    np.testing.assert_allclose(atlas[~right], mesh.uvs[~right] / 2, atol=1e-6)
    np.testing.assert_allclose(atlas[right], (mesh.uvs[right] - [1, 0] + [1, 0]) / 2, atol=1e-6)
    texture = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    tiles = split_atlas(texture, layout)
    assert list(tiles) == [1001, 1002] and tiles[1001].shape == (4, 4, 3)
    np.testing.assert_array_equal(tiles[1001], texture[:4, :4])  # row 0 = bottom = v 0
    np.testing.assert_array_equal(tiles[1002], texture[:4, 4:])
    np.testing.assert_array_equal(join_tiles(tiles, layout)[:4], texture[:4])


def test_tiles_above_and_many_tiles_take_square_grid_slots():
    tri = np.array([[[0.1, 0.1], [0.9, 0.1], [0.5, 0.9]]], np.float32)
    offsets = [(0, 0), (3, 0), (0, 1), (9, 2), (1, 0)]  # tiles 1001, 1004, 1011, 1030, 1002
    uvs = np.concatenate([tri + np.array(o, np.float32) for o in offsets])
    layout = udim_tiles(uvs)
    assert layout.tiles == (1001, 1002, 1004, 1011, 1030) and (layout.cols, layout.rows) == (3, 3)
    assert layout.slot(1011) == (0, 1) and layout.atlas_side(256) == 768
    atlas = to_atlas(uvs, layout)
    np.testing.assert_allclose(atlas[2], (tri[0] + [0, 1]) / 3, atol=1e-6)  # 1011 is slot 3: column 0, row 1


@pytest.mark.parametrize("name, shift", [
    ("straddles tiles 1001 and 1002", lambda uvs: np.array([[0.8, 0.1], [1.2, 0.1], [1.0, 0.5]], np.float32)),
    ("negative tile", lambda uvs: uvs - np.array([1.0, 0.0], np.float32)),
    ("u beyond tile 1010", lambda uvs: uvs + np.array([10.0, 0.0], np.float32)),
    ("negative v", lambda uvs: uvs - np.array([0.0, 1.0], np.float32)),
])
def test_straddling_or_out_of_range_layouts_are_not_udim(name, shift):
    mesh, right = udim_variant(hardsurface())
    uvs = mesh.uvs.copy()
    moved = np.flatnonzero(right)[:5]
    uvs[moved] = shift(uvs[moved] - np.array([1.0, 0.0], np.float32))  # shifted from tile 1001's square
    assert udim_tiles(uvs) is None, name


def test_one_tile_and_edges_of_tiles():
    mesh = hardsurface()
    assert udim_tiles(mesh.uvs) is None  # the unit square
    assert udim_tiles(mesh.uvs + np.array([1.0, 0.0], np.float32)) is None  # one tile: not UDIM
    square = np.array([[[0, 0], [1, 0], [1, 1]], [[1, 0], [2, 0], [2, 1]]], np.float32)  # corners on edges
    assert udim_tiles(square).tiles == (1001, 1002)


def test_check_mesh_warns_about_outside_uvs_naming_the_option_unless_they_are_udim():
    mesh, right = udim_variant(hardsurface())
    assert check_mesh(mesh) == [] and mesh.warnings == []
    creature = dataclasses.replace(mesh, uvs=mesh.uvs * 8 - 7.6, warnings=[])  # -7.6..8.5, like the issue's
    found = check_mesh(creature)
    assert len(found) == 1
    assert "pass --uvs unwrap (API: \"uvs\": \"unwrap\") to unwrap it, or lay it out in UDIM tiles" in found[0]


def test_an_atlas_over_the_largest_texture_names_the_tile_count_and_the_size_to_pass():
    mesh, _ = udim_variant(hardsurface())
    cfg = resolve({"prompt": PROMPT, "texture_size": 4096})
    with pytest.raises(ConfigError, match=r"2 UDIM tiles.*8192 px.*--texture-size 2048"):
        atlas_plan(mesh, cfg)
    atlas_mesh, engine_cfg, layout = atlas_plan(mesh, resolve({"prompt": PROMPT, "texture_size": 2048}))
    assert engine_cfg.texture_size == 4096 and layout.tiles == (1001, 1002)
    with pytest.raises(ConfigError, match="initial texture"):
        atlas_plan(mesh, cfg.__class__(**dict(cfg.to_dict(), texture_size=64)), np.zeros((64, 64, 3), np.uint8))


# ---------------------------------------------------------------------------------------------
# the CLI and the server


def check_tiles(textures: dict, mesh, right: np.ndarray, size: int) -> None:
    """Each tile's texture changed only where its own faces are: beyond the dilation's rings (16, and the
    coverage's one texel) of its faces every texel holds the same fill, and that fill is the same in both."""
    fills = []
    for tile, faces in ((1001, ~right), (1002, right)):
        texture = textures[tile].astype(np.int16)
        assert texture.shape[:2] == (size, size)
        local = mesh.uvs[faces] - np.array([tile - 1001, 0], np.float32)
        own = coverage(local, size)
        far = ~grown(own, 18)
        assert far.sum() > 0.05 * size * size, tile
        fill = texture[far]
        assert (fill == fill[0]).all(), f"tile {tile} changed where none of its faces are"
        fills.append(fill[0])
        assert texture[own].std(axis=0).max() > 1.0, f"tile {tile} was not textured where its faces are"
    np.testing.assert_array_equal(fills[0], fills[1])


def test_cli_writes_one_texture_per_tile(tiny_model, tmp_path, capsys):
    mesh, right = udim_variant(hardsurface())
    path = tmp_path / "udim.npz"
    write_wire_npz(mesh, path)
    out = tmp_path / "out"
    code = main(["texture", str(path), PROMPT, "--out", str(out), "--model", str(tiny_model), "--steps", "3",
                 "--render-size", "32", "--texture-size", "128", "--device", "cpu"])
    assert code == 0
    assert "outside [0, 1]" not in capsys.readouterr().err  # a UDIM layout is no out-of-range warning
    assert not (out / "texture.png").exists()
    textures = {t: np.asarray(Image.open(out / f"texture.{t}.png").convert("RGB"))[::-1] for t in (1001, 1002)}
    check_tiles(textures, mesh, right, 128)
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["texture_size"] == 128  # per tile
    assert report["udim"]["tiles"] == [1001, 1002] and report["udim"]["files"] == ["texture.1001.png",
                                                                                   "texture.1002.png"]
    assert report["udim"]["atlas_size"] == 256 and "glTF has no UDIM" in report["udim"]["glb"]
    import trimesh

    glb = trimesh.load(out / "textured.glb", force="mesh")
    assert len(glb.faces) == mesh.num_faces
    image = glb.visual.material.baseColorTexture
    assert image.size == (256, 256)  # the atlas


def test_cli_uvs_unwrap_ignores_out_of_range_uvs_and_keep_warns(tiny_model, tmp_path, capsys):
    mesh = hardsurface()
    creature = dataclasses.replace(mesh, uvs=mesh.uvs * 16.1 - 7.6, warnings=[])  # -7.6..8.5
    path = tmp_path / "creature.npz"
    write_wire_npz(creature, path)
    common = [PROMPT, "--model", str(tiny_model), "--steps", "2", "--render-size", "32", "--texture-size", "64",
              "--device", "cpu"]
    assert main(["texture", str(path), *common, "--out", str(tmp_path / "keep")]) == 0
    err = capsys.readouterr().err
    assert "pass --uvs unwrap (API: \"uvs\": \"unwrap\") to unwrap it" in err
    keep = json.loads((tmp_path / "keep" / "report.json").read_text())
    assert keep["mesh"]["uvs_generated"] is False and keep["settings"]["uvs"] == "keep"
    assert any("--uvs unwrap" in w for w in keep["mesh"]["warnings"])

    assert main(["texture", str(path), *common, "--uvs", "unwrap", "--out", str(tmp_path / "unwrap")]) == 0
    assert "--uvs unwrap" not in capsys.readouterr().err  # done: nothing to warn about
    report = json.loads((tmp_path / "unwrap" / "report.json").read_text())
    assert report["mesh"]["uvs_generated"] is True and report["settings"]["uvs"] == "unwrap"
    assert not [w for w in report["mesh"]["warnings"] if "outside [0, 1]" in w]  # (a texel-density note may stay)


def test_server_result_has_tiles_and_unwrap_gives_generated_uvs(tiny_model, tmp_path):
    from server_kit import LiveServer, config, npz, submit, wait_for

    mesh, right = udim_variant(hardsurface())
    wire = {"positions": mesh.positions, "triangles": mesh.triangles, "uvs": mesh.uvs}
    with LiveServer(config(str(tiny_model), tmp_path / "data")) as live:
        c = live.client
        job = submit(c, wire, {"prompt": PROMPT, "steps": 3, "render_size": 32, "texture_size": 128}).json()["id"]
        creature = dict(wire, uvs=mesh.uvs * 8 - 7.6)
        unwrap = submit(c, creature, {"prompt": PROMPT, "steps": 2, "render_size": 32, "texture_size": 64,
                                      "uvs": "unwrap"}).json()["id"]
        assert wait_for(c, job, timeout=180)["state"] == "done"
        result = np.load(io.BytesIO(c.get(f"/jobs/{job}/result").content), allow_pickle=False)
        assert result["tiles"].dtype == np.int32 and result["tiles"].tolist() == [1001, 1002]
        texture = result["texture"]
        assert texture.dtype == np.uint8 and texture.shape == (2, 128, 128, 4)
        np.testing.assert_array_equal(result["uvs"], mesh.uvs)  # the mesh's own UDIM UVs
        assert not bool(result["uvs_generated"])
        check_tiles({1001: texture[0, ..., :3], 1002: texture[1, ..., :3]}, mesh, right, 128)
        meta = json.loads(str(result["meta"]))
        assert meta["settings"]["texture_size"] == 128 and meta["udim"]["tiles"] == [1001, 1002]
        uvs = np.load(io.BytesIO(c.get(f"/jobs/{job}/uvs").content), allow_pickle=False)
        np.testing.assert_array_equal(uvs["uvs"], mesh.uvs)

        status = wait_for(c, unwrap, timeout=180)
        assert status["state"] == "done" and status["settings"]["uvs"] == "unwrap"
        result = np.load(io.BytesIO(c.get(f"/jobs/{unwrap}/result").content), allow_pickle=False)
        assert bool(result["uvs_generated"]) and "tiles" not in result.files
        assert result["texture"].shape == (64, 64, 4)
        assert result["uvs"].min() >= 0 and result["uvs"].max() <= 1
