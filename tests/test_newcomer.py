"""A newcomer's first hour: prompts the built-in prior cannot know are refused before any work (every
face), the texel-density rule for dense meshes, and the CLI's order of checks (no --out folder for a
wrong mesh path, no progress bar before a model-not-found error)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from server_kit import LiveServer, config, cube, submit

from nfsd.builtin import vocabulary
from nfsd.cli import main
from nfsd.errors import ConfigError
from nfsd.geometry import texel_density
from nfsd.geometry.builtin_meshes import builtin_mesh
from nfsd.settings import BUILTIN, resolve

UNKNOWN = "weathered oak wood"


def test_unknown_words_are_named_in_order_once():
    assert vocabulary.unknown_words(UNKNOWN) == ["weathered", "oak", "wood"]
    assert vocabulary.unknown_words("Red and WHITE stripes, oak, oak") == ["oak"]


@pytest.mark.parametrize("suffix", ("",) + vocabulary.VIEW_SUFFIXES)
def test_every_prompt_of_the_vocabulary_passes_with_every_view_suffix(suffix):
    for prompt in vocabulary.PROMPTS:
        assert vocabulary.unknown_words(prompt + suffix) == [], prompt + suffix
        resolve({"prompt": prompt + suffix, "model": BUILTIN})
    resolve({"prompt": "white and red stripes", "model": BUILTIN})  # either colour order


def test_the_grammar_names_every_pattern_and_colour():
    text = vocabulary.grammar()
    assert all(c in text for c in vocabulary.COLOUR_NAMES)
    assert all(p in text for p in vocabulary.PATTERNS)


def test_the_built_in_prior_refuses_unknown_words_unless_allowed():
    with pytest.raises(ConfigError) as exc:
        resolve({"prompt": UNKNOWN})  # the default model is the built-in prior
    said = str(exc.value)
    assert "'weathered', 'oak', 'wood' are not among its words" in said
    assert vocabulary.grammar() in said and "--allow-unknown-words" in said and "--model" in said
    assert resolve({"prompt": UNKNOWN, "allow_unknown_words": True}).prompt == UNKNOWN
    with pytest.raises(ConfigError, match="'oak' is not among"):  # dds also encodes its source prompt
        resolve({"prompt": "red and white stripes", "mode": "dds", "source_prompt": "oak"})


def test_open_models_take_any_words():
    assert resolve({"prompt": UNKNOWN, "model": "/models/sd15"}).prompt == UNKNOWN
    assert resolve({"prompt": UNKNOWN}, default_model="/models/sd15").prompt == UNKNOWN


def test_the_cli_says_so_before_any_work(tmp_path, capsys):
    mesh = tmp_path / "m.npz"
    np.savez(mesh, **cube())
    out = tmp_path / "out"
    assert main(["texture", str(mesh), UNKNOWN, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'weathered', 'oak', 'wood'" in err and "preparing" not in err
    assert not out.exists(), "nothing was created"
    assert main(["texture", str(mesh), UNKNOWN, "--out", str(out), "--allow-unknown-words", "--steps", "1",
                 "--texture-size", "32", "--device", "cpu", "--threads", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["allow_unknown_words"] is True and report["settings"]["prompt"] == UNKNOWN


def test_texture_help_prints_the_grammar(capsys):
    with pytest.raises(SystemExit):
        main(["texture", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--allow-unknown-words" in help_text and "checkerboard of COLOUR and COLOUR" in help_text


def test_a_wrong_mesh_path_creates_no_out_folder(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["texture", str(tmp_path / "missing.obj"), "red and white stripes", "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err and not out.exists()


def test_a_missing_model_fails_before_a_progress_bar(tmp_path, capsys):
    mesh = tmp_path / "m.npz"
    np.savez(mesh, **cube())
    assert main(["texture", str(mesh), UNKNOWN, "--model", str(tmp_path / "nothing"), "--out",
                 str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "preparing" not in err and not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    with LiveServer(config(str(tiny_model), tmp_path_factory.mktemp("data"))) as live:
        yield live


def test_the_server_answers_422_naming_the_words(server):
    c = server.client
    r = c.post("/settings/resolve", json={"prompt": UNKNOWN, "model": BUILTIN})
    assert r.status_code == 422 and "'weathered', 'oak', 'wood'" in r.json()["detail"]
    r = submit(c, cube(), {"prompt": UNKNOWN, "model": BUILTIN, "steps": 1})
    assert r.status_code == 422 and "'weathered', 'oak', 'wood'" in r.json()["detail"]
    ok = c.post("/settings/resolve", json={"prompt": UNKNOWN, "model": BUILTIN, "allow_unknown_words": True})
    assert ok.status_code == 200, ok.text
    assert c.post("/settings/resolve", json={"prompt": UNKNOWN}).status_code == 200  # the server's open model


# ------------------------------------------------------------------------------------------------
# Texel density

def _dense_sphere():
    sphere = builtin_mesh("sphere")  # 2,208 faces -> 35,328 after two subdivisions
    return texel_density.subdivide(sphere.world_positions(), sphere.triangles, 2)


def test_the_size_rule_on_a_dense_mesh():
    positions, triangles = _dense_sphere()
    assert len(triangles) == 2208 * 16
    size = texel_density.size_for_surface(positions, triangles, 256)
    assert size in (512, 1024, 2048) and size & (size - 1) == 0
    # its rule: at size/2 the median triangle's estimated share of the atlas is under MIN_TEXELS texels
    areas = texel_density.triangle_areas(positions, triangles)
    share = texel_density.PACK_FILL * np.median(areas) / areas.sum()
    assert share * size**2 >= texel_density.MIN_TEXELS > share * (size // 2) ** 2
    sphere = builtin_mesh("sphere")
    assert texel_density.size_for_surface(sphere.world_positions(), sphere.triangles, 256) == 256  # light mesh: as is
    tiny = np.zeros((10**6, 3, 2), np.float32)
    tiny[:, 1, 0] = tiny[:, 2, 1] = 1e-4
    assert texel_density.size_for_uvs(tiny, 256) == texel_density.MAX_AUTO_SIZE  # capped


def test_uvs_measure_texels_and_a_given_size_too_small_is_warned():
    # a 100 x 100 grid of squares, two triangles each, over the whole UV square: 20,000 triangles
    n = 100
    g = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2) / n
    a, b, c, d = g, g + [1 / n, 0], g + [1 / n, 1 / n], g + [0, 1 / n]
    uvs = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)]).astype(np.float32)
    cov = texel_density.coverage(uvs, 256)
    assert cov.median_texels == pytest.approx(256**2 / 20000) and cov.under_one == 0
    assert texel_density.coverage(uvs, 64).under_one == 1.0
    assert texel_density.size_for_uvs(uvs, 16) == 256  # 2 texels need 200 px: the next power of two

    positions, triangles = _dense_sphere()
    mesh = builtin_mesh("sphere")
    dense = type(mesh)(positions=positions, triangles=triangles)
    size, warning = texel_density.advice(dense, 256, explicit=False)
    assert size > 256 and warning is None  # left out: the rule's size
    kept, warning = texel_density.advice(dense, 256, explicit=True)
    assert kept == 256 and f"--texture-size {size}" in warning
