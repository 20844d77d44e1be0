"""The models folder is read by the server, never trusted: FIFOs, stalled files, symlinks out of the
folder, suffix-less link targets, and `model` strings that would probe the file system."""

from __future__ import annotations

import json
import os
import shutil
import time

import httpx
import pytest
import torch
from fastapi import HTTPException
from safetensors.torch import save_file
from server_kit import LiveServer, config

from nfsd.errors import ModelError
from nfsd.priors import catalog as catalog_mod
from nfsd.priors.catalog import Catalog
from nfsd.server import ServerConfig, parse_settings

SD1_KEY = "cond_stage_model.transformer.text_model.final_layer_norm.weight"
SD1_LORA_KEY = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight"
XL_LORA_KEY = "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"


def header_only(path, keys, shapes=None):
    shapes = shapes or {}
    save_file({k: torch.zeros(shapes.get(k, (1,))) for k in keys}, str(path))
    return path


@pytest.fixture()
def models_dir(tmp_path, tiny_model):
    root = tmp_path / "models"
    root.mkdir()
    shutil.copytree(tiny_model, root / "tiny")
    header_only(root / "dreamshaper_8.safetensors", [SD1_KEY])
    (root / "loras").mkdir()
    header_only(root / "loras" / "wood.safetensors", [SD1_LORA_KEY], {SD1_LORA_KEY: (4, 768)})
    header_only(root / "loras" / "pixel_xl.safetensors", [XL_LORA_KEY])
    header_only(root / "loras" / "not_a_lora.safetensors", ["some.weight"])
    return root


def fifo(path):
    os.mkfifo(path)
    return path


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_fifo_in_the_models_dir_freezes_nothing(models_dir, tiny_model, tmp_path):
    fifo(models_dir / "stuck.safetensors")
    shutil.copytree(tiny_model, models_dir / "blocked")
    (models_dir / "blocked" / "unet" / "config.json").unlink()
    fifo(models_dir / "blocked" / "unet" / "config.json")  # a folder whose config blocks whoever opens it
    fifo(models_dir / "loras" / "stuck_lora.safetensors")
    cfg = config(str(tiny_model), tmp_path / "data", models_dir=models_dir)
    with LiveServer(cfg) as live:
        c = httpx.Client(base_url=live.url, timeout=25)
        t0 = time.monotonic()
        names = {m["name"] for m in c.get("/models").json()["models"]}
        assert time.monotonic() - t0 < 20
        assert "dreamshaper_8.safetensors" in names and "wood" in names
        assert "stuck.safetensors" not in names and "stuck_lora" not in names
        assert c.get("/health", timeout=5).status_code == 200
        assert c.get("/jobs", timeout=5).status_code == 200


def test_the_description_is_cached_and_rescanned_when_the_folder_changes(models_dir, monkeypatch):
    calls = []
    real = catalog_mod.scan_in_child
    monkeypatch.setattr(catalog_mod, "scan_in_child", lambda c, timeout=None: calls.append(1) or real(c, timeout))
    monkeypatch.setattr(catalog_mod, "_CACHE", {})
    cat = Catalog(models_dir=models_dir, include_hub_cache=False, isolated=True)
    assert cat.check_model("dreamshaper_8.safetensors").endswith("dreamshaper_8.safetensors")
    for _ in range(5):  # submits naming a model do not rescan the folder
        cat.check_model("dreamshaper_8.safetensors")
        cat.check_loras([{"name": "wood"}])
    assert len(calls) == 1
    time.sleep(0.02)
    header_only(models_dir / "new_model.safetensors", [SD1_KEY])  # the folder's mtime changes
    assert cat.check_model("new_model.safetensors")
    assert len(calls) == 2


def test_a_scan_that_stalls_is_killed_and_says_so(models_dir, monkeypatch):
    monkeypatch.setattr(catalog_mod, "_CACHE", {})
    monkeypatch.setattr(catalog_mod, "SCAN_TIMEOUT_S", 0.001)
    cat = Catalog(models_dir=models_dir, include_hub_cache=False, isolated=True)
    t0 = time.monotonic()
    models, _, complete = catalog_mod._scanned(cat)
    assert not complete and time.monotonic() - t0 < 5
    assert [m.name for m in models] == ["builtin"] or models  # what was read before is kept
    with pytest.raises(ModelError, match="could not read its --models-dir in full"):
        cat.check_model("dreamshaper_8.safetensors")


def test_symlinks_out_of_the_folder_are_not_listed(models_dir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    header_only(outside / "secret.safetensors", [SD1_KEY])
    (models_dir / "passwd.safetensors").symlink_to("/etc/passwd")
    (models_dir / "secret.safetensors").symlink_to(outside / "secret.safetensors")
    (models_dir / "elsewhere").symlink_to(outside)
    (models_dir / "loras" / "secret_lora.safetensors").symlink_to(outside / "secret.safetensors")
    entries = Catalog(models_dir=models_dir, include_hub_cache=False, isolated=True).entries()
    names = {e.name for e in entries}
    assert not names & {"passwd.safetensors", "secret.safetensors", "elsewhere", "secret_lora"}
    assert not any(e.path and ("/etc/passwd" in e.path or str(outside) in e.path) for e in entries)
    with pytest.raises(ModelError, match="not offered"):
        Catalog(models_dir=models_dir, include_hub_cache=False).check_model(str(models_dir / "passwd.safetensors"))


def test_a_link_named_safetensors_to_a_suffixless_blob_is_read_by_its_name(models_dir):
    blobs = models_dir / "blobs"
    blobs.mkdir()
    header_only(blobs / "0123abcd", [SD1_KEY])
    (models_dir / "linked.safetensors").symlink_to(blobs / "0123abcd")
    entry = {e.name: e for e in Catalog(models_dir=models_dir, include_hub_cache=False).models()}["linked.safetensors"]
    assert (entry.family, entry.supported) == ("sd1", True) and "pickled" not in entry.note
    assert entry.path.endswith("linked.safetensors")


def test_model_is_matched_by_spelling_never_resolved(models_dir, tmp_path):
    """A link to the models folder elsewhere: answering 202 would say where the link points."""
    (tmp_path / "probe").symlink_to(models_dir)
    cat = Catalog(models_dir=models_dir, include_hub_cache=False)
    offered = cat.check_model(str(models_dir / "dreamshaper_8.safetensors"))
    assert offered == str(models_dir / "dreamshaper_8.safetensors")
    assert cat.check_model(str(models_dir / "loras" / ".." / "dreamshaper_8.safetensors")) == offered
    for probe in (str(tmp_path / "probe" / "dreamshaper_8.safetensors"),
                  str(tmp_path / "probe" / "loras" / "wood.safetensors")):
        with pytest.raises(ModelError, match="not offered"):
            cat.check_model(probe)
    with pytest.raises(ModelError, match="not offered"):
        cat.check_loras([{"path": str(tmp_path / "probe" / "loras" / "wood.safetensors")}])


@pytest.mark.parametrize("settings", [
    {"model": "a\x00b.safetensors"},
    {"model": "/tmp/x\x00/y"},
    {"loras": [{"path": "/tmp/l\x00ora.safetensors"}]},
    {"loras": ["x\x00.safetensors:0.5"]},
])
def test_a_nul_byte_in_model_or_lora_is_a_422(models_dir, tiny_model, tmp_path, settings):
    cfg = ServerConfig(data_dir=tmp_path, model=str(tiny_model), models_dir=models_dir)
    with pytest.raises(HTTPException) as info:
        parse_settings(json.dumps({"prompt": "red", **settings}), cfg)
    # model: refused as text before the catalog sees it; a LoRA path: not offered
    assert info.value.status_code == 422 and ("not offered" in info.value.detail or "NUL" in info.value.detail)


def test_loras_that_cannot_work_are_refused_at_submit(models_dir, tiny_model):
    cat = Catalog(models_dir=models_dir, include_hub_cache=False)
    with pytest.raises(ModelError, match="not_a_lora.*cannot be used"):
        cat.check_loras([{"name": "not_a_lora"}], cat.check_model("dreamshaper_8.safetensors"))
    with pytest.raises(ModelError, match="trained for sd1 but the built-in model"):
        cat.check_loras([{"name": "wood"}], "builtin")
    with pytest.raises(ModelError, match="trained for sdxl"):
        cat.check_loras([{"name": "pixel_xl"}], cat.check_model("dreamshaper_8.safetensors"))
    assert cat.check_loras([{"name": "wood"}], cat.check_model("dreamshaper_8.safetensors"))


def test_encoder_tiny_without_a_tiny_encoder_is_refused_in_words_for_api_users(models_dir):
    from nfsd.priors.tiny import build_tiny_autoencoder

    cat = Catalog(models_dir=models_dir, include_hub_cache=False)
    tiny = cat.check_model("tiny")
    with pytest.raises(ModelError, match="encoder 'tiny' needs") as info:
        cat.check_encoder(tiny, "tiny")
    assert "--" not in str(info.value)  # no CLI option named to an API user
    cat.check_encoder(tiny, "full")
    build_tiny_autoencoder(models_dir / "tiny" / "vae_tiny")
    cat.check_encoder(tiny, "tiny")
    assert {e.name: e for e in cat.models()}["tiny"].tiny_encoder
