"""A batch manifest (.csv or .json) read into rows of raw values, each row's own errors kept with it.

CSV: a header row ``mesh,prompt,`` then any setting names (``steps,seed,texture_size,material``...) and
an optional ``name`` (the row's output folder). Cells are text: each is converted by its setting's
declared kind (``nfsd.settings``: int, float, bool as true/false/yes/no/1/0, list as JSON or
``PATH[:WEIGHT]`` items separated by ``;``); an empty cell leaves the setting to its default.

JSON: a list of objects with the same keys, or ``{"defaults": {...}, "rows": [...]}`` whose defaults
apply to every row (a row's own keys win). Values keep their JSON types.

A row whose values cannot be read keeps the reason in ``ManifestRow.error`` (the others still run); a
manifest that cannot be read at all raises ``ConfigError``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..settings import BY_NAME

# Keys of a row that are not settings.
MESH, NAME = "mesh", "name"
TRUE, FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


@dataclass
class ManifestRow:
    """One row as written: ``number`` counts rows from 1; ``where`` names it in messages (``row 3 (line 4)``)."""

    number: int
    where: str
    mesh: str | None
    name: str | None
    request: dict = field(default_factory=dict)   # setting name -> value (unknown names kept: resolve names them)
    error: str | None = None


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """The rows of a ``.csv`` or ``.json`` manifest (see the module's docstring).

    Raises:
        ConfigError: the file is missing or unreadable, of another type, not valid CSV/JSON, has no
            ``mesh`` column or key, or holds no row.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ConfigError(f"manifest {path}: expected a .csv or .json file, got {suffix or 'no suffix'!r}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"manifest {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"manifest {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    rows = _csv_rows(text, path) if suffix == ".csv" else _json_rows(text, path)
    if not rows:
        raise ConfigError(f"manifest {path}: no rows; add one per mesh (mesh, prompt, settings...)")
    return rows


def _csv_rows(text: str, path: Path) -> list[ManifestRow]:
    try:
        reader = csv.DictReader(text.splitlines())
        header = reader.fieldnames or []
        if MESH not in [h.strip() for h in header]:
            raise ConfigError(f"manifest {path}: the header row must name a 'mesh' column (then prompt and settings, "
                              f"e.g. mesh,prompt,steps,seed); got {','.join(header) or 'nothing'}")
        rows = []
        for number, cells in enumerate(reader, start=1):
            where = f"row {number} (line {reader.line_num})"
            row = ManifestRow(number, where, None, None)
            if None in cells:
                row.error = f"{len(header) + len(cells[None])} cells but the header names {len(header)} columns"
            values = {}
            for key, cell in cells.items():
                if key is None or cell is None or not cell.strip():
                    continue
                key = key.strip()
                try:
                    values[key] = cell_value(key, cell)
                except ConfigError as exc:
                    row.error = row.error or str(exc)
            rows.append(_fill(row, values))
        return rows
    except csv.Error as exc:
        raise ConfigError(f"manifest {path}: not valid CSV ({exc})") from None


def _json_rows(text: str, path: Path) -> list[ManifestRow]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"manifest {path}: not valid JSON ({exc})") from None
    defaults = {}
    if isinstance(data, dict):
        unknown = sorted(set(data) - {"defaults", "rows"})
        defaults, data = data.get("defaults") or {}, data.get("rows")
        if unknown or not isinstance(defaults, dict):
            raise ConfigError(f"manifest {path}: a JSON object must hold 'defaults' (an object) and 'rows' (a list); "
                              f"got {', '.join(unknown) or type(defaults).__name__}")
    if not isinstance(data, list):
        raise ConfigError(f"manifest {path}: expected a list of rows or {{\"defaults\": {{...}}, \"rows\": [...]}}")
    rows = []
    for number, values in enumerate(data, start=1):
        row = ManifestRow(number, f"row {number}", None, None)
        if not isinstance(values, dict):
            row.error = f"a row must be an object with mesh, prompt and settings, got {type(values).__name__}"
            values = {}
        rows.append(_fill(row, {**defaults, **values}))
    return rows


def _fill(row: ManifestRow, values: dict) -> ManifestRow:
    """Split ``mesh`` and ``name`` from the settings of ``row``."""
    mesh, name = values.pop(MESH, None), values.pop(NAME, None)
    if mesh is None or not isinstance(mesh, str) or not mesh.strip():
        row.error = row.error or "no mesh: give the mesh file's path (relative to the manifest's folder)"
    else:
        row.mesh = mesh.strip()
    if name is not None and not isinstance(name, str):
        row.error = row.error or f"name must be text (the output folder), got {name!r}"
    row.name = name.strip() if isinstance(name, str) and name.strip() else None
    row.request = values
    return row


def cell_value(name: str, text: str):
    """A CSV cell as the value its setting's declared kind takes (unknown names stay text)."""
    s = BY_NAME.get(name)
    if s is None or name in (MESH, NAME):
        return text
    value = text.strip()
    try:
        if s.kind == "int":
            return int(value)
        if s.kind == "float":
            return float(value)
    except ValueError:
        what = "an integer" if s.kind == "int" else "a number"
        raise ConfigError(f"{name} must be {what}, got {value!r}") from None
    if s.kind == "bool":
        if value.lower() in TRUE:
            return True
        if value.lower() in FALSE:
            return False
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if s.kind == "list":
        if value.startswith("["):
            try:
                return json.loads(value)
            except ValueError as exc:
                raise ConfigError(f"{name}: not a valid JSON list ({exc})") from None
        return [item.strip() for item in value.split(";") if item.strip()]
    return text if s.name in ("prompt", "negative_prompt", "source_prompt") else value
