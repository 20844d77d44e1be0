# SPDX-License-Identifier: GPL-3.0-or-later
"""Texturing the selection: which selected objects a press of Texture sends (and why the others are
left out), one job per object started together, what the panel says about the selection's jobs, and
Cancel All. Main thread; no drawing (ui draws what this says).

Each object's job is an ordinary job of :mod:`jobs` (its own mesh, the panel's settings, its object
found by identity, its own record for saving and reattaching); the jobs of one press share a
:class:`submit_turns.SubmitTurns`, so they reach the backend in the order of :attr:`Plan.objects`
and, once its queue is full, the rest are "not sent" instead of being refused one by one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import jobs, properties, scene_state
from .submit_turns import SubmitTurns

LISTED = 4  # the other jobs of the selection listed by name under the active object's (then a count)


@dataclass
class Plan:
    """What a press of Texture does: ``objects`` get a job each (the active object first, then by
    name); ``left_out`` are ``(object, why)``; ``reason``: why nothing can be sent (objects empty)."""

    objects: list = field(default_factory=list)
    left_out: list = field(default_factory=list)
    reason: str | None = None


def selected(context) -> list:
    """The selected objects (none selected: the active one), the active one first, then by name."""
    found = list(getattr(context, "selected_objects", None) or [])
    active = getattr(context, "active_object", None)
    if not found and active is not None:
        found = [active]
    return sorted(found, key=lambda obj: (obj != active, obj.name))


def plan(context) -> Plan:
    """Which of the selected objects Texture sends with the panel's settings, and why not the others:
    not a mesh, already being textured (never sent twice), a linked duplicate of one that is sent."""
    objects = selected(context)
    if not objects:
        return Plan(reason="Select a mesh object")
    settings = properties.settings_dict(context.scene.nfsd)
    faces_only = context.scene.nfsd.selected_faces_only
    found = Plan()
    meshes = {}  # mesh -> the object of this press that textures it
    for obj in objects:
        problem = jobs.send_problem(obj, settings, faces_only=faces_only)
        if problem is None and obj.data in meshes:
            problem = (f"'{obj.name}' shares its mesh with '{meshes[obj.data].name}' (a linked duplicate): "
                       "it shows that object's texture")
        if problem:
            found.left_out.append((obj, problem))
        else:
            meshes[obj.data] = obj
            found.objects.append(obj)
    if not found.objects:
        found.reason = found.left_out[0][1]
    return found


def button_text(found: Plan) -> str:
    """The Texture button's text: "Texture 3 objects" when it sends several, else the operator's own."""
    return f"Texture {len(found.objects)} objects" if len(found.objects) > 1 else "Texture Selected"


def left_out_notes(found: Plan) -> list[str]:
    """One line per object a press leaves out (when it sends others; else :attr:`Plan.reason` says it)."""
    if not found.objects:
        return []
    notes = [f"Left out: {why}" for _obj, why in found.left_out[:LISTED]]
    if len(found.left_out) > LISTED:
        notes.append(f"Left out: {len(found.left_out) - LISTED} more")
    return notes


def texture(objects: list, settings: dict, connection, **options) -> tuple[list, list[str]]:
    """Start one job per object of ``objects`` (in that order) with ``settings``; ``options`` are
    :func:`jobs.prepare_job`'s. Every object is prepared (bpy) before any worker thread starts, the
    press is one undo step, and the jobs submit one by one. Returns ``(jobs, problems)``: the started
    jobs and a sentence for each object that could not be sent."""
    turns = SubmitTurns()
    started, problems = [], []
    try:
        for obj in objects:
            try:
                started.append(jobs.prepare_job(obj, settings, connection, turns=turns, **options))
            except ValueError as error:
                problems.append(str(error))
        if started:
            what = f"'{started[0].object_name}'" if len(started) == 1 else f"{len(started)} objects"
            scene_state.push_undo(f"NFSD: send {what}")
    finally:
        for job in started:  # a prepared job always starts: it is registered as submitting
            job.start()
    return started, problems


def selection_jobs(context) -> list:
    """The latest job of each selected object (and of the active one), active object's first."""
    found = [jobs.job_for(obj) for obj in selected(context) if not jobs.is_copy(obj)]
    return [job for job in found if job is not None]


def _counts(others: list) -> list[tuple[int, str]]:
    running = sum(job.state in ("loading", "running", "cancelling") for job in others)
    queued = sum(job.state in ("starting", "submitting", "queued") for job in others)
    not_sent = sum(job.not_sent for job in others)
    failed = sum(job.state in ("failed", "interrupted") and not job.not_sent for job in others)
    return [(n, word) for n, word in ((running, "running"), (queued, "queued"),
                                      (not_sent, "not sent (the backend's queue was full)"), (failed, "failed"))
            if n]


def short_state(job) -> str:
    """A few words for a job in the selection's list: ``"step 2/4"``, ``"queued (2)"``, ``"not sent"``."""
    if job.state == "running" and job.step:
        return f"step {job.step}/{job.total}"
    if job.state == "queued":
        return f"queued ({job.queue_position})" if job.queue_position else "queued"
    if job.state in ("submitting", "starting"):
        return job.phase.lower()
    if job.not_sent:
        return "not sent: the backend's queue was full"
    return {"loading": "loading the model"}.get(job.state, job.state)


def others_lines(context) -> list[str]:
    """What the panel says under the active object's job about the other selected objects' jobs:
    ``"2 more running, 1 queued"``, then one line each (the first few), e.g. ``"Crate: step 2/4"``;
    then the jobs of objects outside the selection, by name. [] when there are none."""
    active = jobs.job_for(getattr(context, "active_object", None))
    mine = selection_jobs(context)
    others = [job for job in mine if job is not active and (job.active or job.state in ("failed", "interrupted"))]
    lines = []
    counts = _counts(others)
    if counts:
        first, rest = counts[0], counts[1:]
        lines.append(", ".join([f"{first[0]} more {first[1]}"] + [f"{n} {word}" for n, word in rest]))
        lines += [f"{job.object_name}: {short_state(job)}" for job in others[:LISTED]]
        if len(others) > LISTED:
            lines.append(f"... and {len(others) - LISTED} more")
    elsewhere = [job for job in jobs.all_jobs() if job.active and job is not active and job not in mine]
    if elsewhere:
        lines.append(f"{len(elsewhere)} more job(s) running: " + ", ".join(job.object_name for job in elsewhere))
    return lines


def cancel_all_count(context) -> int:
    """How many of the selection's jobs Cancel All would cancel."""
    return sum(job.active and job.state != "cancelling" for job in selection_jobs(context))


def cancel_all_shown(context) -> bool:
    """True when a selected object other than the active one has a job Cancel All would cancel (the
    active object's own has Cancel)."""
    active = jobs.job_for(getattr(context, "active_object", None))
    return any(job.active and job.state != "cancelling" and job is not active for job in selection_jobs(context))


def cancel_all(context) -> int:
    """Cancel the running jobs of every selected object (the active one too); returns how many."""
    count = 0
    for obj in selected(context):
        job = jobs.job_for(obj)
        if job is not None and job.active and job.state != "cancelling" and jobs.cancel(obj):
            count += 1
    return count
