"""Which handler serves which request, and running one: the one way a request is run.

The handler modules each keep a registry of their own (``@handles(SomeRequest)``); this
module joins them, explicitly: adding a request kind adds its handler to one of them.
:func:`start` validates a request and calls its handler, which returns its
:class:`~engine.protocol.Result` or is a generator of asks (projections, faces to draw, a
pause) that the scheduler (engine/serving/scheduler.py) serves beside other members' jobs;
:func:`run` serves one request alone (``wspace`` on the command line, tests).
"""

from __future__ import annotations

import dataclasses
import inspect

from engine.jobs import handlers, team
from engine.jobs.engine import Engine
from engine.jobs.handlers import ProgressFn
from engine.protocol import BadArgument, ModelMismatch, Request, Result

HANDLERS = {**handlers.HANDLERS, **team.HANDLERS}


def start(engine: Engine, request: Request, progress: ProgressFn | None = None):
    """Validate and dispatch: the handler's :class:`Result`, or its generator of asks:
    :class:`~engine.latent.batch.Member` (or a list of them, see :func:`engine.jobs.handlers.project_aligned`)
    or :class:`~engine.jobs.asks.Draw`."""
    handler = HANDLERS.get(type(request))
    if handler is None:
        raise BadArgument("I don't know how to do that.")
    request.validate()
    if request.named_faces() and request.model_id and request.model_id != engine.model_id:
        raise ModelMismatch("Those faces were made with a different model than the one loaded now; project them again.")
    return handler(engine, request, progress or (lambda p: None))


def finish(engine: Engine, request: Request, result: Result) -> Result:
    return dataclasses.replace(result, job_id=request.id, model_id=engine.model_id)


def run(engine: Engine, request: Request, progress: ProgressFn | None = None) -> Result:
    """Run one request alone (its projections one after another, each a batch of one)."""
    out = start(engine, request, progress)
    if inspect.isgenerator(out):
        out = engine.drive(out)
    return finish(engine, request, out)
