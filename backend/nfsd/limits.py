"""The server's request limits in one place (defaults of ``nfsd serve`` options); the ranges of a job's
settings are declared with the settings themselves (``nfsd.settings``).

docs/API.md's "Security and limits" table is generated from :data:`SERVER_LIMITS` (tests/test_limits.py
checks it); after changing a number here, run ``python -m nfsd.server.api_doc --write docs/API.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    Limit("header_timeout", 10.0, "--header-timeout", "seconds", "connection closed",
          "a connection must send a whole request head within this time (from its start, or after its last "
          "response): slow or stuck clients cannot hold connections open"),
    Limit("max_connections", 512, "--max-connections", "connections", "503",
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
