"""The end of a batch: a table of every row (state, seconds, folder or error) and ``OUT/summary.json``."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..distill.image_files import atomic_write_bytes
from .plan import DONE, SKIPPED, Row

SUMMARY = "summary.json"


def table(rows: list[Row], out: Path) -> str:
    """One line per row: ``row  state  seconds  output folder or error``, aligned."""
    lines = [("row", "state", "seconds", "output folder or error")]
    for r in rows:
        shown = str(out / r.folder) if r.state in (DONE, SKIPPED) else (r.error or "")
        lines.append((r.where, r.state, f"{r.seconds:.1f}" if r.seconds else "-", shown))
    widths = [max(len(line[i]) for line in lines) for i in range(3)]
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d}" for a, b, c, d in lines)


def counts(rows: list[Row]) -> dict[str, int]:
    found: dict[str, int] = {}
    for r in rows:
        found[r.state] = found.get(r.state, 0) + 1
    return found


def all_good(rows: list[Row]) -> bool:
    """Exit status 0 only when every row is done or was done already."""
    return all(r.state in (DONE, SKIPPED) for r in rows)


def write_summary(rows: list[Row], out: Path, manifest: Path, server: str | None) -> Path:
    """``OUT/summary.json``: the manifest, where the rows ran, the counts and every row (atomically)."""
    data = {
        "manifest": str(manifest), "server": server, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "ok": all_good(rows), "counts": counts(rows),
        "rows": [{"row": r.number, "where": r.where, "folder": r.folder, "out": str(out / r.folder),
                  "mesh": str(r.mesh_path) if r.mesh_path else None, "state": r.state,
                  "seconds": round(r.seconds, 3), "error": r.error, "settings": r.settings} for r in rows],
    }
    path = out / SUMMARY
    atomic_write_bytes(path, json.dumps(data, indent=2, default=str).encode())
    return path
