"""docs/API.md's limits are the code's limits: one source (nfsd.limits) for the engine, the server's
settings model, ServerConfig's defaults and the documentation."""

from __future__ import annotations

import re
from pathlib import Path

from nfsd.distill.config import TextureConfig
from nfsd.limits import LIMITS, MAX_PROMPT_CHARS, SETTING_RANGES, limits_table, settings_ranges_text
from nfsd.server import JobSettings, ServerConfig

API = Path(__file__).resolve().parents[1] / "docs" / "API.md"


def test_the_engine_and_the_server_accept_the_same_setting_ranges():
    for name, (lo, hi) in SETTING_RANGES.items():
        assert TextureConfig.LIMITS[name] == (lo, hi), name
        bounds = {type(m).__name__: m for m in JobSettings.model_fields[name].metadata}
        assert (bounds["Ge"].ge, bounds["Le"].le) == (lo, hi), name


def test_server_config_defaults_are_the_documented_limits():
    config = ServerConfig()
    for name in ("max_upload_bytes", "max_faces", "max_vertices", "max_queue", "body_timeout", "max_jobs"):
        assert getattr(config, name) == LIMITS[name], name


def test_api_doc_limits_table_is_generated_from_the_code():
    assert limits_table() in API.read_text(), "run: python -m nfsd.limits --write docs/API.md"


def test_api_doc_settings_table_quotes_the_code_ranges():
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| ([^|]+) \|", API.read_text(), re.M)}
    for name, text in settings_ranges_text().items():
        assert rows[name].startswith(text), (name, rows[name], text)
    assert f"at most {MAX_PROMPT_CHARS} characters" in rows["prompt"]
