"""Every limit of the backend in one place: the ranges of a job's settings (the engine, the CLI and the
server all check these) and the server's request limits (defaults of ``nfsd serve`` options).

docs/API.md's "Security and limits" table is generated from :data:`SERVER_LIMITS` and its settings
table must quote :data:`SETTING_RANGES` (tests/test_limits.py checks both); after changing a number
here, run ``python -m nfsd.limits --write docs/API.md``.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

# field: (min, max) inclusive. The server also asks for multiples (SETTING_MULTIPLES): the VAE
# downsamples renders by 8, and textures come in steps of 16 (the add-on offers steps of 64).
SETTING_RANGES: dict[str, tuple] = {
    "steps": (1, 10_000),
    "texture_size": (16, 4096),
    "render_size": (16, 1024),
    "batch": (1, 16),
    "guidance_scale": (0.0, 200.0),
    "offset_strength": (0.0, 0.2),
    "seed": (0, 2**32 - 1),
}
SETTING_MULTIPLES: dict[str, int] = {"texture_size": 16, "render_size": 8}
MAX_PROMPT_CHARS = 2000


@dataclass(frozen=True)
class Limit:
    """One request limit of the server: its default, the ``nfsd serve`` option and the answer beyond it."""

    name: str
    default: float | int
    option: str | None
    unit: str
    answer: str
    meaning: str


SERVER_LIMITS: tuple[Limit, ...] = (
    Limit("max_upload_bytes", 256 * 1024 * 1024, None, "bytes", "413",
          "largest `POST /jobs` body (checked from Content-Length before reading)"),
    Limit("max_faces", 500_000, "--max-faces", "triangles", "422",
          "largest mesh, read from the .npz member headers before anything is decompressed"),
    Limit("max_vertices", 1_500_000, "--max-vertices", "vertices", "422",
          "most vertices of a mesh, read from the member headers like max_faces"),
    Limit("max_compression_ratio", 200, None, "x", "422",
          "an .npz member may inflate at most this much (members under 1 MiB are exempt)"),
    Limit("max_settings_bytes", 64 * 1024, None, "bytes", "413",
          "largest `settings` field"),
    Limit("max_json_depth", 8, None, "levels", "422",
          "deepest nesting of `settings` (a flat object needs 1)"),
    Limit("max_init_texture_side", 8192, None, "pixels", "422",
          "widest / tallest `init_texture`, read from the PNG header before decoding"),
    Limit("max_queue", 100, "--max-queue", "jobs", "429",
          "jobs waiting to run; more submissions are refused until a job finishes"),
    Limit("body_timeout", 30.0, "--body-timeout", "seconds", "408",
          "a request body that sends nothing for this long is dropped (its connection closed)"),
    Limit("header_timeout", 10.0, None, "seconds", "connection closed",
          "a connection must send a whole request head within this time (from its start, or after its last "
          "response): slow or stuck clients cannot hold connections open"),
    Limit("max_connections", 512, None, "connections", "503",
          "connections open at once (lowered to fit the process's open-file limit); more are answered 503 "
          "and closed at once; repeated accept errors are logged once per 10 s"),
    Limit("unwrap_timeout", 600.0, None, "seconds", "job fails",
          "a mesh without UVs is unwrapped (xatlas, in a child process) within this time, else the job fails "
          "saying to unwrap it in Blender"),
    Limit("max_jobs", 50, "--max-jobs", "jobs", "-",
          "finished jobs kept on disk, oldest pruned first; at least 1"),
    Limit("quote_chars", 60, None, "characters", "-",
          "most characters of an input quoted back in an error message"),
)
LIMITS: dict[str, float | int] = {lim.name: lim.default for lim in SERVER_LIMITS}


def quote(value, n: int | None = None) -> str:
    """``repr(value)``, cut to ``quote_chars`` characters: error messages never echo a large input."""
    n = n or int(LIMITS["quote_chars"])
    text = repr(value)
    return text if len(text) <= n else f"{text[:n]}... ({len(text)} characters)"


def _number(v) -> str:
    if isinstance(v, float) and v.is_integer() and v >= 10:
        v = int(v)
    return f"{v:,}" if isinstance(v, int) else f"{v:g}"


def limits_table() -> str:
    """docs/API.md's request-limits table (markdown)."""
    rows = ["| limit | default | `nfsd serve` option | answer beyond | what |", "| --- | --- | --- | --- | --- |"]
    for lim in SERVER_LIMITS:
        rows.append(f"| `{lim.name}` | {_number(lim.default)} {lim.unit} | {f'`{lim.option}`' if lim.option else '-'} "
                    f"| {lim.answer} | {lim.meaning} |")
    return "\n".join(rows)


def settings_ranges_text() -> dict[str, str]:
    """Each ranged setting as docs/API.md's settings table writes it, e.g. ``integer 1..10000``."""
    out = {}
    for name, (lo, hi) in SETTING_RANGES.items():
        kind = "integer" if isinstance(lo, int) else "number"
        hi_text = "2^32-1" if hi == 2**32 - 1 else _number(hi).replace(",", "")
        text = f"{kind} {_number(lo)}..{hi_text}"
        if name in SETTING_MULTIPLES:
            text += f", a multiple of {SETTING_MULTIPLES[name]}"
        out[name] = text
    return out


BEGIN, END = "<!-- limits table: generated by `python -m nfsd.limits --write docs/API.md` -->", "<!-- end of limits table -->"


def write_doc(path: Path) -> bool:
    """Replace the generated table in ``path``; True when the file changed."""
    text = path.read_text()
    new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: f"{BEGIN}\n{limits_table()}\n{END}", text,
                 flags=re.S)
    if new != text:
        path.write_text(new)
    return new != text


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        print("updated" if write_doc(Path(sys.argv[2])) else "unchanged", sys.argv[2])
    else:
        print(limits_table())
        for k, v in settings_ranges_text().items():
            print(f"{k}: {v}")
