# SPDX-License-Identifier: GPL-3.0-or-later
"""The add-on and the server agree: what the panel sends is what the server takes, and what the add-on
reads is what the server sends. The fake backend answers with the server's own code (fake_backend.py),
so these tests, and every test that runs a job on the fake, fail when a key is renamed on either side."""

import itertools
import json
import sys

import bpy
import pytest

from fake_backend import FakeBackend, FakeConfig
from test_panel import MODELS, model


def test_the_fake_runs_the_servers_code_in_blenders_process_without_pymeshlab():
    import fake_backend
    from nfsd.server import schemas, validation

    assert "pymeshlab" not in sys.modules  # bpy must come first: see conftest
    assert fake_backend.status_dict is schemas.status_dict and fake_backend.read_request is validation.read_request


def configurations():
    """Every panel configuration that changes the settings dict: modes, presets, offsets, advanced
    values, the model picker, and what Continue and Selected Faces Only add (jobs._start)."""
    for mode, preset, offsets, advanced, chosen, continuing in itertools.product(
            ("nfsd", "sds", "csd", "dds"), ("FAST", "BALANCED", "HIGH", "CUSTOM"), (False, True),
            (False, True), ("", "builtin", "tiny-sdxl"), (False, True)):
        if mode == "dds" and not continuing:
            continue  # Edit always continues a run
        yield mode, preset, offsets, advanced, chosen, continuing


def test_every_panel_configuration_sends_settings_the_server_takes_unchanged(addon, scene):
    from nfsd.server.validation import read_request, resolve_request

    with FakeBackend(models=MODELS) as backend:
        addon.backend_status.check_backend(addon.jobs.Connection(url=backend.url))
        config = FakeConfig(offered=backend.models)
        nfsd = scene.nfsd
        checked = 0
        for mode, preset, offsets, advanced, chosen, continuing in configurations():
            nfsd.model_choice = chosen or "__default__"
            nfsd.mode, nfsd.offsets = mode, offsets
            if preset == "CUSTOM":
                nfsd.steps, nfsd.texture_size, nfsd.render_size = 37, "128", "384"
            else:
                nfsd.preset = preset
            nfsd.offset_strength = 0.05
            nfsd.negative_prompt = "blurry" if advanced else ""
            nfsd.guidance_scale = 12.5 if advanced else 0.0
            nfsd.batch = 3 if advanced else 0
            nfsd.allow_unknown_words = chosen in ("", "builtin")  # the panel's "Run anyway" for the built-in prior
            sent = addon.properties.settings_dict(nfsd)
            if continuing:  # as jobs._start: the continued run's texture size, its prompt as the source
                sent["texture_size"] = 64
                if mode == "dds":
                    sent["source_prompt"] = "red and white stripes"
            text = json.dumps(sent)
            assert read_request(text) == sent, sent  # no key unknown, renamed, retyped or out of range
            resolved = resolve_request(read_request(text), config).settings
            model_path = {"tiny-sdxl": "/models/tiny-sdxl"}
            assert {key: model_path.get(value, value) if key == "model" else value
                    for key, value in sent.items()} == {key: resolved[key] for key in sent}, sent
            checked += 1
        assert checked == 336


def test_a_key_the_server_does_not_know_is_refused_as_the_server_refuses_it(addon, fake_backend):
    client = addon.client.Client(fake_backend.url)
    with pytest.raises(addon.client.BackendError, match="unknown setting; allowed: prompt, ") as caught:
        client.submit(b"", {"prompt": "moss", "texture": 512})
    assert caught.value.status == 422
    with pytest.raises(addon.client.BackendError, match="texture_size must be a multiple of 16"):
        client.resolve_settings({"prompt": "moss", "texture_size": 1000})
    assert fake_backend.jobs == {}


def test_what_the_add_on_reads_is_what_the_server_sends(addon, scene):
    """The add-on's readers find their keys in the server's answers (a renamed key fails here)."""
    sdxl = model("tiny-sdxl", "sdxl", 128)
    with FakeBackend(models=MODELS[:1] + [sdxl, model("detail", "sdxl", None, kind="lora")]) as backend:
        client = addon.client.Client(backend.url)
        health = client.health()
        assert addon.backend_status.describe_health(health).endswith(": model builtin (loads with the first job), "
                                                                     "cpu, no GPU: slow")
        found = addon.backend_status.read_models(client.models())
        assert [(m["name"], m["family"], m["render_size"], m["defaults"]) for m in found] == [
            ("builtin", "builtin", 64, {"steps": 600, "texture_size": 256, "render_size": 128, "batch": 2}),
            ("tiny-sdxl", "sdxl", 128, {"steps": 400, "texture_size": 1024, "render_size": 128, "batch": 1})]
        answer = client.resolve_settings({"prompt": "moss", "model": "tiny-sdxl", "steps": 30})
        assert addon.estimate.lines(answer) == ["30 steps · 128 px render · 1024 px texture · 1 view/step",
                                                addon.estimate.UNKNOWN]
        job = addon.job.Job(1, "key", "Cube", {"steps": 30}, addon.jobs.Connection(url=backend.url))
        with backend.lock:
            job_id = backend._new_job(answer["settings"], {}, {}, None)["id"]
        for _ in range(2):  # each poll of the fake advances the job: queued -> running -> step 1
            job.take("status", client.status(job_id))
        assert (job.state, job.step, job.total) == ("running", 1, 4) and job.status_text().startswith("Step 1/4")
