"""Connections: a request head must arrive within ``header_timeout`` seconds, at most ``max_connections``
are open at once, and a log that a flood cannot fill.

uvicorn closes idle keep-alive connections, but not one that sent part of a request head and then
nothing: a few hundred of those (slowloris) used to hold the server's file descriptors for ever, until
``accept`` failed and asyncio logged one traceback per failed accept. :func:`protocol_class` is uvicorn's
h11 protocol with a head timer and a connection cap; :func:`quiet_floods` rate-limits repeated log lines.
"""

from __future__ import annotations

import logging
import time

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("nfsd.server")

OVER_CAP = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"retry-after: 5\r\ncontent-length: %d\r\n\r\n%s")
OVER_CAP_BODY = b'{"detail": "too many open connections to this server; try again in a few seconds"}'
RESERVED_FDS = 128  # files the server needs besides its connections (jobs, models, logs, the worker)


def effective_max_connections(configured: int) -> int:
    """``configured``, lowered to fit the process's open-file limit (less ``RESERVED_FDS``)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, ValueError, OSError):
        return configured
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(8, min(configured, soft - RESERVED_FDS))


def protocol_class(header_timeout: float, max_connections: int) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a request-head timer and a connection cap (``uvicorn.Config(http=...)``).

    - The head timer runs while the connection waits for a request head (from the connection's start,
      and again after each response); when it fires the connection is closed.
    - A connection beyond ``max_connections`` gets a 503 and is closed at once.
    """
    cap = effective_max_connections(int(max_connections))

    class GuardedH11Protocol(H11Protocol):
        _head_timer = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > cap:
                _over_cap.note()
                transport.write(OVER_CAP % (len(OVER_CAP_BODY), OVER_CAP_BODY))
                transport.close()
                return
            self._arm_head_timer()

        def connection_lost(self, exc) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            super().handle_events()
            if self._head_timer is not None and self.cycle is not None and not self.cycle.response_complete:
                self._cancel_head_timer()  # a whole head arrived: the body has its own timeout

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self._arm_head_timer()  # waiting for the next head (keep-alive)

        def _arm_head_timer(self) -> None:
            self._cancel_head_timer()
            self._head_timer = self.loop.call_later(header_timeout, self._head_timed_out)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self.transport.close()

    GuardedH11Protocol.max_connections = cap
    GuardedH11Protocol.header_timeout = header_timeout
    return GuardedH11Protocol


class _OverCap:
    """One warning per 10 s about refused connections, with how many there were."""

    def __init__(self, every: float = 10.0):
        self.every, self.count, self.last = every, 0, 0.0

    def note(self) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.last >= self.every:
            log.warning("refused %d connection(s): more than the connection cap are open (slow or stuck "
                        "clients?)", self.count)
            self.count, self.last = 0, now


_over_cap = _OverCap()


class RateLimited(logging.Filter):
    """Lets the same message (its format string and logger) through at most once per ``every`` seconds;
    the next one that passes says how many were dropped. A flood of failed accepts cannot fill a disk."""

    def __init__(self, every: float = 10.0):
        super().__init__()
        self.every = every
        self.seen: dict[tuple, list] = {}  # key -> [last time let through, dropped since]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg).split("\n", 1)[0][:200], record.levelno)
        now = time.monotonic()
        last = self.seen.get(key)
        if last is not None and now - last[0] < self.every:
            last[1] += 1
            return False
        dropped = last[1] if last else 0
        if len(self.seen) > 1000:
            self.seen.clear()
        self.seen[key] = [now, 0]
        if dropped:
            record.msg = f"{record.msg} ({dropped} more like this in the last {self.every:g} s were not logged)"
        return True


FLOODABLE_LOGGERS = ("asyncio", "uvicorn.error", "uvicorn")


def quiet_floods(every: float = 10.0) -> None:
    """Rate-limit the loggers a connection flood writes to (once; safe to call again)."""
    for name in FLOODABLE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RateLimited) for f in logger.filters):
            logger.addFilter(RateLimited(every))
