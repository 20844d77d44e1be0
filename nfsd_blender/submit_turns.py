# SPDX-License-Identifier: GPL-3.0-or-later
"""The submissions of one press of Texture, one at a time in the order of the selection. No bpy.

Every job of a press has its own worker thread (:mod:`worker`); they share one :class:`SubmitTurns`.
A worker uploads its mesh when every job before it has submitted (or given up), so the objects reach
the backend's queue in the order the artist sees (the active object first), a local backend started
by the first upload serves the others, and once the backend refused one because its queue is full
(HTTP 429) the ones after it are not sent at all: they end "not sent" with the backend's sentence.
"""

from __future__ import annotations

import threading


class SubmitTurns:
    """Turns to submit, handed out by :meth:`ticket` (main thread) in the order the jobs start.

    ``refused``: the backend's sentence once it refused a submission for a full queue ("" before)."""

    def __init__(self):
        self._changed = threading.Condition()
        self._issued = 0
        self._open: set[int] = set()  # tickets whose submission has not ended yet
        self.refused = ""

    def ticket(self) -> int:
        """The next turn (call in the order the submissions should happen)."""
        with self._changed:
            number = self._issued
            self._issued += 1
            self._open.add(number)
            return number

    def is_turn(self, ticket: int) -> bool:
        """True when every ticket before ``ticket`` has ended its submission."""
        with self._changed:
            return min(self._open, default=ticket) >= ticket

    def wait(self, ticket: int, cancel: threading.Event) -> bool:
        """Block until it is ``ticket``'s turn (True) or ``cancel`` is set (False)."""
        with self._changed:
            while min(self._open, default=ticket) < ticket:
                if cancel.is_set():
                    return False
                self._changed.wait(0.1)
        return not cancel.is_set()

    def refuse(self, message: str) -> None:
        """The backend refused a submission for a full queue: the later turns are not sent."""
        with self._changed:
            self.refused = message

    def done(self, ticket: int) -> None:
        """``ticket``'s submission ended (sent, refused, failed or cancelled): the next one goes."""
        with self._changed:
            self._open.discard(ticket)
            self._changed.notify_all()
