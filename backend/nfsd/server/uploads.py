"""Reading the multipart body of ``POST /jobs`` into its three fields (mesh, settings, init texture)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile

from .config import ServerConfig

FIELDS = ("mesh", "settings", "init_texture")


@dataclass
class Submission:
    """The raw fields of a submission, not yet checked (see :mod:`.validation`)."""

    mesh_npz: bytes
    settings_text: str
    init_png: bytes | None


def check_headers(request: Request, config: ServerConfig) -> None:
    """Content type and length, refused before a byte of the body is read."""
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise HTTPException(415, f"POST /jobs takes multipart/form-data (fields mesh, settings, optional "
                                 f"init_texture), got content type {ctype or 'none'!r}")
    length = request.headers.get("content-length")
    if length is None:
        raise HTTPException(411, "POST /jobs needs a Content-Length header (chunked uploads are not accepted)")
    try:
        n = int(length)
    except ValueError:
        raise HTTPException(400, f"bad Content-Length {length!r}") from None
    if n > config.max_upload_bytes:
        raise HTTPException(413, f"upload of {n} bytes is over this server's limit of {config.max_upload_bytes} "
                                 "bytes; decimate the mesh or send a smaller init_texture")


async def read_submission(request: Request, config: ServerConfig) -> Submission:
    """The fields of a ``POST /jobs`` body; 4xx for a wrong content type, size or set of fields."""
    check_headers(request, config)
    try:
        form = await request.form(max_files=4, max_fields=8)
    except Exception as exc:
        raise HTTPException(400, f"malformed multipart body ({exc})") from None
    try:
        unknown = sorted(set(form.keys()) - set(FIELDS))
        if unknown:
            raise HTTPException(422, f"unknown form field(s) {unknown}: send mesh, settings and optionally "
                                     "init_texture")
        mesh = form.get("mesh")
        if not isinstance(mesh, UploadFile):
            raise HTTPException(422, "form field 'mesh' is missing or not a file: attach the wire-format .npz")
        settings_field = form.get("settings")
        if settings_field is None:
            raise HTTPException(422, "form field 'settings' is missing: send a JSON object with at least 'prompt'")
        if isinstance(settings_field, UploadFile):
            settings_text = (await settings_field.read()).decode("utf-8", "replace")
        else:
            settings_text = settings_field
        init = form.get("init_texture")
        if init is not None and not isinstance(init, UploadFile):
            raise HTTPException(422, "form field 'init_texture' must be a PNG file")
        return Submission(mesh_npz=await mesh.read(), settings_text=settings_text,
                          init_png=await init.read() if init is not None else None)
    finally:
        await form.close()
