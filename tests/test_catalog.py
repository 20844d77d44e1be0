"""The model list and the allowlist built on it: what a server offers, and nothing else."""

import json
import re
import shutil

import pytest
import torch
from safetensors.torch import save_file

from nfsd.priors.catalog import Catalog, format_table
from nfsd.errors import ConfigError, ModelError


def header_only(path, keys, shapes=None):
    """A .safetensors file with the given keys (tiny tensors): all the catalog reads is the header."""
    shapes = shapes or {}
    save_file({k: torch.zeros(shapes.get(k, (1,))) for k in keys}, str(path))
    return path


@pytest.fixture(scope="module")
def models_dir(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    shutil.copytree(tiny_model, root / "tiny")
    header_only(root / "juggernaut_xl.safetensors", ["conditioner.embedders.1.model.ln_final.weight",
                                                    "model.diffusion_model.input_blocks.0.0.weight"],
                {"model.diffusion_model.input_blocks.0.0.weight": (8, 4, 1, 1)})
    header_only(root / "dreamshaper_8.safetensors", ["cond_stage_model.transformer.text_model.final_layer_norm.weight"])
    header_only(root / "sd15_inpainting.safetensors", ["cond_stage_model.transformer.text_model.x",
                                                      "model.diffusion_model.input_blocks.0.0.weight"],
                {"model.diffusion_model.input_blocks.0.0.weight": (8, 9, 1, 1)})
    header_only(root / "flux1_dev.safetensors", ["double_blocks.0.img_attn.proj.weight"])
    (root / "notes.txt").write_text("not a model")
    loras = root / "loras" / "styles"
    loras.mkdir(parents=True)
    header_only(loras / "wood.safetensors", ["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
                                             ".lora_down.weight"],
                {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 768)})
    header_only(root / "loras" / "pixel_xl.safetensors", ["lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"])
    return root


def test_the_list_names_family_prediction_window_and_render_size(models_dir):
    entries = {e.name: e for e in Catalog(models_dir=models_dir, include_hub_cache=False).entries()}
    assert set(entries) == {"builtin", "tiny", "juggernaut_xl.safetensors", "dreamshaper_8.safetensors",
                            "sd15_inpainting.safetensors", "flux1_dev.safetensors", "styles/wood", "pixel_xl"}
    xl, sd1 = entries["juggernaut_xl.safetensors"], entries["dreamshaper_8.safetensors"]
    assert (xl.family, xl.render_size, xl.text_window, xl.supported) == ("sdxl", 1024, 77, True)
    assert (sd1.family, sd1.prediction_type, sd1.render_size) == ("sd1", "epsilon", 512)
    assert entries["tiny"].kind == "folder" and entries["tiny"].text_window == 77
    assert entries["builtin"].family == "builtin" and entries["builtin"].text_window == 32
    assert not entries["flux1_dev.safetensors"].supported and entries["flux1_dev.safetensors"].family == "flux"
    assert entries["sd15_inpainting.safetensors"].family == "inpainting"
    assert (entries["styles/wood"].kind, entries["styles/wood"].family) == ("lora", "sd1")
    assert entries["pixel_xl"].family == "sdxl" and "kohya" in entries["pixel_xl"].note
    table = format_table(list(entries.values()))
    assert "juggernaut_xl.safetensors" in table and "UNSUPPORTED" in table


def test_only_offered_models_are_accepted(models_dir, tmp_path):
    catalog = Catalog(default_model="builtin", models_dir=models_dir, include_hub_cache=False)
    assert catalog.check_model(None) == "builtin"
    assert catalog.check_model("tiny") == str((models_dir / "tiny").resolve())
    # A path that spells an offered entry differently is the same entry.
    assert catalog.check_model(str(models_dir / "loras" / ".." / "dreamshaper_8.safetensors")) == \
        str((models_dir / "dreamshaper_8.safetensors").resolve())
    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes(b"x")
    messages = set()
    for probe in (str(outside), str(tmp_path / "missing.safetensors"), "/etc/passwd", "nobody/not-cached"):
        with pytest.raises(ModelError, match="not offered by this server") as info:
            catalog.check_model(probe)
        messages.add(re.sub(r"^model '.*?' is", "model <m> is", str(info.value)))
    assert len(messages) == 1  # the same message for an existing and a missing path: no existence oracle
    with pytest.raises(ModelError, match="flux.*supported: SD 1.x"):
        catalog.check_model("flux1_dev.safetensors")


def test_loras_resolve_by_name_or_path_inside_the_lora_folder(models_dir, tmp_path):
    catalog = Catalog(models_dir=models_dir, include_hub_cache=False)
    wood = str((models_dir / "loras" / "styles" / "wood.safetensors").resolve())
    assert catalog.check_loras([{"name": "styles/wood", "weight": 0.7}]) == [{"path": wood, "weight": 0.7}]
    assert catalog.check_loras([{"path": wood}]) == [{"path": wood, "weight": 1.0}]
    with pytest.raises(ModelError, match="not offered"):
        catalog.check_loras([{"path": str(models_dir / "dreamshaper_8.safetensors")}])  # a model, not a LoRA
    sd1_model = catalog.check_model("dreamshaper_8.safetensors")
    assert catalog.check_loras([{"name": "styles/wood"}], sd1_model)[0]["path"] == wood
    with pytest.raises(ModelError, match="trained for sdxl but model .* is sd1"):
        catalog.check_loras([{"name": "pixel_xl"}], sd1_model)
    with pytest.raises(ModelError, match="no --models-dir"):
        Catalog(include_hub_cache=False).check_loras([{"name": "styles/wood"}])
    with pytest.raises(ConfigError, match="not a folder"):
        Catalog(models_dir=tmp_path / "nope").check()


def test_hub_ids_in_the_local_cache_are_offered(tiny_model, tmp_path, monkeypatch):
    snapshot = tmp_path / "hub" / "models--someone--tiny-sd" / "snapshots" / "abc123"
    shutil.copytree(tiny_model, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    monkeypatch.setattr("nfsd.priors.model_files.hub_cache_dir", lambda: tmp_path / "hub")
    catalog = Catalog()
    assert [e.name for e in catalog.models() if e.kind == "hub"] == ["someone/tiny-sd"]
    assert catalog.check_model("someone/tiny-sd") == "someone/tiny-sd"
    with pytest.raises(ModelError, match="not offered"):
        catalog.check_model("someone/other-model")


def test_get_models_and_the_allowlist_on_the_server(models_dir, tiny_model, tmp_path):
    from fastapi.testclient import TestClient

    from nfsd.server import ServerConfig, create_app

    app = create_app(ServerConfig(data_dir=tmp_path, model=str(tiny_model), models_dir=models_dir, token="s3cret"))
    client = TestClient(app, base_url="http://127.0.0.1")  # no lifespan: the worker is not started, routes that need it are not called
    assert client.get("/models").status_code == 401
    body = client.get("/models", headers={"Authorization": "Bearer s3cret"}).json()
    assert body["default_model"] == str(tiny_model)
    names = [m["name"] for m in body["models"]]
    assert names[:2] == ["builtin", str(tiny_model)] and "styles/wood" in names
    from fastapi import HTTPException

    from nfsd.server import parse_settings

    for probe in (str(tmp_path), "/no/such/model"):
        with pytest.raises(HTTPException, match="not offered") as info:
            parse_settings(json.dumps({"prompt": "red", "model": probe}), app.state.config)
        assert info.value.status_code == 422


def test_nfsd_models_prints_the_list(models_dir, capsys):
    from nfsd.cli import main

    assert main(["models", "--models-dir", str(models_dir), "--json"]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    assert listed["juggernaut_xl.safetensors"]["family"] == "sdxl" and listed["styles/wood"]["kind"] == "lora"
    assert main(["models", "--models-dir", str(models_dir / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err
