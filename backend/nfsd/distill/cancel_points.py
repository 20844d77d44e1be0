"""Cancel points inside an optimization step, so that a cancel takes effect within about one view's
work, not one step (minutes on a CPU at batch 16, render 1024, texture 4096).

While a step's work runs under :meth:`CancelPoints.watching` (render, encode, prediction, backward;
never the optimizer's update), every torch operation of this thread (a ``TorchFunctionMode``: the
rasterizer's chunks, the encoder's and the UNet's layers) and every saved tensor read back by the
backward (``saved_tensors_hooks``) raises :class:`StepCancelled` once the job is cancelled. The step
in progress is then dropped whole, before the optimizer touches the parameters, so a cancelled run
returns the texture of its last whole step. The hooks pass every tensor through untouched: the
numbers are those of a run without them, bit for bit.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch.overrides import TorchFunctionMode


class StepCancelled(Exception):
    """The job was cancelled in the middle of a step (caught by the loop; never leaves the engine)."""


class _CheckEveryOp(TorchFunctionMode):
    def __init__(self, check: Callable[[], None]):
        super().__init__()
        self._check = check

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self._check()
        return func(*args, **(kwargs or {}))


class CancelPoints:
    """``check()`` raises ``StepCancelled`` once ``cancelled()``; ``watching()`` makes every operation of a
    step's work a check when ``fine`` (the CPU: on a GPU the Python thread runs ahead of the device and
    the checks between the step's parts suffice, without a Python call per operation)."""

    def __init__(self, cancelled: Callable[[], bool], fine: bool = True):
        self._cancelled = cancelled
        self.fine = fine

    def check(self) -> None:
        if self._cancelled():
            raise StepCancelled

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        if not self.fine:
            yield
            return

        def saved(tensor):
            self.check()
            return tensor

        with _CheckEveryOp(self.check), torch.autograd.graph.saved_tensors_hooks(saved, saved):
            yield
