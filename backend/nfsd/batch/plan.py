"""Every row of a batch checked before anything runs, and the rows a previous run finished.

A row is bad (``state`` "failed", ``error`` the reason) when its values could not be read, its mesh is
missing or unreadable, a setting is unknown or out of range (the one resolver, ``nfsd.settings.resolve``,
called by the ``resolver`` the runner passes: in this process, or the server's ``POST /settings/resolve``),
or its output folder is another row's. The other rows are "todo", or "skipped" when their folder holds a
finished marker (``finished.json``, written last and atomically) of the same fingerprint: the resolved
settings and the mesh file's SHA-256. A changed row (settings or mesh) has another fingerprint and runs again.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..distill.image_files import atomic_write_bytes
from ..errors import NfsdError
from .manifest import ManifestRow

MARKER = "finished.json"
# States of a row: what the summary table shows.
TODO, DONE, SKIPPED, FAILED, CANCELLED, NOT_RUN = "todo", "done", "skipped", "failed", "cancelled", "not run"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Row:
    """One row of a batch as planned and run. ``settings`` are the resolved ones (every key); ``request`` what
    the manifest gave (what a server is sent); ``folder`` the output folder's name under the batch's ``--out``."""

    number: int
    where: str
    folder: str
    mesh_path: Path | None = None
    request: dict = field(default_factory=dict)
    settings: dict | None = None
    mesh_sha256: str | None = None
    state: str = TODO
    error: str | None = None
    seconds: float = 0.0

    @property
    def steps(self) -> int:
        return int((self.settings or {}).get("steps") or 0)

    def fingerprint(self) -> str:
        """What a finished row must match to be skipped: its resolved settings and its mesh's bytes."""
        text = json.dumps({"settings": self.settings, "mesh_sha256": self.mesh_sha256}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def fail(self, state: str, error: str) -> None:
        self.state, self.error = state, error


def plan_rows(rows: list[ManifestRow], manifest_dir: Path, out: Path,
              resolver: Callable[[dict], dict], check_mesh: Callable[[Path], None]) -> list[Row]:
    """Check every row (``resolver(request) -> resolved settings`` and ``check_mesh(path)`` raise ``NfsdError``
    for a bad one) and mark the ones ``out`` holds finished. Never raises for one row's fault."""
    planned, seen = [], {}
    for m in rows:
        row = Row(m.number, m.where, folder_name(m), request=dict(m.request))
        planned.append(row)
        if m.error:
            row.fail(FAILED, m.error)
            continue
        if row.folder in seen:
            row.fail(FAILED, f"output folder {row.folder!r} is also {seen[row.folder]}'s; give the rows different names")
            continue
        seen[row.folder] = m.where
        bad_name = _bad_name(m.name)
        if bad_name:
            row.fail(FAILED, bad_name)
            continue
        row.mesh_path = (manifest_dir / m.mesh).resolve()
        try:
            row.settings = resolver(row.request)
            row.mesh_sha256 = _sha256(row.mesh_path)
            check_mesh(row.mesh_path)
        except NfsdError as exc:
            row.fail(FAILED, str(exc))
            continue
        if finished(out / row.folder) == row.fingerprint():
            row.state = SKIPPED
    return planned


def folder_name(row: ManifestRow) -> str:
    """``name`` when given, else ``<number>-<mesh stem>`` (``003-chair``), file-name safe."""
    if row.name:
        return row.name
    stem = _UNSAFE.sub("_", Path(row.mesh or "mesh").stem).strip("._") or "mesh"
    return f"{row.number:03d}-{stem[:60]}"


def _bad_name(name: str | None) -> str | None:
    if name is None:
        return None
    if name in (".", "..") or _UNSAFE.sub("", name) != name or len(name) > 100:
        return (f"name {name[:60]!r} cannot be a folder name: use at most 100 letters, digits, '.', '_' or '-' "
                "(no slashes, not '.' or '..')")
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError:
        raise NfsdError(f"{path}: file not found (mesh paths are relative to the manifest's folder)") from None
    except OSError as exc:
        raise NfsdError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    return digest.hexdigest()


def finished(folder: Path) -> str | None:
    """The fingerprint of the finished marker in ``folder`` (None: none, or unreadable)."""
    try:
        return str(json.loads((folder / MARKER).read_text())["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def clear_marker(folder: Path) -> None:
    """Before a row runs again: a half-rewritten folder must never look finished."""
    (folder / MARKER).unlink(missing_ok=True)


def write_marker(row: Row, out: Path, files: list[str]) -> None:
    """The last file a finished row writes (atomically): what it was made from, and its files."""
    marker = {"fingerprint": row.fingerprint(), "row": row.number, "mesh": str(row.mesh_path),
              "mesh_sha256": row.mesh_sha256, "settings": row.settings, "seconds": round(row.seconds, 3),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": sorted(files)}
    atomic_write_bytes(out / row.folder / MARKER, json.dumps(marker, indent=2, default=str).encode())
