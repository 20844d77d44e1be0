"""How fast this server ran each kind of job: steps/s per model, render size, batch and texture size,
measured by finished jobs and kept in ``<data dir>/speeds.json`` (the time estimate before a job).

The figures are the engine's own (``TextureResult.timings["steps_per_s"]``): a later job of the same
kind on the same machine takes about ``steps / steps_per_s`` plus loading. No measurement, no estimate:
the answer is None ("unknown"), never a guess.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger("nfsd.jobs")

KEY_SETTINGS = ("model", "render_size", "batch", "texture_size", "encoder", "offsets")
MAX_KINDS = 200  # the file stays small whatever clients send


def speed_key(settings: dict) -> str:
    """The kind of a job, as far as its speed goes (a resolved settings dict)."""
    return "|".join(f"{name}={settings.get(name)}" for name in KEY_SETTINGS)


class SpeedBook:
    """Measured steps/s by job kind; thread-safe; written atomically after each finished job."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._speeds: dict[str, float] = {}
        try:
            data = json.loads(self.path.read_text())
            if isinstance(data, dict):
                self._speeds = {str(k): float(v) for k, v in data.items()
                                if isinstance(v, (int, float)) and 0 < v < 1e6}
        except (OSError, ValueError):
            pass

    def record(self, settings: dict, steps_per_s: float | None) -> None:
        if not steps_per_s or steps_per_s <= 0:
            return
        key = speed_key(settings)
        with self._lock:
            old = self._speeds.pop(key, None)
            # A running mean that follows the machine (other loads, a new driver) without jumping.
            self._speeds[key] = float(steps_per_s) if old is None else 0.5 * old + 0.5 * float(steps_per_s)
            while len(self._speeds) > MAX_KINDS:
                self._speeds.pop(next(iter(self._speeds)))
            data = dict(self._speeds)
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, self.path)
        except OSError as exc:  # a full disk costs the estimate, never the job
            log.warning("could not write %s: %s", self.path, exc)

    def steps_per_second(self, settings: dict) -> float | None:
        with self._lock:
            return self._speeds.get(speed_key(settings))

    def estimate(self, settings: dict) -> float | None:
        """Seconds of optimization for ``settings`` (``steps / steps_per_s``); None when not measured."""
        sps = self.steps_per_second(settings)
        return None if not sps else float(settings.get("steps") or 0) / sps
