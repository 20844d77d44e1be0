"""The app factory (:func:`create_app`) and :func:`serve`, what ``nfsd serve`` runs."""

from __future__ import annotations

import logging
import shutil
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..errors import ConfigError
from ..jobs.queue import JobManager, ManagerConfig
from .config import DEFAULT_PORT, ServerConfig, is_loopback_host
from .routes import router
from .schemas import ErrorBody
from .security import BrowserGuard
from .uploads import BodyTimeout
from .validation import FileChecker

log = logging.getLogger("nfsd.server")


def create_app(config: ServerConfig | None = None) -> FastAPI:
    """The FastAPI app; its lifespan starts and stops the job worker (one per app)."""
    config = config or ServerConfig()
    config.check()
    data_dir = config.resolved_data_dir()
    try:
        manager = JobManager(ManagerConfig(
            data_dir=data_dir, default_model=config.model, device=config.device, max_finished=config.max_jobs,
            max_age_days=config.max_age_days, status_interval=config.status_interval,
            preview_interval=config.preview_interval, torch_threads=config.torch_threads,
            executor=config.executor, devices=tuple(config.devices), ray_address=config.ray_address,
            ray_workers=config.ray_workers,
        ))
    except OSError as exc:
        raise ConfigError(f"cannot use the data dir {data_dir} ({exc}); pass a writable folder with --data-dir") from exc

    checker = FileChecker(config)
    spool = data_dir / "uploads"

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        shutil.rmtree(spool, ignore_errors=True)  # bodies of requests that a crash cut short
        checker.start()
        manager.start()
        await run_in_threadpool(preload, config.model)
        log.info("nfsd server: jobs in %s, default model %s", manager.store.root, config.model)
        try:
            yield
        finally:
            await run_in_threadpool(manager.stop)
            await run_in_threadpool(checker.stop)

    # The documentation pages are for the artist's own machine: on a public address they would hand
    # the API's whole surface to anyone who can reach it (docs/API.md is the contract there).
    docs = is_loopback_host(config.host)
    app = FastAPI(
        title="nfsd backend", version=__version__, lifespan=lifespan,
        docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
        description="Textures a mesh from a text prompt with Noise-Free Score Distillation. See docs/API.md.",
        responses={401: {"model": ErrorBody}, 422: {"model": ErrorBody}},
    )
    app.state.manager = manager
    app.state.config = config
    app.state.checker = checker
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
    app.include_router(router)
    app.add_middleware(BodyTimeout, timeout=config.body_timeout)
    app.add_middleware(BrowserGuard, config=config)
    return app


def preload(model: str) -> None:
    """Import what checking a submission needs before the first request: lazy imports racing in the
    thread pool fail (``cannot import name 'AutoTokenizer'`` from transformers' lazy module)."""
    from ..priors import catalog, prior
    from .. import settings  # noqa: F401  (resolve at submit: TextureConfig and the rules, which import torch)
    from transformers import AutoTokenizer  # noqa: F401


async def _validation_error(request: Request, exc: RequestValidationError):
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return JSONResponse({"detail": "; ".join(parts)}, status_code=422)


async def _unexpected(request: Request, exc: Exception):
    log.exception("unexpected error in %s %s", request.method, request.url.path)
    return JSONResponse({"detail": f"internal error ({type(exc).__name__}: {exc}); see the server log"},
                        status_code=500)


def uvicorn_config(app: FastAPI, host: str, port: int, **kw):
    """The ``uvicorn.Config`` of ``app``: its config's request-head timeout and connection cap
    (:mod:`.connections`), and loggers a connection flood cannot fill."""
    import uvicorn

    from .connections import protocol_class, quiet_floods

    config: ServerConfig = app.state.config
    out = uvicorn.Config(app, host=host, port=port, http=protocol_class(config.header_timeout, config.max_connections),
                         **kw)
    quiet_floods()  # after uvicorn's logging set-up
    return out


def serve(host: str = "127.0.0.1", port: int = DEFAULT_PORT, token: str | None = None,
          data_dir: str | Path | None = None, log_level: str = "info", **options) -> None:
    """Run the server until interrupted (what ``nfsd serve`` calls); ``options`` are other
    :class:`ServerConfig` fields (model, device, max_jobs, allow_hosts, max_queue...).

    Raises:
        ConfigError: a non-loopback ``host`` without ``token``, an empty token, a bad port or limit.
    """
    import uvicorn

    if options.get("allow_hosts") is not None:
        options["allow_hosts"] = tuple(options["allow_hosts"])
    if options.get("devices") is not None:
        options["devices"] = tuple(options["devices"])
    if options.get("models_dir") is not None:
        options["models_dir"] = Path(options["models_dir"])
    options = {k: v for k, v in options.items() if v is not None or k == "max_age_days"}
    config = ServerConfig(host=host, port=port, token=token, data_dir=Path(data_dir) if data_dir else None, **options)
    app = create_app(config)
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # SIGTERM / Ctrl-C: open requests get 2 s, then the job manager stops its worker within ~3 s.
    uvicorn.Server(uvicorn_config(app, host, port, log_level=log_level, access_log=False,
                                  timeout_graceful_shutdown=2)).run()
