"""The Redis wire under attack, against a real redis-server: a worker and the bot's transport
take only sealed, well-formed entries. Unsealed, forged, stale, moved and mis-addressed
job entries go to the dead-letter stream without answering anyone; poison and undecodable
entries whose seal opened fail their job once, with one sentence; the worker keeps
serving. Forged or mis-keyed events and heartbeats change nothing, a replayed job runs
once, a rogue consumer holds nothing, oversized entries are set aside unread, and nothing
in Redis (or a dump of it) is readable without the secret."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from engine.protocol import JobFailed, ProjectRequest, RandomRequest, Result, as_face, wire
from engine.protocol.redis_keys import GROUP, MAX_DELIVERIES, beat_context, event_context, job_context, stop_context
from tests.redis_helpers import SECRET

pytestmark = [pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="redis-server is not installed (.ci/run installs Debian's redis-server)")]
KEY = SECRET.encode()
PREFIX = "hostile"


@pytest.fixture(scope="module")
def worker(redis_server, tiny_model):
    from engine.jobs.engine import Engine
    from engine.serving.redis_worker import RedisLink, RedisWorker

    w = RedisWorker(RedisLink(redis_server.url, KEY, PREFIX, claim_idle=0.001), Engine(tiny_model), "w-test")
    w.ensure_group()
    yield w
    w.stop()


REPLY = f"{PREFIX}:events:test"


_next_ms = [int(time.time() * 1000)]


def next_id() -> str:
    _next_ms[0] = max(_next_ms[0] + 1, int(time.time() * 1000))
    return f"{_next_ms[0]}-0"


def job_entry(request=None, *, seal=True, key=KEY, when=None, job_id=None, reply=REPLY, entry_id=None,
              stream=f"{PREFIX}:jobs:") -> tuple[str, dict]:
    """An entry id and the fields a bot would add under it (sealed for that id, unless told otherwise)."""
    request = request or RandomRequest(seed=5)
    entry_id = entry_id or next_id()
    data = wire.dumps(request)
    job_id = request.id if job_id is None else job_id
    context = job_context(stream, entry_id, request.id, reply)
    return entry_id, {
        "job_id": job_id,
        "reply": reply,
        "job": wire.seal(data, key, context, now=when) if seal else data,
    }


def add(worker, entry) -> bytes:
    entry_id, fields = entry
    return worker.r.xadd(worker.stream, fields, id=entry_id)


def replies(worker) -> list:
    got = worker.r.xrange(REPLY)
    worker.r.delete(REPLY)
    return [
        wire.loads(
            wire.unseal(f[b"event"], KEY, 60, event_context(REPLY, f[b"job_id"].decode(), f[b"worker"].decode()))
        )
        for _, f in got
    ]


def drain(*workers) -> None:
    """Let the workers take and run every entry they will take (until three quiet rounds)."""
    quiet = 0
    for _ in range(80):
        moved = False
        for w in workers:
            entry = w.take(block=None)
            if entry is not None:
                w.handle(*entry)
                moved = True
            while w.jobs().busy():  # what the job asked for (its faces drawn) is done at the next step
                w.jobs().step()
        quiet = 0 if moved else quiet + 1
        if quiet == 3:
            return
        time.sleep(0.01 * (not moved))  # a claim needs the entry idle for at least a millisecond


def run_one(worker, entry) -> None:
    add(worker, entry)
    drain(worker)


def test_a_sealed_job_runs(worker):
    request = RandomRequest(seed=5)
    run_one(worker, job_entry(request, stream=worker.stream))
    events = replies(worker)
    assert isinstance(events[-1], Result) and events[-1].job_id == request.id


@pytest.mark.parametrize("case", ["unsigned", "wrong key", "stale", "id mismatch", "moved", "other reply", "garbage"])
def test_unsealed_job_entries_go_to_the_dead_letters_and_answer_nobody(worker, case):
    request = RandomRequest(seed=6)
    s = worker.stream
    entry_id, fields = {
        "unsigned": lambda: job_entry(request, seal=False, stream=s),
        "wrong key": lambda: job_entry(request, key=b"not-the-secret-at-all", stream=s),
        "stale": lambda: job_entry(request, when=time.time() - 3 * 3600, stream=s),
        "id mismatch": lambda: job_entry(request, job_id="0123456789ab", stream=s),  # another member's job id
        "moved": lambda: (next_id(), job_entry(request, stream=s)[1]),  # a copy added under another id
        "other reply": lambda: (lambda e: (e[0], {**e[1], "reply": f"{PREFIX}:events:attacker"}))(
            job_entry(request, stream=s)
        ),
        "garbage": lambda: (
            next_id(),
            {"job_id": request.id, "reply": REPLY, "job": b"\x80\x04cos\nsystem\n(S'echo pwned'\ntR."},
        ),
    }[case]()
    dead_before = worker.r.xlen(worker.k["dead"])
    run_one(worker, (entry_id, fields))
    assert worker.r.xlen(worker.k["dead"]) == dead_before + 1
    assert worker.r.xlen(worker.stream) == 0, "the entry left the job stream"
    assert replies(worker) == [] and not worker.r.exists(f"{PREFIX}:events:attacker"), (
        "nothing unsealed makes a worker answer"
    )
    test_a_sealed_job_runs(worker)  # still serving


def test_a_sealed_entry_that_does_not_decode_fails_its_job_once(worker):
    entry_id, job_id = next_id(), "0123456789ab"
    junk = b"\x83\xa4type\xadRandomRequest\xa1v\x01\xa4body\x81\xa2id\xc0"  # a request whose id is nil
    fields = {
        "job_id": job_id,
        "reply": REPLY,
        "job": wire.seal(junk, KEY, job_context(worker.stream, entry_id, job_id, REPLY)),
    }
    run_one(worker, (entry_id, fields))
    failed = [e for e in replies(worker) if isinstance(e, JobFailed)]
    assert len(failed) == 1 and failed[0].job_id == job_id and failed[0].message == "That request could not be read."


@pytest.mark.parametrize(
    "fields",
    [
        {"job_id": "", "reply": REPLY, "job": b""},
        {"reply": REPLY, "job": b"x"},
        {"job_id": "abcdefabcdef", "reply": f"{PREFIX}:workers", "job": b"x"},  # a reply 'stream' that is another key
        {"job_id": "abcdefabcdef", "reply": "elsewhere:events:x", "job": b"x"},
        {"job_id": "abcdefabcdef", "job": b"x"},
    ],
)
def test_entries_with_bad_fields_are_set_aside_without_writing_anywhere(worker, fields):
    worker.r.sadd(f"{PREFIX}:workers", "w-test")
    before = {k: worker.r.type(k) for k in worker.r.keys("*")}
    dead_before = worker.r.xlen(worker.k["dead"])
    run_one(worker, (next_id(), fields))
    assert worker.r.xlen(worker.k["dead"]) == dead_before + 1
    after = {k: worker.r.type(k) for k in worker.r.keys("*")}
    assert {k: t for k, t in after.items() if k != worker.k["dead"].encode()} == {
        k: t for k, t in before.items() if k != worker.k["dead"].encode()
    }, "nothing else was written"
    test_a_sealed_job_runs(worker)


def test_a_poison_job_is_set_aside_after_its_deliveries(worker):
    request = RandomRequest(seed=8)
    entry_id = add(worker, job_entry(request, stream=worker.stream))
    worker.r.xreadgroup(GROUP, "ghost", {worker.stream: ">"}, count=1)  # taken by a worker that then died…
    for _ in range(MAX_DELIVERIES):  # …again and again
        worker.r.xclaim(worker.stream, GROUP, "ghost", 0, [entry_id])
    time.sleep(0.05)  # idle past the worker's claim time
    entry = worker.take(block=None)
    assert entry is not None and entry[2] > MAX_DELIVERIES
    worker.handle(*entry)
    dead = worker.r.xrange(worker.k["dead"])[-1][1]
    assert dead[b"job_id"] == request.id.encode() and b"delivered" in dead[b"reason"]
    failed = [e for e in replies(worker) if isinstance(e, JobFailed)]
    assert len(failed) == 1 and "set aside" in failed[0].message


def test_only_a_sealed_stop_key_for_that_very_job_stops_it(worker):
    job, other = "0123456789ab", "ba9876543210"
    key = worker.k["stop"].format
    cases = {
        b"forged": False,
        wire.seal(job.encode(), b"not-the-secret-at-all", stop_context(job)): False,
        wire.seal(other.encode(), KEY, stop_context(other)): False,  # a real stop key, copied onto another job
        wire.seal(job.encode(), KEY, stop_context(job), now=time.time() - 3 * 3600): False,  # stale
        wire.seal(job.encode(), KEY): False,  # sealed for no stop
        wire.seal(job.encode(), KEY, stop_context(job)): True,
    }
    for value, stops in cases.items():
        worker.r.set(key(job), value)
        assert worker._stopped([job, other]) == ([job] if stops else []), value[:20]
    worker.r.delete(key(job))
    request = RandomRequest(seed=9)
    worker.r.set(key(request.id), wire.seal(request.id.encode(), KEY, stop_context(request.id)))
    run_one(worker, job_entry(request, stream=worker.stream))  # stopped before a worker took it: it never runs
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


def event_fields(transport, event, job_id=None, key=KEY, seal=True, worker="w", reply=None) -> dict:
    data = wire.dumps(event)
    job_id = job_id or event.job_id
    context = event_context(reply or transport.reply_stream, job_id, worker)
    return {
        b"worker": worker.encode(),
        b"job_id": job_id.encode(),
        b"event": wire.seal(data, key, context) if seal else data,
    }


@pytest.mark.asyncio(loop_scope="module")
async def test_forged_events_neither_answer_nor_fail_a_job(transport):
    request, fut = await pending_job(transport)
    refused = transport.refused
    failed = JobFailed(request.id, "x", "forged")
    forged = [
        event_fields(transport, failed, seal=False),
        event_fields(transport, failed, key=b"wrong-key-wrong-key"),
        event_fields(transport, JobFailed("0123456789ab", "x", "forged"), job_id=request.id),
        event_fields(transport, failed, reply=f"{PREFIX}:events:another-bot"),  # moved from another bot's stream
        {**event_fields(transport, failed), b"worker": b"evil"},  # another worker's name on it
        {b"worker": b"evil", b"job_id": request.id.encode(), b"event": b"\x80\x04N."},
    ]
    for fields in forged:
        await transport._on_entry(fields)
    assert not fut.done() and transport.refused == refused + len(forged)
    real = Result(request.id, faces=(as_face(np.zeros((2, 3))),))
    await transport._on_entry(event_fields(transport, real))
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
    await transport._on_entry({b"worker": b"evil", b"job_id": request.id.encode(), b"ref": own.encode()})
    assert not fut.done(), "a reference to a result nobody stored fails nothing: the job waits for its own answer"
    await transport.r.set(
        own, wire.seal(wire.dumps(Result(request.id)), KEY, event_context(transport.reply_stream, request.id, "w"))
    )
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


# --- replay, rogue consumers, oversized entries, secrecy ------------------------------------------


def results_for(worker, job_id: str) -> int:
    return sum(isinstance(e, Result) and e.job_id == job_id for e in replies(worker))


@pytest.fixture()
def second_worker(redis_server, tiny_model, worker):
    from engine.serving.redis_worker import RedisLink, RedisWorker

    w = RedisWorker(RedisLink(redis_server.url, KEY, PREFIX, claim_idle=0.001), worker.engine, "w-two", batch=4)
    worker.batch = 4
    yield w
    worker.batch = 1
    w.stop()


def test_a_replayed_job_runs_once_whoever_deletes_markers(worker, second_worker):
    """The original entry and four copies of its fields (added again, as an attacker without the
    secret can), then the done marker deleted and three more copies: two batching workers run it once."""
    request = RandomRequest(seed=11)
    entry_id, fields = job_entry(request, stream=worker.stream)
    add(worker, (entry_id, fields))
    for _ in range(4):
        worker.r.xadd(worker.stream, fields)
    worker.beat(), second_worker.beat()
    drain(worker, second_worker)
    worker.r.delete(worker.k["done"].format(request.id))
    for _ in range(3):
        worker.r.xadd(worker.stream, fields)
    drain(second_worker, worker)
    assert results_for(worker, request.id) == 1
    assert worker.r.xlen(worker.stream) == 0


def test_a_done_marker_written_first_silences_nothing(worker):
    """Someone without the secret marks a job done before any worker takes it: it still runs."""
    request = RandomRequest(seed=12)
    worker.r.set(worker.k["done"].format(request.id), b"w-test")
    add(worker, job_entry(request, stream=worker.stream))
    drain(worker)
    assert results_for(worker, request.id) == 1


def test_a_rogue_consumer_that_never_acknowledges_holds_nothing(worker):
    """A consumer in the workers' group takes three jobs, never acknowledges them and keeps
    refreshing their idle time; the worker (claim_idle 30 s here) still answers all three."""
    worker.claim_idle, worker.last_reclaim = 30.0, 0.0
    try:
        requests = [RandomRequest(seed=20 + i) for i in range(3)]
        for r in requests:
            add(worker, job_entry(r, stream=worker.stream))
        taken = worker.r.xreadgroup(GROUP, "rogue", {worker.stream: ">"}, count=3)
        ids = [e for e, _ in taken[0][1]]
        worker.r.xclaim(worker.stream, GROUP, "rogue", 0, ids, justid=True)  # idle time back to 0
        worker.beat()
        drain(worker)
        answered = {e.job_id for e in replies(worker) if isinstance(e, Result)}
        assert answered == {r.id for r in requests}
    finally:
        worker.claim_idle = 0.001


def test_an_oversized_job_entry_goes_to_the_dead_letters_unread(worker):
    import tracemalloc

    big = {"job_id": "0123456789ab", "reply": REPLY, "job": b"\0" * (100 * 2**20)}
    worker.r.xadd(worker.stream, big, id=next_id())
    del big
    dead_before = worker.r.xlen(worker.k["dead"])
    tracemalloc.start()
    try:
        assert worker.take(block=None) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"{peak / 2**20:.0f} MiB loaded"
    assert (
        worker.r.xlen(worker.k["dead"]) == dead_before + 1
        and b"oversized" in worker.r.xrange(worker.k["dead"])[-1][1][b"reason"]
    )
    assert worker.r.xlen(worker.stream) == 0
    test_a_sealed_job_runs(worker)


def test_without_the_secret_nothing_in_redis_or_its_dump_is_readable(worker, redis_server):
    """A selfie waiting in the job stream and a face waiting in a reply stream: no key, field or
    RDB dump taken meanwhile holds the photo's bytes or anything msgpack decodes to a message."""
    import msgpack

    photo = bytes(range(256)) * 200
    add(worker, job_entry(ProjectRequest(image=photo), stream=worker.stream))
    face = as_face(np.arange(20, dtype=np.float32).reshape(2, 10))
    event = Result("abcdefabcdef", faces=(face,))
    worker.emit(REPLY, event)
    worker.beat()
    values = []
    for key in worker.r.keys("*"):
        kind = worker.r.type(key)
        if kind == b"stream":
            values += [v for _, f in worker.r.xrange(key) for v in f.values()]
        elif kind == b"string":
            values.append(worker.r.get(key))
    worker.r.save()
    dump = list(Path(redis_server.tmp).glob("*.rdb"))
    assert dump, "SAVE wrote a dump"
    values.append(dump[0].read_bytes())
    for value in values:
        assert photo[:200] not in value and face.ws.tobytes()[:40] not in value
        for start in range(0, min(len(value), 64)):
            try:
                doc = msgpack.unpackb(value[start:], raw=False)
            except Exception:  # noqa: BLE001 (not msgpack at this offset, whatever the error)
                continue
            assert not (isinstance(doc, dict) and "body" in doc), "a message readable without the secret"
    worker.r.delete(worker.stream, REPLY)
    worker.r.xgroup_create(worker.stream, GROUP, id="0", mkstream=True)


@pytest.mark.asyncio(loop_scope="module")
async def test_a_forged_heartbeat_changes_nothing(transport):
    """Unsealed, wrongly keyed and moved heartbeats (one claiming an 'evil' model) are not workers."""
    import json

    good = {
        "id": "evil",
        "model_id": "evil",
        "resolution": 32,
        "num_ws": 8,
        "w_dim": 32,
        "directions": [],
        "device": "cpu",
        "pid": 1,
        "host": "h",
        "jobs_done": 0,
        "busy": False,
        "up_seconds": 1.0,
    }
    raw = json.dumps(good).encode()
    key = transport.k["worker"].format("evil")
    for value in (
        raw,
        wire.seal(raw, b"wrong-key-wrong-key", beat_context(key)),
        wire.seal(raw, KEY, beat_context(transport.k["worker"].format("other"))),
    ):
        await transport.r.set(key, value)
        await transport.r.sadd(transport.k["workers"], "evil")
        await asyncio.sleep(transport.poll * 3)
        assert "evil" not in transport.workers and (transport.info is None or transport.info.model_id != "evil")
    await transport.r.set(key, wire.seal(raw, KEY, beat_context(key), now=time.time() - 120))  # replayed, old
    await transport.r.sadd(transport.k["workers"], "evil")
    await asyncio.sleep(transport.poll * 3)
    assert "evil" not in transport.workers, "an old heartbeat replayed keeps no dead worker alive"
    await transport.r.set(key, wire.seal(raw, KEY, beat_context(key)))  # the real thing is heard
    await asyncio.sleep(transport.poll * 3)
    assert "evil" in transport.workers
    await transport.r.delete(key)


@pytest.mark.asyncio(loop_scope="module")
async def test_oversized_reply_entries_are_refused_unread_and_a_real_answer_still_comes(transport):
    import tracemalloc

    request, fut = await pending_job(transport)
    refused = transport.refused
    tracemalloc.start()
    try:
        await transport.r.setrange(
            f"{PREFIX}:blob", 300 * 2**20 - 1, b"x"
        )  # built inside Redis: none of it comes through here
        for _ in range(3):
            await transport.r.eval(
                "redis.call('XADD', KEYS[1], '*', 'worker', 'evil', 'job_id', ARGV[1], 'event', "
                "redis.call('GET', KEYS[2]))",
                2,
                transport.reply_stream,
                f"{PREFIX}:blob",
                request.id,
            )
        await transport.r.delete(f"{PREFIX}:blob")
        await transport.r.xadd(transport.reply_stream, event_fields(transport, Result(request.id)))
        await asyncio.wait_for(fut, 10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(fut.result(), Result) and transport.refused == refused + 3
    assert peak < 8 * 2**20, f"{peak / 2**20:.0f} MiB"  # three 300 MiB entries, none loaded
    assert await transport.r.xlen(transport.reply_stream) == 0, "what was read is gone"


@pytest.mark.asyncio(loop_scope="module")
async def test_jobs_nobody_starts_cannot_hold_the_queue_for_good(transport):
    """Entries a consumer took and never ran: the jobs the bot waits on end after twice the job
    timeout (never started), their entries are deleted, and the queue has room again."""
    transport.pending.clear()
    transport.workers = {"w": {"model_id": "m"}}
    transport.redis_up, timeout, size = True, transport.job_timeout, transport.queue_size
    transport.job_timeout, transport.queue_size = 0.3, 2
    try:
        futures = [transport._book(RandomRequest(seed=40 + i), None) for i in range(2)]
        assert transport.full()
        results = await asyncio.wait_for(asyncio.gather(*futures), 10)
        assert all(isinstance(r, JobFailed) and "far too long" in r.message for r in results)
        assert not transport.full()
    finally:
        transport.job_timeout, transport.queue_size = timeout, size
        transport.workers = {}


@pytest.mark.asyncio(loop_scope="module")
async def test_an_entry_at_the_largest_id_blocks_neither_stream(transport, worker):
    """Someone without the secret adds an entry at the largest possible id to the job stream
    (a worker takes it: the group has then 'delivered' everything) and to the bot's reply
    stream: the next job is still sent, taken, run and answered."""
    largest = "18446744073709551615-18446744073709551615"
    await transport.r.xadd(worker.stream, {"job": b"x"}, id=largest)
    await transport.r.xadd(transport.reply_stream, {"worker": b"evil"}, id=largest)
    drain(worker)  # the forged entry is taken and set aside: the group's last id is the largest
    request = RandomRequest(seed=13)
    transport.pending.clear()
    fut = transport._book(request, None)
    await transport._send(request, worker.stream[len(f"{PREFIX}:jobs:"):])
    assert not fut.done(), "sent, not failed"
    drain(worker)
    assert isinstance(await asyncio.wait_for(fut, 30), Result)
