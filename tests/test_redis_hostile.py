"""The Redis wire under attack, against a real redis-server: a worker and the bot's transport
take only sealed, well-formed entries. Unsigned, forged, stale, mis-addressed and poison
job entries go to the dead-letter stream (their job failed once, with one sentence) and
the worker keeps serving; forged or mis-keyed events are dropped without answering or
failing anyone's job, and the bot reads no key but the job's own result key."""

from __future__ import annotations

import asyncio
import shutil
import time

import numpy as np
import pytest
import pytest_asyncio

from engine.protocol import JobFailed, RandomRequest, Result, as_face, wire
from engine.protocol.redis_keys import GROUP, MAX_DELIVERIES
from tests.redis_helpers import SECRET

pytestmark = [pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="redis-server is not installed (.ci/run installs Debian's redis-server)")]
KEY = SECRET.encode()
PREFIX = "hostile"


@pytest.fixture(scope="module")
def worker(redis_server, tiny_model):
    from engine.ops import Engine
    from engine.redis_worker import RedisWorker

    w = RedisWorker(redis_server.url, Engine(tiny_model), KEY, worker_id="w-test", claim_idle=0.001, prefix=PREFIX)
    w.ensure_group()
    yield w
    w.stop()


REPLY = f"{PREFIX}:events:test"


def job_entry(request=None, *, seal=True, key=KEY, when=None, job_id=None, reply=REPLY) -> dict:
    request = request or RandomRequest(seed=5)
    data = wire.dumps(request)
    return {"job_id": request.id if job_id is None else job_id, "reply": reply,
            "job": wire.seal(data, key, now=when) if seal else data}


def replies(worker) -> list:
    got = worker.r.xrange(REPLY)
    worker.r.delete(REPLY)
    return [wire.loads(wire.unseal(f[b"event"], KEY, 60)) for _, f in got]


def run_one(worker, fields: dict) -> None:
    worker.r.xadd(worker.stream, fields)
    entry = worker.take()
    assert entry is not None
    worker.handle(*entry)
    while worker.jobs().busy():  # what the job asked for (its faces drawn) is done at the next step
        worker.jobs().step()


def test_a_sealed_job_runs(worker):
    request = RandomRequest(seed=5)
    run_one(worker, job_entry(request))
    events = replies(worker)
    assert isinstance(events[-1], Result) and events[-1].job_id == request.id


@pytest.mark.parametrize("case", ["unsigned", "wrong key", "stale", "id mismatch", "garbage", "none id"])
def test_bad_job_entries_go_to_the_dead_letters_and_fail_once(worker, case):
    request = RandomRequest(seed=6)
    fields = {"unsigned": lambda: job_entry(request, seal=False),
              "wrong key": lambda: job_entry(request, key=b"not-the-secret-at-all"),
              "stale": lambda: job_entry(request, when=time.time() - 3 * 3600),
              "id mismatch": lambda: job_entry(request, job_id="0123456789ab"),
              "garbage": lambda: {**job_entry(request), "job": b"\x80\x04cos\nsystem\n(S'echo pwned'\ntR."},
              "none id": lambda: {**job_entry(request), "job": wire.seal(
                  b"\x83\xa4type\xadRandomRequest\xa1v\x01\xa4body\x81\xa2id\xc0", KEY)}}[case]()
    dead_before = worker.r.xlen(worker.k["dead"])
    run_one(worker, fields)
    assert worker.r.xlen(worker.k["dead"]) == dead_before + 1
    assert worker.r.xlen(worker.stream) == 0, "the entry left the job stream"
    events = replies(worker)
    failed = [e for e in events if isinstance(e, JobFailed)]
    assert len(failed) == 1 and failed[0].job_id == fields["job_id"] and failed[0].message == "That request could not be read."
    test_a_sealed_job_runs(worker)  # still serving


@pytest.mark.parametrize("fields", [
    {"job_id": "", "reply": REPLY, "job": b""},
    {"reply": REPLY, "job": b"x"},
    {"job_id": "abcdefabcdef", "reply": f"{PREFIX}:workers", "job": b"x"},  # a reply 'stream' that is another key
    {"job_id": "abcdefabcdef", "reply": "elsewhere:events:x", "job": b"x"},
    {"job_id": "abcdefabcdef", "job": b"x"},
])
def test_entries_with_bad_fields_are_set_aside_without_writing_anywhere(worker, fields):
    worker.r.sadd(f"{PREFIX}:workers", "w-test")
    before = {k: worker.r.type(k) for k in worker.r.keys("*")}
    dead_before = worker.r.xlen(worker.k["dead"])
    run_one(worker, fields)
    assert worker.r.xlen(worker.k["dead"]) == dead_before + 1
    after = {k: worker.r.type(k) for k in worker.r.keys("*")}
    assert {k: t for k, t in after.items() if k != worker.k["dead"].encode()} == \
        {k: t for k, t in before.items() if k != worker.k["dead"].encode()}, "nothing else was written"
    test_a_sealed_job_runs(worker)


def test_a_poison_job_is_set_aside_after_its_deliveries(worker):
    request = RandomRequest(seed=8)
    entry_id = worker.r.xadd(worker.stream, job_entry(request))
    worker.r.xreadgroup(GROUP, "ghost", {worker.stream: ">"}, count=1)  # taken by a worker that then died…
    for _ in range(MAX_DELIVERIES):  # …again and again
        worker.r.xclaim(worker.stream, GROUP, "ghost", 0, [entry_id])
    time.sleep(0.05)  # idle past the worker's claim time
    entry = worker.take()
    assert entry is not None and entry[2] > MAX_DELIVERIES
    worker.handle(*entry)
    dead = worker.r.xrange(worker.k["dead"])[-1][1]
    assert dead[b"job_id"] == request.id.encode() and b"delivered" in dead[b"reason"]
    failed = [e for e in replies(worker) if isinstance(e, JobFailed)]
    assert len(failed) == 1 and "set aside" in failed[0].message


def test_only_a_sealed_stop_key_for_that_very_job_stops_it(worker):
    job, other = "0123456789ab", "ba9876543210"
    key = worker.k["stop"].format
    cases = {b"forged": False, wire.seal(job.encode(), b"not-the-secret-at-all"): False,
             wire.seal(other.encode(), KEY): False,  # a real stop key, copied onto another job
             wire.seal(job.encode(), KEY, now=time.time() - 3 * 3600): False,  # stale
             wire.seal(job.encode(), KEY): True}
    for value, stops in cases.items():
        worker.r.set(key(job), value)
        assert worker._stopped([job, other]) == ([job] if stops else []), value[:20]
    worker.r.delete(key(job))
    request = RandomRequest(seed=9)
    worker.r.set(key(request.id), wire.seal(request.id.encode(), KEY))
    run_one(worker, job_entry(request))  # stopped before a worker took it: it never runs
    events = replies(worker)
    assert [type(e).__name__ for e in events] == ["JobFailed"] and events[0].code == "cancelled"
    assert worker.r.xlen(worker.stream) == 0


@pytest_asyncio.fixture(loop_scope="module")
async def transport(redis_server):
    from bot.transport.redis_streams import RedisTransport

    t = RedisTransport(redis_server.url, KEY, prefix=PREFIX, poll_seconds=0.2)
    await t.start(wait=False)
    yield t
    await t.close()


async def pending_job(transport):
    request = RandomRequest(seed=1)
    transport.pending.clear()
    return request, transport._book(request, None)


def event_fields(event, job_id=None, key=KEY, seal=True) -> dict:
    data = wire.dumps(event)
    return {b"worker": b"evil", b"job_id": (job_id or event.job_id).encode(),
            b"event": wire.seal(data, key) if seal else data}


@pytest.mark.asyncio(loop_scope="module")
async def test_forged_events_neither_answer_nor_fail_a_job(transport):
    request, fut = await pending_job(transport)
    refused = transport.refused
    forged = [event_fields(JobFailed(request.id, "x", "forged"), seal=False),
              event_fields(JobFailed(request.id, "x", "forged"), key=b"wrong-key-wrong-key"),
              event_fields(JobFailed("0123456789ab", "x", "forged"), job_id=request.id),
              {b"worker": b"evil", b"job_id": request.id.encode(), b"event": b"\x80\x04N."}]
    for fields in forged:
        await transport._on_entry(fields)
    assert not fut.done() and transport.refused == refused + len(forged)
    real = Result(request.id, faces=(as_face(np.zeros((2, 3))),))
    await transport._on_entry(event_fields(real))
    assert fut.done() and isinstance(fut.result(), Result)


@pytest.mark.asyncio(loop_scope="module")
async def test_a_result_ref_may_name_only_that_jobs_own_key(transport):
    request, fut = await pending_job(transport)
    await transport.r.set(f"{PREFIX}:precious", b"keep me")
    await transport.r.set("elsewhere:result:x", b"keep me too")
    for ref in (f"{PREFIX}:precious", "elsewhere:result:x", f"{PREFIX}:result:0123456789ab"):
        await transport._on_entry({b"worker": b"evil", b"job_id": request.id.encode(), b"ref": ref.encode()})
    assert await transport.r.get(f"{PREFIX}:precious") == b"keep me"
    assert await transport.r.get("elsewhere:result:x") == b"keep me too"
    assert not fut.done()
    own = transport.k["result"].format(request.id)
    await transport.r.set(own, wire.seal(wire.dumps(Result(request.id)), KEY))
    await transport._on_entry({b"worker": b"w", b"job_id": request.id.encode(), b"ref": own.encode()})
    assert isinstance(fut.result(), Result) and await transport.r.get(own) is None


@pytest.mark.asyncio(loop_scope="module")
async def test_events_for_jobs_we_did_not_send_are_not_even_read(transport):
    transport.pending.clear()
    key = f"{PREFIX}:result:abcdefabcdef"
    await transport.r.set(key, b"x")
    await transport._on_entry({b"worker": b"evil", b"job_id": b"abcdefabcdef", b"ref": key.encode()})
    assert await transport.r.get(key) == b"x"
    await asyncio.sleep(0)
