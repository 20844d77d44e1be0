"""Checks of a submission: settings, mesh and init texture, the way the job will read them.

Everything here is CPU work on untrusted bytes: call it in a worker thread, never on the event loop.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
from fastapi import HTTPException
from pydantic import ValidationError

from ..errors import NfsdError
from .config import ServerConfig
from .schemas import JobSettings


def format_validation(exc: ValidationError, prefix: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = (f"unknown setting; allowed: {', '.join(JobSettings.model_fields)}")
        elif err.get("type") not in ("missing",) and "input" in err:
            msg += f" (got {err['input']!r})"
        parts.append(f"{prefix}{loc}: {msg}" if loc else f"{prefix.rstrip('.')}: {msg}")
    return "; ".join(parts)


def validate_submission(mesh_npz: bytes, settings_text: str, init_png: bytes | None,
                        config: ServerConfig) -> dict:
    """Check a submission the way the job will read it; returns the settings to store.

    Raises ``HTTPException(422)`` naming what is wrong (settings, prompt length, model, mesh, texture).
    """
    try:
        raw = json.loads(settings_text)
    except ValueError as exc:
        raise HTTPException(422, f"settings is not valid JSON ({exc}); send a JSON object such as "
                                 '{"prompt": "rusty metal", "steps": 400}') from None
    if not isinstance(raw, dict):
        raise HTTPException(422, f"settings must be a JSON object, got {type(raw).__name__}")
    try:
        settings = JobSettings.model_validate(raw)
    except ValidationError as exc:
        raise HTTPException(422, format_validation(exc, "settings.")) from None
    try:
        catalog = config.catalog()
        model = catalog.check_model(settings.model)  # only offered models: `model` is no file-system probe
        settings.loras = catalog.check_loras(settings.loras, model)
        # Prompts of any length are encoded in windows: no length check here.
    except NfsdError as exc:
        raise HTTPException(422, str(exc)) from None
    stored = settings.model_dump()
    stored["model"] = model
    try:
        from ..engine import TextureConfig
        from ..jobs import job_config_dict

        TextureConfig.from_dict(job_config_dict(stored, config.model, config.device)).validate()
    except ImportError:  # the engine is optional for validation; the job checks again
        pass
    except NfsdError as exc:
        raise HTTPException(422, str(exc)) from None

    validate_mesh(mesh_npz, config)
    if init_png is not None:
        validate_png(init_png)
    return stored


def validate_mesh(data: bytes, config: ServerConfig) -> None:
    from ..errors import MeshError
    from ..wire import read_wire_npz

    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise HTTPException(422, "mesh is not an .npz file (numpy.savez output): the upload is not a zip archive")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            tri = z["triangles"] if "triangles" in z.files else None
            if tri is not None and tri.ndim == 2 and tri.shape[0] > config.max_faces:
                raise HTTPException(422, f"mesh has {tri.shape[0]} triangles; this server accepts at most "
                                         f"{config.max_faces} (decimate the mesh, e.g. with a Decimate modifier)")
    except HTTPException:
        raise
    except Exception as exc:  # np.load raises several kinds for corrupt archives or object arrays
        raise HTTPException(422, f"mesh .npz cannot be read ({type(exc).__name__}: {exc})") from None
    try:
        read_wire_npz(data)
    except MeshError as exc:
        raise HTTPException(422, f"mesh: {exc}") from None


def validate_png(data: bytes) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "PNG":
                raise HTTPException(422, f"init_texture must be a PNG image, got {img.format}")
            img.load()
            w, h = img.size
    except HTTPException:
        raise
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise HTTPException(422, f"init_texture is not a readable PNG image ({exc})") from None
    if not (1 <= w <= 8192 and 1 <= h <= 8192):
        raise HTTPException(422, f"init_texture is {w}x{h}; at most 8192x8192 is accepted")
