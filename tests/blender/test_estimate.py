# SPDX-License-Identifier: GPL-3.0-or-later
"""The summary line says what will run and how long (POST /settings/resolve, asked in the background)."""

import time

import bpy

from conftest import RecordingLayout, add_mesh


def summary(addon):
    layout = RecordingLayout()
    addon.ui.draw_summary(layout, bpy.context.scene.nfsd, bpy.context)
    return layout.log


def test_the_summary_shows_the_resolved_settings_then_the_measured_time(addon, scene, prefs, fast_connection,
                                                                       fake_backend, monkeypatch):
    monkeypatch.setattr(addon.estimate, "DEBOUNCE_SECONDS", 0.0)
    prefs.backend_url, prefs.token = fake_backend.url, ""
    started = time.monotonic()
    first = summary(addon)
    assert time.monotonic() - started < 0.5  # drawing never waits for the backend
    # Not answered yet (and this fake has no GET /models): the panel's own values, no time.
    assert first == [("label", "3 steps · 64 px render · 64 px texture · views/step: backend default", "NONE")]
    addon.estimate.wait()
    assert addon.estimate.take_changed()  # the timer redraws the panel
    assert summary(addon) == [("label", "3 steps · 64 px render · 64 px texture · 1 view/step", "NONE"),
                              ("label", "Time unknown until a job of this kind has run", "TIME")]
    assert fake_backend.resolves[0]["steps"] == 3 and fake_backend.resolves[0]["prompt"] == "a weathered bronze statue"

    job = addon.jobs.wait(addon.jobs.start_job(add_mesh("cube"), addon.properties.settings_dict(scene.nfsd),
                                               fast_connection))
    assert job.state == "done", job.error
    summary(addon)  # a job finished here: its speed is asked for again
    addon.estimate.wait()
    assert summary(addon)[1] == ("label", "Time: about 2 s", "TIME")  # 3 steps at the fake's 2 steps/s
    asked = len(fake_backend.resolves)
    summary(addon)
    addon.estimate.wait()
    assert len(fake_backend.resolves) == asked == 2  # cached per settings dict

    fake_backend.stop()  # unreachable: the panel's own values, no time, no error
    scene.nfsd.steps = 4
    summary(addon)
    addon.estimate.wait()
    assert summary(addon) == [("label", "4 steps · 64 px render · 64 px texture · views/step: backend default",
                               "NONE")]


def test_settings_changing_quickly_are_asked_once_they_settle(addon, scene, prefs, fake_backend, monkeypatch):
    monkeypatch.setattr(addon.estimate, "DEBOUNCE_SECONDS", 0.3)
    prefs.backend_url, prefs.token = fake_backend.url, ""
    for steps in (10, 20, 30, 40, 50):  # dragging the Steps field
        scene.nfsd.steps = steps
        summary(addon)
        time.sleep(0.02)
    addon.estimate.wait()
    assert [body["steps"] for body in fake_backend.resolves] == [50]
    assert summary(addon)[0] == ("label", "50 steps · 64 px render · 64 px texture · 1 view/step", "NONE")


def test_durations_read_as_people_say_them(addon):
    duration = addon.estimate.duration
    assert [duration(s) for s in (0.2, 40, 119, 150, 3000, 7200)] == [
        "about 1 s", "about 40 s", "about 2 min", "about 2 min", "about 50 min", "about 2.0 h"]
    assert addon.estimate.lines(None) == [] and addon.estimate.lines({"detail": "x"}) == []


def test_a_prompt_the_built_in_prior_cannot_know_is_noted_before_anything_is_sent(addon, scene, prefs, monkeypatch):
    from fake_backend import FakeBackend

    monkeypatch.setattr(addon.estimate, "DEBOUNCE_SECONDS", 0.0)
    with FakeBackend() as backend:  # started with the built-in prior, as `nfsd serve` is by default
        prefs.backend_url, prefs.token = backend.url, ""
        scene.nfsd.prompt = "weathered oak wood"
        summary(addon)
        addon.estimate.wait()
        log = summary(addon)
        note = " ".join(text for kind, text, *_ in log if kind == "label")
        assert "'weathered', 'oak', 'wood' are not among its words" in note and "stripes" in note
        assert ("prop", "allow_unknown_words") in log and not backend.jobs  # nothing was submitted
        scene.nfsd.allow_unknown_words = True  # "Run anyway": the backend resolves it, the note goes
        summary(addon)
        addon.estimate.wait()
        log = summary(addon)
        assert not any("not among its words" in entry[1] for entry in log if entry[0] == "label")
        assert log[1] == ("label", "Time unknown until a job of this kind has run", "TIME")
        assert ("prop", "allow_unknown_words") in log  # still there, to turn it off again
        scene.nfsd.prompt = "red and white stripes"
        scene.nfsd.allow_unknown_words = False
        summary(addon)
        addon.estimate.wait()
        assert ("prop", "allow_unknown_words") not in summary(addon)  # words it knows: nothing to say
