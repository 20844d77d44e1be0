"""What ``nfsd serve`` can set (:class:`ServerConfig`), and where jobs live by default."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..jobs.executors import check_executor
from ..limits import LIMITS

DEFAULT_PORT = 7870


def default_data_dir() -> Path:
    """``$NFSD_DATA_DIR``, else ``$XDG_DATA_HOME/nfsd`` (``~/.local/share/nfsd``), or ``%LOCALAPPDATA%\\nfsd`` on Windows."""
    if os.environ.get("NFSD_DATA_DIR"):
        return Path(os.environ["NFSD_DATA_DIR"]).expanduser()
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "nfsd"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "nfsd"


@dataclass
class ServerConfig:
    """Everything ``nfsd serve`` can set.

    Attributes:
        host, port: where to listen; anything but a loopback address requires ``token``.
        token: when set, every request but ``GET /health`` (and the docs pages) needs
            ``Authorization: Bearer <token>``. The docs pages are served on loopback only.
        data_dir: jobs live in ``data_dir/jobs/<id>/``; default :func:`default_data_dir`.
        model: the model of jobs whose settings name none.
        device: ``auto`` | ``cpu`` | ``cuda``.
        max_jobs: finished jobs kept on disk (oldest pruned first).
        max_age_days: finished jobs older than this are pruned (None: never by age).
        allow_hosts: more names this server may be reached by (``--allow-host``); requests whose
            ``Host`` is neither one of them, a loopback name or address, nor ``host`` get 421, so a web
            page cannot reach the server through DNS rebinding.
        max_upload_bytes: largest accepted ``POST /jobs`` body (413 beyond).
        max_faces, max_vertices: largest accepted mesh (422 beyond), read from the .npz headers.
        max_queue: most jobs waiting to run (429 beyond).
        body_timeout: seconds a request body may send nothing before it is dropped (408).
        header_timeout: seconds a connection may take to send a whole request head (then it is closed).
        max_connections: connections open at once (more get 503 and are closed).
        torch_threads: CPU threads of torch in the worker process (0: torch's default).
        models_dir: diffusers folders and single files offered besides ``builtin`` and ``model``, LoRAs
            in its ``loras/``; jobs may name only offered models (``nfsd.priors.catalog``, ``GET /models``).
        executor: ``local`` (worker processes here) | ``ray`` (long-lived actors on a Ray cluster).
        devices: local executor: one worker process per device (``("cuda:0", "cuda:1")``); empty: one on ``device``.
        ray_address: ray executor: the cluster to join (None: a local Ray).
        ray_workers: ray executor: how many workers (0: one per GPU, or per CPU of a CPU-only cluster).

    The defaults of the limits are :data:`nfsd.limits.LIMITS` (docs/API.md lists them).
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    data_dir: Path | None = None
    model: str = "builtin"
    device: str = "auto"
    allow_hosts: tuple[str, ...] = ()
    max_jobs: int = LIMITS["max_jobs"]
    max_age_days: float | None = 30.0
    max_upload_bytes: int = LIMITS["max_upload_bytes"]
    max_faces: int = LIMITS["max_faces"]
    max_vertices: int = LIMITS["max_vertices"]
    max_queue: int = LIMITS["max_queue"]
    body_timeout: float = LIMITS["body_timeout"]
    header_timeout: float = LIMITS["header_timeout"]
    max_connections: int = LIMITS["max_connections"]
    preview_interval: float = 2.0
    status_interval: float = 0.5
    torch_threads: int = 0
    models_dir: Path | None = None
    executor: str = "local"
    devices: tuple[str, ...] = ()
    ray_address: str | None = None
    ray_workers: int = 0

    def catalog(self):
        from ..priors.catalog import Catalog

        # isolated: described in a child process with a timeout and cached (a FIFO or a stalled mount in
        # the folder must not hold the server's GIL; a submit naming a model must not rescan it)
        return Catalog(default_model=self.model, models_dir=Path(self.models_dir).expanduser() if self.models_dir else None,
                       isolated=True)

    def check(self) -> None:
        """Raise ``ConfigError`` for a configuration that must not start (e.g. a public host with no token)."""
        if self.token is not None and not self.token.strip():
            raise ConfigError("--token is empty: pass a non-empty token or leave the option out")
        if not is_loopback_host(self.host) and not self.token:
            raise ConfigError(
                f"refusing to listen on {self.host!r} without a token: anyone who can reach this machine could "
                "run jobs and read results. Pass --token <secret> (and set the same token in the add-on), "
                "or listen on 127.0.0.1"
            )
        if not (0 <= int(self.port) <= 65535):
            raise ConfigError(f"--port {self.port} is out of range 0..65535")
        if not self.header_timeout > 0:
            raise ConfigError(f"header_timeout must be a positive number of seconds, got {self.header_timeout}")
        for name in ("max_jobs", "max_upload_bytes", "max_faces", "max_vertices", "max_queue", "max_connections"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.body_timeout > 0:
            raise ConfigError(f"--body-timeout must be a positive number of seconds, got {self.body_timeout}")
        for name in self.allow_hosts:
            if not name or any(c in name for c in "/: @"):
                raise ConfigError(f"--allow-host takes a bare host name such as 'studio-pc.local', got {name!r}")
        check_executor(self.executor, tuple(self.devices), self.ray_address, int(self.ray_workers))
        self.catalog().check()

    def resolved_data_dir(self) -> Path:
        return Path(self.data_dir).expanduser() if self.data_dir else default_data_dir()


def is_loopback_host(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 and ``::1``; ``0.0.0.0`` and every other address are not."""
    host = (host or "").strip().strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
