"""The local HTTP API (FastAPI + uvicorn) that the Blender add-on talks to: see docs/API.md.

``create_app(ServerConfig(...))`` builds the app (tests run it with uvicorn on an ephemeral loopback
port); ``serve(...)`` is what ``nfsd serve`` calls. One :class:`nfsd.jobs.queue.JobManager` per app runs the
jobs on a single worker thread; every request is answered from memory or from files on disk, so
polling never waits for the GPU.

Modules, one concept each:

- ``config``: :class:`ServerConfig` (what ``nfsd serve`` can set) and the loopback test;
- ``schemas``: the pydantic models of requests and responses (``JobSettings``, ``JobStatus``...);
- ``validation``: checks of a submission (settings in a thread, files in a child process);
- ``uploads``: request bodies (``POST /jobs`` spooled into the data dir, a stall timeout);
- ``security``: the bearer-token dependency;
- ``routes``: the endpoints;
- ``connections``: the request-head timeout, the connection cap, rate-limited flood logs;
- ``app``: the app factory (``create_app``), ``uvicorn_config`` and ``serve``.
"""

from .app import create_app, serve, uvicorn_config
from .config import DEFAULT_PORT, ServerConfig, default_data_dir, is_loopback_host
from .schemas import Health, JobList, JobSettings, JobStatus, SubmitResponse
from .validation import FileChecker, parse_settings

__all__ = [
    "DEFAULT_PORT",
    "Health",
    "JobList",
    "JobSettings",
    "JobStatus",
    "ServerConfig",
    "SubmitResponse",
    "create_app",
    "default_data_dir",
    "is_loopback_host",
    "serve",
    "uvicorn_config",
    "FileChecker",
    "parse_settings",
]
