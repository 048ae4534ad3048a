"""One job's answer, however it is run: decode its wire bytes, run it, and turn any
failure into its :class:`JobFailed` (a member's error in its own words, a bug as
"internal" with its traceback logged). The scheduler (engine/serving/scheduler.py), which both
worker kinds run, answers jobs through these; ``run_job`` runs one alone, its projections unbatched.
"""

from __future__ import annotations

import logging
import traceback

from engine.jobs import dispatch
from engine.protocol import JobFailed, Request, Started, UserError, wire

log = logging.getLogger("wspace.engine")
UNREADABLE = "That request could not be read."


def failure(request: Request, exc: Exception) -> JobFailed:
    """A job's exception as its answer: a user's error in its own words, a bug as "internal"."""
    if isinstance(exc, UserError):
        log.info("job %s (%s) answered %s: %s %s", request.id, request.kind, exc.code, exc, exc.details or "")
        return JobFailed(request.id, exc.code, str(exc))
    detail = "".join(traceback.format_exception(exc))  # a bug, or a hostile input we did not foresee: keep serving
    log.error("job %s failed:\n%s", request.id, detail)
    return JobFailed(request.id, "internal", f"{type(exc).__name__}", detail[-8000:])


def run_job(engine, request: Request, emit) -> None:
    """Run one request, emitting its events; any failure becomes a :class:`JobFailed`."""
    try:
        emit(Started(request.id))
        emit(dispatch.run(engine, request, emit))
    except Exception as exc:  # noqa: BLE001
        emit(failure(request, exc))


def read_request(data: bytes, job_id: str, emit) -> Request | None:
    """The request in wire bytes; bytes that are no request fail as ``job_id`` (and give None)."""
    try:
        return wire.loads(data, expect=Request)
    except wire.WireError as exc:
        log.error("job %s refused at the wire: %s", job_id, exc)
        emit(JobFailed(job_id, "bad_argument", UNREADABLE, str(exc)))
        return None

