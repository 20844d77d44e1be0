# SPDX-License-Identifier: GPL-3.0-or-later
"""HTTP client for the NFSD backend (docs/API.md), standard library only, no bpy.

Every failure reaches the caller as one :class:`BackendError` whose ``str()`` is a sentence an
artist can act on; callers never see urllib's exceptions or a traceback.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid

DEFAULT_PORT = 7870
START_HINT = (
    "Start it with `nfsd serve` in a terminal (or tick 'Start local backend' in the add-on's "
    "preferences) and check the backend URL there"
)


class BackendError(Exception):
    """A backend call that failed; ``str(error)`` says what happened and what to do.

    ``kind`` is one of ``"unreachable"``, ``"offline"`` (Blender's online access is off),
    ``"auth"``, ``"http"`` (the backend answered with an error), ``"protocol"`` (an answer
    that is not what the API promises) or ``"url"`` (a URL that cannot be used).
    ``status`` is the HTTP status code where there was one.
    """

    def __init__(self, message: str, kind: str = "http", status: int | None = None):
        super().__init__(message)
        self.kind = kind
        self.status = status


def normalize_url(text: str) -> str:
    """Turn what an artist types into a base URL without a trailing slash.

    ``"localhost:7870"``, ``"http://localhost:7870/"`` and ``"http://localhost:7870///"`` all give
    ``"http://localhost:7870"``; a bare host gets port 7870. A path prefix (a reverse proxy) is
    kept. Raises BackendError (kind ``"url"``) for an empty text or a scheme other than http(s).
    """
    text = (text or "").strip()
    if not text:
        raise BackendError("The backend URL is empty: set it in the add-on's preferences "
                           f"(for example 127.0.0.1:{DEFAULT_PORT}).", kind="url")
    if "://" not in text:
        text = "http://" + text
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise BackendError(f"The backend URL {text!r} must start with http:// or https://.", kind="url")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as error:  # a port that is not a number
        raise BackendError(f"The backend URL {text!r} has a bad port ({error}).", kind="url") from None
    if not host:
        raise BackendError(f"The backend URL {text!r} has no host name.", kind="url")
    if port is None and parts.scheme == "http":
        port = DEFAULT_PORT
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def is_loopback(url: str) -> bool:
    """True when ``url`` (normalized or not) points at this computer (localhost, 127/8, ::1)."""
    host = urllib.parse.urlsplit(normalize_url(url)).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def encode_multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """Encode a multipart/form-data body.

    ``fields`` maps names to text values; ``files`` maps names to ``(filename, data, content_type)``.
    Returns ``(body, content_type_header)``.
    """
    boundary = "nfsd-" + uuid.uuid4().hex
    chunks: list[bytes] = []
    for name, value in fields.items():
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n'
                      f"Content-Type: text/plain; charset=utf-8\r\n\r\n".encode())
        chunks.append(value.encode("utf-8") + b"\r\n")
    for name, (filename, data, content_type) in files.items():
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                      f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'.encode())
        chunks.append(data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


class Client:
    """One backend at ``url``.

    ``online_access`` is ``bpy.app.online_access``: when it is False only a backend on this
    computer may be used, as Blender's extension guidelines ask; any call to another host raises
    BackendError (kind ``"offline"``) without touching the network. ``timeout`` is per request in
    seconds; uploads and downloads of large meshes get ``transfer_timeout``.
    """

    def __init__(self, url: str, token: str = "", *, online_access: bool = True,
                 timeout: float = 5.0, transfer_timeout: float = 120.0):
        self.url = normalize_url(url)
        self.token = (token or "").strip()
        self.online_access = online_access
        self.timeout = timeout
        self.transfer_timeout = transfer_timeout

    # -- the API, one method per endpoint ---------------------------------------------------------
    def health(self) -> dict:
        """``GET /health``: status, version, device, gpu_name, gpu_free_bytes, model_loaded, ..."""
        return self._json("GET", "/health")

    def submit(self, mesh_npz: bytes, settings: dict, init_texture_png: bytes | None = None,
               init_maps: dict | None = None) -> str:
        """``POST /jobs``: queue a job; returns its id. ``init_maps``: a pbr run's map name (roughness,
        metallic, normal) -> PNG, sent as ``init_<name>`` beside ``init_texture``."""
        files = {"mesh": ("mesh.npz", mesh_npz, "application/octet-stream")}
        if init_texture_png is not None:
            files["init_texture"] = ("init_texture.png", init_texture_png, "image/png")
        for name, png in (init_maps or {}).items():
            files[f"init_{name}"] = (f"init_{name}.png", png, "image/png")
        body, content_type = encode_multipart({"settings": json.dumps(settings)}, files)
        answer = self._json("POST", "/jobs", body=body, content_type=content_type,
                            timeout=self.transfer_timeout)
        job_id = answer.get("id") if isinstance(answer, dict) else None
        if not isinstance(job_id, str) or not job_id:
            raise BackendError(f"The backend at {self.url} accepted the job but sent no job id; "
                               "is it an NFSD backend of the same version as the add-on?", kind="protocol")
        return job_id

    def list_jobs(self) -> dict:
        """``GET /jobs``: all jobs; needs the token (Test Connection checks it with this)."""
        return self._json("GET", "/jobs")

    def models(self) -> list | dict | None:
        """``GET /models``: the models the backend offers; None from a backend without the route."""
        try:
            return self._json("GET", "/models")
        except BackendError as error:
            if error.status in (404, 405):
                return None
            raise

    def resolve_settings(self, settings: dict) -> dict | None:
        """``POST /settings/resolve``: what a job with ``settings`` would run (``settings`` resolved for
        its model, ``render_size``) and ``estimate_seconds`` (None before such a job ran there); None
        from a backend without the route."""
        try:
            return self._json("POST", "/settings/resolve", body=json.dumps(settings).encode("utf-8"),
                              content_type="application/json")
        except BackendError as error:
            if error.status in (404, 405):
                return None
            raise

    def resubmit(self, job_id: str) -> str:
        """``POST /jobs/{id}/resubmit``: run an interrupted, failed or cancelled job again with the
        same inputs; returns the new job's id."""
        answer = self._json("POST", f"/jobs/{job_id}/resubmit")
        new_id = answer.get("id") if isinstance(answer, dict) else None
        if not isinstance(new_id, str) or not new_id:
            raise BackendError(f"The backend at {self.url} did not start the job again; texture it anew.",
                               kind="protocol")
        return new_id

    def status(self, job_id: str) -> dict:
        """``GET /jobs/{id}``: the JobStatus dictionary."""
        return self._json("GET", f"/jobs/{job_id}")

    def preview_png(self, job_id: str) -> bytes | None:
        """``GET /jobs/{id}/preview.png``; None before the first snapshot exists (404)."""
        try:
            return self._request("GET", f"/jobs/{job_id}/preview.png", timeout=self.transfer_timeout)
        except BackendError as error:
            if error.status == 404:
                return None
            raise

    def uvs(self, job_id: str) -> bytes | None:
        """``GET /jobs/{id}/uvs``: the .npz of the UVs the texture is laid out on; None while they
        are not known yet, or from a backend without this endpoint (404)."""
        try:
            return self._request("GET", f"/jobs/{job_id}/uvs", timeout=self.transfer_timeout)
        except BackendError as error:
            if error.status == 404:
                return None
            raise

    def result(self, job_id: str) -> bytes:
        """``GET /jobs/{id}/result``: the result .npz bytes."""
        return self._request("GET", f"/jobs/{job_id}/result", timeout=self.transfer_timeout)

    def cancel(self, job_id: str) -> dict:
        """``POST /jobs/{id}/cancel``: the JobStatus after cancelling."""
        return self._json("POST", f"/jobs/{job_id}/cancel")

    def delete(self, job_id: str) -> None:
        """``DELETE /jobs/{id}``: forget a finished job and its files on the backend."""
        self._request("DELETE", f"/jobs/{job_id}")

    def unload_model(self) -> dict:
        """``POST /model/unload``: free the backend's cached model (GPU memory)."""
        return self._json("POST", "/model/unload")

    # -- plumbing ---------------------------------------------------------------------------------
    def _json(self, method: str, path: str, **kwargs) -> dict:
        data = self._request(method, path, **kwargs)
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise BackendError(f"The server at {self.url} answered with something that is not JSON; is that "
                               "URL an NFSD backend?", kind="protocol") from None

    def _request(self, method: str, path: str, *, body: bytes | None = None,
                 content_type: str | None = None, timeout: float | None = None) -> bytes:
        if not self.online_access and not is_loopback(self.url):
            raise BackendError(
                f"Blender's online access is off, so the add-on may only use a backend on this computer, "
                f"not {self.url}. Turn on 'Allow Online Access' (Preferences > System > Network) or use a "
                "backend on 127.0.0.1.", kind="offline")
        request = urllib.request.Request(self.url + path, data=body, method=method)
        if content_type:
            request.add_header("Content-Type", content_type)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            # A proxy configured for the internet must not swallow calls to a local backend.
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({})) if is_loopback(self.url) \
                else urllib.request.build_opener()
            with opener.open(request, timeout=timeout or self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            raise self._http_error(error, method, path) from None
        except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise BackendError(f"Cannot reach the NFSD backend at {self.url} ({reason}). {START_HINT}.",
                               kind="unreachable") from None

    def _http_error(self, error: urllib.error.HTTPError, method: str, path: str) -> BackendError:
        detail = ""
        try:
            detail = json.loads(error.read().decode("utf-8")).get("detail", "")
        except Exception:  # the body is optional; the status code alone still says something
            pass
        if isinstance(detail, list):  # FastAPI's validation errors: a list of {loc, msg}
            detail = "; ".join(f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg', '')}"
                               if isinstance(d, dict) else str(d) for d in detail)
        if error.code == 401:
            return BackendError(f"The backend at {self.url} refused the token ({detail or 'unauthorized'}). "
                                "Set the token it was started with (--token) in the add-on's preferences.",
                                kind="auth", status=401)
        # The artist sees the backend's own sentence, never the route that was called.
        return BackendError(detail or f"The backend at {self.url} refused the request (HTTP {error.code}).",
                            kind="http", status=error.code)
