"""Cancel points inside an optimization step, so that a cancel takes effect within about one view's
work, not one (possibly minutes-long, on the CPU) step.

While :func:`cancel_points` is active, in the thread that entered it: every ``nn.Module`` call (the
texture, the encoder's and the UNet's blocks) and every autograd operation that saves a tensor
(the render's forward) or reads one back (the backward) raises :class:`StepCancelled` once
``cancelled()`` is true. The step in progress is then abandoned before the optimizer touches the
parameters, so a cancelled run returns exactly the texture of its last whole step. The hooks return
what they get: the numbers are those of a run without them, bit for bit.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator

import torch


class StepCancelled(Exception):
    """The job was cancelled in the middle of a step (caught by the loop; never leaves the engine)."""


@contextlib.contextmanager
def cancel_points(cancelled: Callable[[], bool], fine: bool = True) -> Iterator[Callable[[], None]]:
    """Yields ``check()`` (raises ``StepCancelled`` when ``cancelled()``) for the points between a step's
    parts. ``fine``: also check at every module call and saved tensor (the CPU, where one step can take
    minutes; on a GPU the Python thread runs ahead of the device, so checks between parts suffice)."""
    thread = threading.get_ident()

    def check() -> None:
        if cancelled():
            raise StepCancelled

    if not fine:
        yield check
        return

    def module_call(module, args) -> None:  # a global hook: other threads' modules are none of ours
        if threading.get_ident() == thread:
            check()

    def saved(tensor):
        check()
        return tensor

    handle = torch.nn.modules.module.register_module_forward_pre_hook(module_call)
    try:
        with torch.autograd.graph.saved_tensors_hooks(saved, saved):
            yield check
    finally:
        handle.remove()
