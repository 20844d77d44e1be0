"""Checks of a submission: its settings (in a worker thread) and its files (in a child process),
the way the job will read them. Every failure is an ``HTTPException(422)`` saying what is wrong;
no message quotes more than a short prefix of the input.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
from dataclasses import dataclass
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from fastapi import HTTPException
from pydantic import ValidationError

from ..jobs import inputcheck
from ..errors import NfsdError
from ..limits import LIMITS, quote
from ..processes.lifeline import die_with_parent
from .config import ServerConfig
from .schemas import JobSettings
from ..settings import API, check_text, request_of, resolve

log = logging.getLogger("nfsd.server")


def format_validation(exc: ValidationError, prefix: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = (f"unknown setting; allowed: {', '.join(JobSettings.model_fields)}")
        elif err.get("type") not in ("missing",) and "input" in err:
            msg += f" (got {quote(err['input'])})"
        parts.append(f"{prefix}{quote(loc)[1:-1]}: {msg}" if loc else f"{prefix.rstrip('.')}: {msg}")
    return "; ".join(parts[:5])


def json_depth(text: str) -> int:
    """Deepest nesting of arrays and objects in JSON ``text`` (strings skipped), without parsing it:
    ``json.loads`` of ``"[" * 200000`` would die of recursion before it could say anything useful."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_settings(settings_text: str, config: ServerConfig) -> dict:
    """The settings to store for a job: the request (:func:`read_request`) resolved for its model
    (:func:`resolve_request`): every key, what the job runs. Runs in a worker thread."""
    return resolve_request(read_request(settings_text), config).settings


def read_request(settings_text: str) -> dict:
    """A ``settings`` JSON text -> the keys it sets (partial): within the size and depth limits, known
    keys of the right types and ranges (``JobSettings``). ``HTTPException`` 413 / 422 saying what is wrong."""
    if len(settings_text) > LIMITS["max_settings_bytes"]:
        raise HTTPException(413, f"settings is {len(settings_text):,} characters; at most "
                                 f"{LIMITS['max_settings_bytes']:,} are accepted")
    depth = json_depth(settings_text)
    if depth > LIMITS["max_json_depth"]:
        raise HTTPException(422, f"settings nests {depth} levels deep; send a flat JSON object such as "
                                 '{"prompt": "rusty metal", "steps": 400}')
    try:
        raw = json.loads(settings_text)
    except (ValueError, RecursionError) as exc:
        raise HTTPException(422, f"settings is not valid JSON ({str(exc)[:80]}); send a JSON object such as "
                                 '{"prompt": "rusty metal", "steps": 400}') from None
    if not isinstance(raw, dict):
        raise HTTPException(422, f"settings must be a JSON object, got {type(raw).__name__}")
    try:
        for name, value in raw.items():
            if isinstance(value, str):  # before anything uses the text (file names, tokenizers, JSON records)
                check_text(f"settings.{name}", value)
    except NfsdError as exc:
        raise HTTPException(422, str(exc)) from None
    try:
        return JobSettings.model_validate(raw).model_dump(exclude_none=True)
    except ValidationError as exc:
        raise HTTPException(422, format_validation(exc, "settings.")) from None


@dataclass
class Resolved:
    """A request resolved for this server: the job's full settings and what the catalog knows of its model."""

    settings: dict
    family: str | None
    render_size: int | None  # what the job renders at, when known before loading the model


def resolve_request(request: dict, config: ServerConfig) -> Resolved:
    """Partial API settings -> the full settings a job runs (``nfsd.settings.resolve``, as the CLI), with
    the model and LoRAs checked against what this server offers. ``HTTPException(422)`` naming the problem."""
    try:
        catalog = config.catalog()
        model = catalog.check_model(request.get("model"))  # only offered models: `model` is no file-system probe
        if "loras" in request:
            request["loras"] = catalog.check_loras(request["loras"], model)
        catalog.check_encoder(model, request.get("encoder"))
        entry = catalog.entry_of(model)
        family = entry.family if entry else None
        resolved = resolve({**request, "model": model}, default_model=config.model, family=family)
    except NfsdError as exc:
        raise HTTPException(422, str(exc)[:500]) from None
    except OSError as exc:  # a name the file system refuses (too long, bad characters)
        raise HTTPException(422, f"model {quote(request.get('model') or config.model)} cannot be used "
                                 f"({exc.strerror or type(exc).__name__}); name a model this server offers") from None
    render_size = resolved.render_size or (entry.render_size if entry else None)
    return Resolved(request_of(resolved, API), family, render_size)


def check_init_maps(settings: dict, has_init: bool, fields: list[str]) -> None:
    """422 when init map form fields (``init_roughness``, ``init_metallic``, ``init_normal``) cannot go with
    the job's resolved ``settings``: they continue a pbr texture, so they need init_texture and material pbr
    (``init_normal`` also normal_map)."""
    for name in sorted(fields):
        if not has_init:
            raise HTTPException(422, f"{name} continues a pbr texture: send that texture's base colour as "
                                     f"init_texture too, or leave {name} out")
        if settings.get("material") != "pbr":
            raise HTTPException(422, f"{name} is a map of the pbr material, but settings.material is "
                                     f"{quote(settings.get('material'))}: send material 'pbr' or leave {name} out")
        if name == "init_normal" and not settings.get("normal_map"):
            raise HTTPException(422, "init_normal is a normal map: send settings.normal_map true (with material "
                                     "'pbr') or leave init_normal out")


def model_defaults(entry: dict) -> dict | None:
    """What a job of a ``GET /models`` entry runs when its settings leave the sizes out (the panel's
    presets are relative to these); None for LoRAs and models that cannot be used."""
    if entry.get("kind") == "lora" or not entry.get("supported", True):
        return None
    config = resolve({"prompt": "-", "model": entry["name"]}, family=entry.get("family"))
    return {"steps": config.steps, "texture_size": config.texture_size,
            "render_size": config.render_size or entry.get("render_size"), "batch": config.batch}


class FileChecker:
    """Checks uploaded files (:func:`nfsd.jobs.inputcheck.check_files`) in one child process, so that
    decompressing a mesh and ``np.unique`` over its vertices never hold the server's GIL, and a file
    that crashes or exhausts the checker costs a 422 and a new checker, not the server."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=die_with_parent)  # no checker outlives the server
        self._pool.submit(inputcheck.ready)  # the child starts while the server does

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    async def check(self, mesh_path: Path, init_path: Path | None, map_paths: dict | None = None) -> None:
        """422 naming the problem of the mesh, init texture or init maps (``map_paths``: form field -> file);
        returns when all are fine."""
        if self._pool is None:
            self.start()
        c = self.config
        args = (str(mesh_path), str(init_path) if init_path else None, c.max_faces, c.max_vertices,
                int(LIMITS["max_init_texture_side"]), {k: str(v) for k, v in (map_paths or {}).items()})
        try:
            problem = await asyncio.wrap_future(self._pool.submit(inputcheck.check_files, *args))
        except BrokenProcessPool:
            log.warning("the file checker process died on an upload; starting a new one")
            self.stop()
            self.start()
            raise HTTPException(422, "the mesh or init texture could not be checked: reading it crashed the "
                                     "checker (is it corrupt or enormous?); export it again") from None
        if problem:
            raise HTTPException(422, problem)
