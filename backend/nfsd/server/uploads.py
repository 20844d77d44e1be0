"""Request bodies: ``POST /jobs`` streamed into a spool folder inside the data dir, and a stall
timeout for every body.

The multipart body is parsed as it arrives (python-multipart), the mesh, init texture and init maps are written
to ``DATA_DIR/uploads/<random>/`` (never the system temp folder, which may be small or shared), the
settings field is kept in memory up to its limit. Writes run in worker threads; a full disk is a 507.
"""

from __future__ import annotations

import asyncio
import errno
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import HTTPException, Request
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from ..jobs.store import INIT_MAPS, init_map_file
from ..limits import LIMITS, quote
from .config import ServerConfig

MAP_FIELDS = {init_map_file(name).removesuffix(".png"): name for name in INIT_MAPS}  # init_roughness -> roughness
FIELDS = {"mesh": "mesh.npz", "settings": None, "init_texture": "init_texture.png",
          **{f: init_map_file(name) for f, name in MAP_FIELDS.items()}}
FLUSH_BYTES = 1 << 20  # written to disk in pieces of about this size
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def disk_full(exc: OSError, where: Path) -> HTTPException:
    return HTTPException(507, f"the server's disk is full ({exc.strerror or exc}; data dir {where}): free some "
                              "space or start the server with --data-dir on a bigger disk; nothing was queued")


@dataclass
class Submission:
    """The fields of a submission, not yet checked: the files lie in ``folder`` (delete it after)."""

    folder: Path
    settings_text: str = ""
    mesh_path: Path | None = None
    init_path: Path | None = None
    map_paths: dict = field(default_factory=dict)  # init map field (init_roughness, ...) -> its file
    sizes: dict = field(default_factory=dict)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def check_headers(request: Request, config: ServerConfig) -> bytes:
    """Content type and length, refused before a byte of the body is read; returns the boundary."""
    ctype = request.headers.get("content-type", "")
    kind, params = parse_options_header(ctype)
    if kind.lower() != b"multipart/form-data":
        raise HTTPException(415, f"POST /jobs takes multipart/form-data (fields mesh, settings, optional "
                                 f"init_texture), got content type {quote(ctype or 'none')}")
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise HTTPException(400, "malformed multipart body: the Content-Type has no usable boundary")
    length = request.headers.get("content-length")
    if length is None:
        raise HTTPException(411, "POST /jobs needs a Content-Length header (chunked uploads are not accepted)")
    try:
        n = int(length)
    except ValueError:
        raise HTTPException(400, f"bad Content-Length {quote(length)}") from None
    if n > config.max_upload_bytes:
        raise HTTPException(413, f"upload of {n} bytes is over this server's limit of {config.max_upload_bytes} "
                                 "bytes; decimate the mesh or send a smaller init_texture")
    return boundary


def write_chunks(path: Path, chunks: list[bytes]) -> None:
    """Append ``chunks`` to ``path`` (a worker thread's job: disks can be slow)."""
    with open(path, "ab") as f:
        for c in chunks:
            f.write(c)


class _Reader:
    """python-multipart callbacks collecting the parts of one body into a :class:`Submission`."""

    def __init__(self, sub: Submission):
        self.sub = sub
        self.header_name = b""
        self.header_value = b""
        self.headers: dict[bytes, bytes] = {}
        self.name: str | None = None
        self.pending: list[tuple[Path, list[bytes]]] = []  # (file, chunks) to write after this piece
        self.text: list[bytes] = []
        self.ended = False

    def callbacks(self) -> dict:
        return {"on_part_begin": self.part_begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value_cb, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished, "on_part_data": self.part_data,
                "on_part_end": self.part_end, "on_end": self.end}

    def part_begin(self):
        self.headers = {}

    def header_field(self, data, start, end):
        self.header_name += data[start:end]

    def header_value_cb(self, data, start, end):
        self.header_value += data[start:end]

    def header_end(self):
        self.headers[self.header_name.lower()] = self.header_value
        self.header_name = self.header_value = b""

    def headers_finished(self):
        _, params = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if name not in FIELDS:
            raise HTTPException(422, f"unknown form field {quote(name)}: send mesh, settings and optionally "
                                     f"init_texture (a pbr run also {', '.join(MAP_FIELDS)})")
        if name in self.sub.sizes:
            raise HTTPException(422, f"form field {name!r} is sent twice; send each field once")
        if name != "settings" and b"filename" not in params:
            raise HTTPException(422, f"form field {name!r} must be a file (the wire-format .npz for mesh, a PNG "
                                     f"for {name if name != 'mesh' else 'init_texture'})")
        self.name = name
        self.sub.sizes[name] = 0
        if FIELDS[name]:
            path = self.sub.folder / FIELDS[name]
            if name in MAP_FIELDS:
                self.sub.map_paths[name] = path
            else:
                setattr(self.sub, "mesh_path" if name == "mesh" else "init_path", path)

    def part_data(self, data, start, end):
        piece = bytes(data[start:end])
        self.sub.sizes[self.name] += len(piece)
        if self.name == "settings":
            if self.sub.sizes["settings"] > LIMITS["max_settings_bytes"]:
                raise HTTPException(413, f"the settings field is over {LIMITS['max_settings_bytes']:,} bytes; "
                                         "send a small JSON object")
            self.text.append(piece)
            return
        path = self.sub.folder / FIELDS[self.name]
        if self.pending and self.pending[-1][0] == path:
            self.pending[-1][1].append(piece)
        else:
            self.pending.append((path, [piece]))

    def part_end(self):
        if self.name == "settings":
            self.sub.settings_text = b"".join(self.text).decode("utf-8", "replace")
        elif self.name is not None:  # an empty file still exists
            self.pending.append((self.sub.folder / FIELDS[self.name], []))
        self.name = None

    def end(self):
        self.ended = True

    def pending_bytes(self) -> int:
        return sum(len(c) for _, chunks in self.pending for c in chunks)

    def flush(self) -> None:
        for path, chunks in self.pending:
            write_chunks(path, chunks)
        self.pending = []


async def read_submission(request: Request, config: ServerConfig, spool: Path) -> Submission:
    """Stream a ``POST /jobs`` body into a new folder under ``spool``; 4xx for a wrong content type,
    size or set of fields, 408 for a body that stalls, 507 for a full disk. The caller removes the
    folder (``Submission.remove``) when done with it."""
    boundary = check_headers(request, config)
    sub = Submission(folder=spool / secrets.token_hex(8))
    reader = _Reader(sub)
    parser = MultipartParser(boundary, reader.callbacks(), max_size=config.max_upload_bytes)
    received = 0
    try:
        try:
            await run_in_threadpool(sub.folder.mkdir, parents=True, exist_ok=True)
            async for chunk in request.stream():
                received += len(chunk)
                if received > config.max_upload_bytes:
                    raise HTTPException(413, f"the body is longer than its Content-Length / this server's limit of "
                                             f"{config.max_upload_bytes} bytes")
                try:
                    parser.write(chunk)
                except HTTPException:
                    raise
                except Exception as exc:  # python-multipart's MultipartParseError and friends
                    raise HTTPException(400, f"malformed multipart body ({str(exc)[:80]})") from None
                if reader.pending_bytes() >= FLUSH_BYTES:
                    await run_in_threadpool(reader.flush)
            parser.finalize()
            await run_in_threadpool(reader.flush)
        except OSError as exc:
            if exc.errno in DISK_FULL:
                raise disk_full(exc, spool) from None
            raise
        except ClientDisconnect:
            raise HTTPException(408, "the request body stopped arriving (timeout or disconnect); send it again") from None
        if not reader.ended:
            raise HTTPException(400, "malformed multipart body: it ends before its closing boundary")
        if sub.mesh_path is None:
            raise HTTPException(422, "form field 'mesh' is missing or not a file: attach the wire-format .npz")
        if "settings" not in sub.sizes:
            raise HTTPException(422, "form field 'settings' is missing: send a JSON object with at least 'prompt'")
        return sub
    except BaseException:
        await run_in_threadpool(sub.remove)
        raise


class BodyTimeout:
    """ASGI middleware: a request body that sends nothing for ``timeout`` seconds ends as if the client
    had disconnected (``POST /jobs`` answers 408 and the connection is closed), so stalled uploads
    cannot hold connections and spool files forever. Waits for a disconnect once the body is complete
    (streaming responses do that) are not limited."""

    def __init__(self, app, timeout: float):
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = {"body_done": False, "timed_out": False}

        async def timed_receive():
            if state["body_done"]:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except asyncio.TimeoutError:
                state["timed_out"] = True
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["body_done"] = True
            return message

        async def closing_send(message):
            if message["type"] == "http.response.start" and state["timed_out"]:
                message = dict(message, headers=[*message.get("headers", []), (b"connection", b"close")])
            await send(message)

        await self.app(scope, timed_receive, closing_send)
