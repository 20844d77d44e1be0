"""The rows of a batch run on an ``nfsd serve`` over its HTTP API (docs/API.md): submitted, polled, downloaded.

At most ``jobs`` rows are on the server at once (queued or running; its queue may run them in parallel);
the next row is submitted as one finishes. A full queue (429) or a busy server (503) is waited out
(``Retry-After``, at most ``MAX_WAIT`` s between tries). A server that stops answering for ``patience``
seconds is given up: the rows it held fail and the rows not yet sent are "not run", each saying so; rows
finished before stay done. Ctrl-C cancels the submitted jobs on the server and stops.
"""

from __future__ import annotations

import io
import json
import time
from collections import deque
from pathlib import Path

import httpx

from ..errors import NfsdError
from .plan import CANCELLED, DONE, FAILED, NOT_RUN, TODO, Row, clear_marker, write_marker
from .remote_files import write_result_files

MAX_WAIT = 2.0          # seconds between two tries of a full queue at most (a job may finish sooner)
ENDED = ("failed", "cancelled", "interrupted")


class ServerGone(NfsdError):
    """The server stopped answering (connection refused, reset, timed out) for longer than the patience."""


class Server:
    """An ``nfsd serve`` at ``url`` (``token``: its ``--token``). Every call raises ``ServerGone`` once the
    server has not answered for ``patience`` seconds; a single failed call before that returns None."""

    def __init__(self, url: str, token: str | None = None, patience: float = 30.0, timeout: float = 60.0):
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self.patience = patience
        self._failing_since: float | None = None

    def close(self) -> None:
        self.client.close()

    def call(self, method: str, path: str, **kw) -> httpx.Response | None:
        try:
            response = self.client.request(method, path, **kw)
        except httpx.TransportError as exc:
            response, why = None, f"{type(exc).__name__}: {exc}"
        else:
            # 503 is a busy server (its connection limit): waited out like 429; other 5xx count as not answering
            why = f"HTTP {response.status_code}: {detail(response)}" if response.status_code in (500, 502, 504) else None
        if why is None:
            self._failing_since = None
            return response
        now = time.monotonic()
        self._failing_since = self._failing_since or now
        if now - self._failing_since >= self.patience:
            raise ServerGone(f"the server at {self.url} stopped answering ({why})")
        return None

    def check(self) -> dict:
        """``GET /health`` with the token: raises ``NfsdError`` saying what to fix when it cannot be used."""
        try:
            response = self.client.get("/health")
        except httpx.TransportError as exc:
            raise NfsdError(f"cannot reach the server at {self.url} ({type(exc).__name__}: {exc}); start it with "
                            "`nfsd serve` or fix --server") from None
        if response.status_code != 200:
            raise NfsdError(f"the server at {self.url} answered /health with {response.status_code}; is it an nfsd "
                            "server?")
        health = response.json()
        if health.get("auth_required") and "device" not in health:
            raise NfsdError(f"the server at {self.url} needs a token: pass --token (its `nfsd serve --token`)")
        return health

    def resolve(self, request: dict) -> dict:
        """The server's resolution of a row's settings (``POST /settings/resolve``); ``NfsdError`` when refused."""
        response = self.call("POST", "/settings/resolve", json=request)
        if response is None:
            raise NfsdError(f"the server at {self.url} did not answer POST /settings/resolve; try again")
        if response.status_code != 200:
            raise NfsdError(detail(response))
        return response.json()["settings"]


def detail(response: httpx.Response) -> str:
    """The one line an error answer carries (docs/API.md: ``{"detail": ...}``)."""
    try:
        text = response.json().get("detail")
    except ValueError:
        text = None
    return str(text or f"HTTP {response.status_code}: {response.text[:200]}")


def run_remote(rows: list[Row], out: Path, bar, server: Server, jobs: int = 4, poll: float = 0.5) -> bool:
    """Run the "todo" rows on ``server`` (``bar``: a tqdm over their steps). Returns True when Ctrl-C stopped it."""
    pending = deque(r for r in rows if r.state == TODO)
    active: dict[str, _Active] = {}
    retry_at = 0.0
    try:
        while pending or active:
            while pending and len(active) < jobs and time.monotonic() >= retry_at:
                wait = _submit(pending, active, server, out)
                if wait:
                    retry_at = time.monotonic() + wait
                    bar.set_description(f"the server is busy; next try in {wait:.0f} s")
                    break
            for job_id in list(active):
                _poll(active, job_id, server, out, bar)
            if active:
                bar.set_description(f"{len(active)} on the server, {len(pending)} to send")
            time.sleep(poll)
        bar.set_description("batch")
    except ServerGone as exc:
        for job in active.values():
            _give_up(job, bar, FAILED, f"{exc} while it ran this row")
        for row in pending:
            row.fail(NOT_RUN, f"not run: {exc}")
        return False
    except KeyboardInterrupt:
        for job_id, job in active.items():
            try:
                server.client.post(f"/jobs/{job_id}/cancel", timeout=5)
                note = f"cancelled (Ctrl-C): job {job_id} was cancelled on the server"
            except httpx.HTTPError:
                note = f"cancelled (Ctrl-C): could not reach the server to cancel job {job_id}"
            _give_up(job, bar, CANCELLED, note)
        for row in pending:
            row.fail(NOT_RUN, "not run: the batch was interrupted (Ctrl-C)")
        return True
    return False


class _Active:
    """A submitted row: its job, the mesh that was sent (for the result's files), the steps counted."""

    def __init__(self, row: Row, mesh, job_id: str):
        self.row, self.mesh, self.job_id = row, mesh, job_id
        self.start, self.counted = time.monotonic(), 0


def _submit(pending: deque, active: dict, server: Server, out: Path) -> float:
    """Submit the next row; returns seconds to wait before trying again (0: go on)."""
    from ..geometry.mesh_files import load_mesh
    from ..geometry.wire import write_wire_npz

    row = pending[0]
    try:
        clear_marker(out / row.folder)
        mesh = load_mesh(row.mesh_path)
        wire = io.BytesIO()
        write_wire_npz(mesh, wire)
    except (NfsdError, OSError) as exc:
        pending.popleft()
        row.fail(FAILED, str(exc))
        return 0.0
    files = {"mesh": ("mesh.npz", wire.getvalue(), "application/octet-stream")}
    response = server.call("POST", "/jobs", files=files, data={"settings": json.dumps(row.request)})
    if response is None:
        return 1.0
    if response.status_code in (429, 503) or response.status_code >= 500:
        try:
            wait = float(response.headers.get("Retry-After", 1.0))
        except ValueError:
            wait = 1.0
        return min(max(wait, 0.5), MAX_WAIT)
    pending.popleft()
    if response.status_code != 202:
        row.fail(FAILED, f"the server refused it: {detail(response)}")
        return 0.0
    job_id = response.json()["id"]
    active[job_id] = _Active(row, mesh, job_id)
    return 0.0


def _poll(active: dict, job_id: str, server: Server, out: Path, bar) -> None:
    job = active[job_id]
    response = server.call("GET", f"/jobs/{job_id}")
    if response is None:
        return
    if response.status_code == 404:
        active.pop(job_id)
        _give_up(job, bar, FAILED, f"the server no longer knows job {job_id} (deleted or pruned)")
        return
    if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
        active.pop(job_id)
        _give_up(job, bar, FAILED, f"the server refused to say how job {job_id} goes: {detail(response)}")
        return
    if response.status_code != 200:
        return  # a passing error (busy, a timeout): ask again next time
    status = response.json()
    step = int(status.get("step") or 0)
    if step > job.counted:
        bar.update(step - job.counted)
        job.counted = step
    if status["state"] in ENDED:
        active.pop(job_id)
        _give_up(job, bar, FAILED, f"{status['state']} on the server: {status.get('error') or 'no reason given'}")
    elif status["state"] == "done":
        result = server.call("GET", f"/jobs/{job_id}/result")
        if result is None or result.status_code != 200:
            return  # try again next poll (a 404 of a pruned job comes back through the status)
        active.pop(job_id)
        _finish(job, result.content, server, out, bar)


def _finish(job: _Active, data: bytes, server: Server, out: Path, bar) -> None:
    row = job.row
    row.seconds = time.monotonic() - job.start
    try:
        files = write_result_files(data, job.mesh, out / row.folder, {"server": server.url, "job_id": job.job_id})
        row.state = DONE
        write_marker(row, out, files)
    except (NfsdError, OSError, ValueError, KeyError) as exc:
        row.fail(FAILED, f"job {job.job_id} finished, but its result could not be written: {exc}")
    if row.steps > job.counted:
        bar.update(row.steps - job.counted)


def _give_up(job: _Active, bar, state: str, error: str) -> None:
    job.row.seconds = time.monotonic() - job.start
    job.row.fail(state, error)
    if job.row.steps > job.counted:  # its steps will not come: the bar's total shrinks
        bar.total -= job.row.steps - job.counted
        bar.refresh()
