"""What becomes of a job when its runner returns: the rules of the job manager (``nfsd.jobs.queue``),
pure functions of the job's record and its ``Outcome``.

``done`` and ``failed`` are what the job said. A job the user cancelled ends ``cancelled``. A job
that a shutdown ended (the server stopping, its worker process terminated with it) ends
``interrupted``, to be re-submitted. A job whose worker was lost (a Ray actor or node that died) is
queued again, once (``MAX_RETRIES``, counted in the record on disk), where the executor allows it
(``Executor.retry_lost``); lost again, it ends ``interrupted``. A local worker process that died under
its job (a segfault, the out-of-memory killer) fails it, with what to lower.
"""

from __future__ import annotations

import signal

from .events import Outcome
from .store import CANCELLED, DONE, FAILED, INTERRUPTED, JobRecord

MAX_RETRIES = 1   # automatic re-runs of a job whose worker was lost
REQUEUE = "requeue"

# Exit codes of a worker process ended by a shutdown signal (SIGTERM / SIGINT to the server's process
# group), not by a crash or the out-of-memory killer (SIGKILL).
SHUTDOWN_CODES = (-signal.SIGTERM, -signal.SIGINT)


def may_retry(rec: JobRecord, retry_lost: bool) -> bool:
    """Whether a job whose worker was lost is queued again rather than ended."""
    return retry_lost and rec.retries < MAX_RETRIES and not rec.cancel_requested


def settle(rec: JobRecord, out: Outcome, stopping: bool, retry_lost: bool, oom_hint: str) -> tuple[str, str | None]:
    """``(state, error)`` of a job whose runner returned ``out``: a final state, or ``REQUEUE``."""
    if out.state == DONE:
        return DONE, None
    if out.state == FAILED:
        return FAILED, out.error
    if out.state == "died" and not stopping and may_retry(rec, retry_lost):
        return REQUEUE, None
    if out.state == CANCELLED or stopping or rec.cancel_requested or out.exit_code in SHUTDOWN_CODES:
        stopped = stopping or out.state == "died"
        if stopped and not rec.cancel_requested:
            return INTERRUPTED, interrupted_message(rec)
        return CANCELLED, None
    if retry_lost:  # lost again after its automatic re-run
        return INTERRUPTED, (f"{out.error or 'its worker was lost'}, after it had been re-run once; re-submit it "
                             f"with POST /jobs/{rec.id}/resubmit")
    return FAILED, (f"the worker process stopped unexpectedly (exit code {out.exit_code}); if the machine ran out "
                    f"of memory, {oom_hint}")


def after_restart(rec: JobRecord, retry_lost: bool) -> tuple[str, str | None]:
    """``(state, error)`` of a job found ``loading`` or ``running`` when the server starts (it stopped
    under the job): ``REQUEUE`` where the executor re-runs lost jobs and it was not re-run yet; else
    ``cancelled`` if the user had cancelled it, ``interrupted`` (to be re-submitted) if not."""
    if may_retry(rec, retry_lost):
        return REQUEUE, None
    if rec.cancel_requested:
        return CANCELLED, None
    return INTERRUPTED, interrupted_message(rec)


def interrupted_message(rec: JobRecord) -> str:
    return (f"the server stopped while this job ran (step {rec.step} of {rec.total}); re-submit it with "
            f"POST /jobs/{rec.id}/resubmit")
