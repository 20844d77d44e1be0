"""One declaration of every setting (nfsd.settings), one resolver for every face: the CLI's options, the
API's settings model, the panel's controls and docs/API.md's table all come from it or agree with it,
and the same choices resolve to the same settings from the CLI and over HTTP."""

from __future__ import annotations

import argparse
import ast
import io
import json
from pathlib import Path

import numpy as np
import pytest
from server_kit import LiveServer, config, cube, npz, submit, wait_for

from nfsd.cli import main
from nfsd.cli_args import DEMO_SETTINGS, build_parser, config_from_args
from nfsd.errors import ConfigError
from nfsd.server import JobSettings
from nfsd.server.api_doc import settings_table
from nfsd.settings import API, BUILTIN, CLI, PANEL, SETTINGS, TextureConfig, exposed, family_defaults, resolve

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "red and white stripes"


def _texture_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["texture"]


def test_every_cli_option_of_a_setting_is_its_declaration():
    options = {a.dest: a for a in _texture_parser()._actions}
    for s in exposed(CLI):
        if s.name == "prompt":
            continue  # the positional argument
        action = options[s.name]
        assert action.default is argparse.SUPPRESS, f"{s.name}: left out must mean 'resolve it'"
        assert tuple(action.choices or ()) == tuple(s.choices or ()), s.name
        assert s.help in action.help, s.name
    internal = {s.name for s in SETTINGS if CLI not in s.faces}
    assert not internal & set(options), "an internal setting became an option"


def test_the_api_model_is_the_declaration():
    assert list(JobSettings.model_fields) == [s.name for s in exposed(API)]
    for s in exposed(API):
        field = JobSettings.model_fields[s.name]
        bounds = {type(m).__name__: m for m in field.metadata}
        if s.range:
            assert (bounds["Ge"].ge, bounds["Le"].le) == s.range, s.name
        assert field.is_required() == (s.name == "prompt"), s.name
    assert "parametrization" in JobSettings.model_fields  # what the CLI offers for a job, the API accepts


def test_the_docs_table_is_generated_from_the_declaration():
    assert settings_table() in (ROOT / "docs" / "API.md").read_text(), \
        "run: python -m nfsd.server.api_doc --write docs/API.md"


def test_the_panel_offers_the_settings_declared_for_it():
    tree = ast.parse((ROOT / "nfsd_blender" / "properties.py").read_text())
    group = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "NFSD_PG_settings")
    controls = {n.target.id for n in group.body if isinstance(n, ast.AnnAssign)}
    missing = {s.name for s in exposed(PANEL)} - controls
    assert not missing, f"declared for the panel but not in NFSD_PG_settings: {missing}"
    assert all(API in s.faces for s in exposed(PANEL)), "the panel sends its settings through the API"


def test_what_a_request_leaves_out_takes_the_models_defaults():
    builtin = resolve({"prompt": PROMPT})
    assert (builtin.steps, builtin.texture_size, builtin.render_size, builtin.batch, builtin.parametrization,
            builtin.lr) == (600, 256, 128, 2, "surface", 0.04)
    assert family_defaults(BUILTIN) == {"steps": 600, "texture_size": 256, "render_size": 128, "batch": 2,
                                        "parametrization": "surface", "lr": 0.04}
    sd = resolve({"prompt": PROMPT, "model": "/models/sd15"}, family="sd1")
    assert (sd.steps, sd.texture_size, sd.render_size, sd.parametrization) == (400, 1024, None, "pyramid")
    chosen = resolve({"prompt": PROMPT, "steps": 7, "parametrization": "pixels", "render_size": None})
    assert (chosen.steps, chosen.parametrization, chosen.render_size) == (7, "pixels", 128)  # None: left out
    assert resolve({"prompt": PROMPT}, default_model="/m/x").model == "/m/x"


@pytest.mark.parametrize("request_, says", [
    ({"prompt": PROMPT, "stpes": 3}, "unknown setting(s): stpes"),
    ({"prompt": PROMPT, "texture_size": 100}, "multiple of 16"),
    ({"prompt": PROMPT, "steps": 0}, "steps=0 is out of range"),
    ({"prompt": PROMPT, "parametrization": "voxels"}, "parametrization must be one of pyramid, pixels, surface"),
    ({"prompt": "a\ud800b"}, "lone surrogate"),
    ({"prompt": PROMPT, "negative_prompt": "x\x00y"}, "NUL"),
    ({"prompt": "   "}, "prompt is empty"),
])
def test_bad_values_are_refused_naming_the_setting(request_, says):
    with pytest.raises(ConfigError, match=None) as exc:
        resolve(request_)
    assert says in str(exc.value)


def test_the_cli_resolves_through_the_same_function():
    args = build_parser().parse_args(["texture", "m.obj", PROMPT, "--out", "o", "--steps", "9", "--lora", "x.safetensors:0.5"])
    assert config_from_args(args) == resolve({"prompt": PROMPT, "steps": 9, "loras": [{"path": "x.safetensors",
                                                                                       "weight": 0.5}]})
    demo = config_from_args(build_parser().parse_args(["demo"]))
    assert demo == resolve({"prompt": PROMPT, "device": "cpu", **DEMO_SETTINGS})


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    with LiveServer(config(str(tiny_model), tmp_path_factory.mktemp("data"))) as live:
        yield live


def test_a_job_over_http_and_the_same_job_from_the_cli_run_the_same_settings(server, tmp_path, one_torch_thread):
    """The panel sends what the artist chose through the API; the CLI parses the same choices. The
    reports (result.npz's meta, report.json) must record the same resolved settings."""
    choices = {"prompt": PROMPT, "model": BUILTIN, "steps": 2, "texture_size": 64, "seed": 5}
    mesh = cube()
    r = submit(server.client, mesh, choices)
    assert r.status_code == 202, r.text
    status = wait_for(server.client, r.json()["id"])
    assert status["state"] == "done", status
    meta = json.loads(str(np.load(io.BytesIO(server.client.get(f"/jobs/{status['id']}/result").content))["meta"]))

    (tmp_path / "m.npz").write_bytes(npz(**mesh))
    assert main(["texture", str(tmp_path / "m.npz"), PROMPT, "--out", str(tmp_path / "o"), "--model", BUILTIN,
                 "--steps", "2", "--texture-size", "64", "--seed", "5", "--device", "cpu", "--threads", "1"]) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert meta["settings"] == report["settings"]
    assert report["settings"]["parametrization"] == "surface" and report["settings"]["lr"] == 0.04
    assert status["settings"] == {s.name: meta["settings"][s.name] for s in exposed(API)}  # stored resolved


def test_resolve_endpoint_says_what_would_run_and_how_long(server):
    c = server.client
    r = c.post("/settings/resolve", json={"prompt": PROMPT, "model": BUILTIN, "steps": 2, "texture_size": 64, "seed": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["settings"]["batch"] == 2 and body["settings"]["render_size"] == 128 and body["model_family"] == BUILTIN
    # The job above measured this kind of job (same model, sizes, batch): an estimate, not "unknown".
    assert body["steps_per_second"] > 0 and body["estimate_seconds"] == pytest.approx(2 / body["steps_per_second"])
    unknown = c.post("/settings/resolve", json={"prompt": PROMPT, "model": BUILTIN, "batch": 3}).json()
    assert unknown["estimate_seconds"] is None and unknown["steps_per_second"] is None
    bad = c.post("/settings/resolve", json={"prompt": PROMPT, "texture_size": 100})
    assert bad.status_code == 422 and "multiple of 16" in bad.json()["detail"]
    surrogate = c.post("/settings/resolve", content=b'{"prompt": "a\\ud800b"}', headers={"content-type": "application/json"})
    assert surrogate.status_code == 422 and "lone surrogate" in surrogate.json()["detail"]
    assert c.post("/settings/resolve", content=b"[" * 100, headers={"content-type": "application/json"}).status_code == 422


def test_models_say_what_a_job_of_them_runs(server):
    entries = {e["name"]: e for e in server.client.get("/models").json()["models"]}
    assert entries[BUILTIN]["defaults"] == {"steps": 600, "texture_size": 256, "render_size": 128, "batch": 2}
    own = entries[server.config.model]["defaults"]
    assert own["steps"] == TextureConfig().steps and own["texture_size"] == TextureConfig().texture_size


def test_a_normal_map_without_the_pbr_material_is_refused_by_name():
    with pytest.raises(ConfigError, match="normal_map.*material 'pbr'"):
        resolve({"prompt": "red and white stripes", "normal_map": True})
    assert resolve({"prompt": "red and white stripes", "material": "pbr", "normal_map": True}).normal_map
