"""Processes as Linux's /proc shows them (psutil is not a dependency): who is alive, whose child."""

from __future__ import annotations

import time
from pathlib import Path

PROC = Path("/proc")


def stat(pid: int) -> tuple[str, int] | None:
    """``(state letter, parent pid)`` of ``pid``, or None when it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    """Running or sleeping; a zombie (dead, not yet reaped by whoever adopted it) counts as gone."""
    s = stat(pid)
    return s is not None and s[0] not in ("Z", "X")


def pids() -> list[int]:
    return [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]


def descendants(root: int) -> set[int]:
    """Every live process whose parent chain leads to ``root`` (not ``root`` itself)."""
    children: dict[int, list[int]] = {}
    for pid in pids():
        s = stat(pid)
        if s is not None:
            children.setdefault(s[1], []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found and alive(child):
                found.add(child)
                todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def with_environment(name: str, value: str) -> set[int]:
    """Live processes (of this user) started with ``name=value`` in their environment: a process
    inherits it from whoever started it, so it marks descendants even after they were re-parented."""
    marker = f"{name}={value}".encode()
    found = set()
    for pid in pids():
        try:
            env = (PROC / str(pid) / "environ").read_bytes()
        except OSError:
            continue
        if marker in env.split(b"\0") and alive(pid):
            found.add(pid)
    return found


def wait_gone(pids_: set[int], timeout: float) -> set[int]:
    """The processes of ``pids_`` still alive after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    left = {p for p in pids_ if alive(p)}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {p for p in left if alive(p)}
    return left


def describe(pids_: set[int]) -> str:
    return "; ".join(f"{p} ({cmdline(p)[:120]})" for p in sorted(pids_))
