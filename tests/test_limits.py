"""docs/API.md's request limits are the code's limits: one source (nfsd.limits) for ServerConfig's
defaults and the documentation (the settings' ranges: tests/test_settings.py)."""

from __future__ import annotations

from pathlib import Path

from nfsd.limits import LIMITS
from nfsd.server.api_doc import limits_table
from nfsd.server import ServerConfig

API = Path(__file__).resolve().parents[1] / "docs" / "API.md"


def test_server_config_defaults_are_the_documented_limits():
    config = ServerConfig()
    for name in ("max_upload_bytes", "max_faces", "max_vertices", "max_queue", "body_timeout", "max_jobs"):
        assert getattr(config, name) == LIMITS[name], name


def test_api_doc_limits_table_is_generated_from_the_code():
    assert limits_table() in API.read_text(), "run: python -m nfsd.server.api_doc --write docs/API.md"
