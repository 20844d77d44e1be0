"""Slow and stuck clients: partial request heads are closed after the header timeout while /health
answers, connections beyond the cap are refused at once, and a flood of log lines is rate-limited.
Loopback only, bounded in count and time."""

from __future__ import annotations

import logging
import select
import socket
import time

import httpx
import pytest
from server_kit import LiveServer, config

from nfsd.server.connections import RateLimited

PARTIAL_HEAD = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


def open_partial(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(PARTIAL_HEAD)
        socks.append(s)
    return socks


def closed_by_server(s: socket.socket) -> bool:
    """True once the server closed ``s`` (readable and EOF, or reset); whatever it sent first is read."""
    try:
        while select.select([s], [], [], 0)[0]:
            if not s.recv(65536):
                return True
        return False
    except OSError:
        return True


def wait_closed(socks, limit: float) -> tuple[int, float]:
    t0 = time.monotonic()
    open_ = list(socks)
    while open_ and time.monotonic() - t0 < limit:
        open_ = [s for s in open_ if not closed_by_server(s)]
        time.sleep(0.2)
    return len(socks) - len(open_), time.monotonic() - t0


@pytest.fixture()
def server(tiny_model, tmp_path):
    with LiveServer(config(str(tiny_model), tmp_path / "data", header_timeout=3.0, max_connections=400)) as live:
        yield live


def test_partial_heads_are_closed_while_health_answers(server):
    port = int(server.url.rsplit(":", 1)[1])
    socks = open_partial(port, 300)
    try:
        for _ in range(3):  # the server answers while 300 heads hang
            with httpx.Client(base_url=server.url, timeout=5) as c:
                assert c.get("/health").status_code == 200
        closed, took = wait_closed(socks, 30)
        assert closed == len(socks), f"{len(socks) - closed} partial heads still open after {took:.1f} s"
        assert took < 30
        with httpx.Client(base_url=server.url, timeout=5) as c:
            assert c.get("/health").status_code == 200
    finally:
        for s in socks:
            s.close()


def test_a_kept_alive_connection_that_stalls_mid_head_is_closed(server):
    port = int(server.url.rsplit(":", 1)[1])
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        s.sendall(PARTIAL_HEAD)  # the second request never finishes its head
        closed, _ = wait_closed([s], 20)
        assert closed == 1
    finally:
        s.close()


def test_connections_beyond_the_cap_get_503_and_are_closed(tiny_model, tmp_path):
    with LiveServer(config(str(tiny_model), tmp_path / "data", header_timeout=20.0, max_connections=20)) as live:
        port = int(live.url.rsplit(":", 1)[1])
        socks = open_partial(port, 40)
        try:
            time.sleep(1.0)
            refused = 0
            for s in socks:
                s.settimeout(0.2)
                try:
                    data = s.recv(4096)
                except OSError:
                    continue
                refused += data.startswith(b"HTTP/1.1 503")
            assert refused >= 19  # at most 20 connections are held (one slot may be the client's own)
        finally:
            for s in socks:
                s.close()
        time.sleep(0.5)
        with httpx.Client(base_url=live.url, timeout=5) as c:
            assert c.get("/health").status_code == 200


def test_a_flood_of_the_same_log_line_is_rate_limited():
    logger = logging.getLogger("nfsd.test.flood")
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger.addHandler(Keep())
    logger.addFilter(RateLimited(every=0.5))
    logger.propagate = False
    for _ in range(10_000):
        logger.error("socket.accept() out of system resource")
    assert len(records) == 1
    time.sleep(0.6)
    logger.error("socket.accept() out of system resource")
    assert len(records) == 2 and "9999 more like this" in records[1]
