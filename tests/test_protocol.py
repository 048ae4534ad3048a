"""The protocol between bot and engine: every request round-trips the data-only wire; a
hostile corpus of wire bytes (generated here) is refused with one sentence inside a child
whose memory and CPU are capped; seals refuse forgeries and replays; the bot's and the
CLI's option ranges are the protocol's bounds; the bot imports no engine code but the
protocol, and no module imports in a cycle."""

from __future__ import annotations

import ast
import json
import pickle
import random
import struct
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import msgpack
import numpy as np
import pytest

from engine.protocol import (
    REQUESTS,
    AverageRequest,
    BlendRequest,
    EditRequest,
    FacesRequest,
    File,
    GridRequest,
    JobFailed,
    LookalikeRequest,
    LoopRequest,
    MixRequest,
    MorphRequest,
    Progress,
    ProjectRequest,
    RandomRequest,
    RenderRequest,
    Result,
    Started,
    StrangerRequest,
    SwapRequest,
    TeamRequest,
    WorkerReady,
    as_face,
    wire,
)

REPO = Path(__file__).resolve().parents[1]
FACE = as_face(np.arange(20, dtype=np.float32).reshape(2, 10) / 7, np.linspace(-1, 1, 33))


def every_message():
    f = FACE
    return [
        ProjectRequest(image=b"\xff\xd8jpeg", steps=12, encoder=False, face=2),
        RenderRequest(face=f),
        BlendRequest(a=f, b=as_face(f.ws * 2), ratio=-1.5, layers="2-3"),
        AverageRequest(faces=(f, f, f)),
        MixRequest(coarse=f, fine=f, split=3),
        SwapRequest(a=f, b=f),
        EditRequest(face=f, direction="age", amount=-2.5, strip=True),
        MorphRequest(faces=(f, f), frames=30, format="mp4"),
        LoopRequest(face=f, frames=8, layers="fine", seed=4),
        RandomRequest(seed=2**32 - 1, truncation=0.25),
        GridRequest(a=f, b=f, c=f, size=3),
        FacesRequest(image=b"png"),
        TeamRequest(image=b"jpeg", steps=5, frames=16, format="mp4"),
        LookalikeRequest(face=f, others=(f, f)),
        StrangerRequest(face=f, seconds=6.5, seed=3),
        StrangerRequest(image=b"photo", seconds=10.0),
        Progress("abcdefabcdef", 3, 10, "step 3/10", b"\x89PNG"),
        Result(
            "abcdefabcdef", (File("a.png", b"123", "x"),), (f, as_face(f.ws)), "m1", {"psnr": 30.5, "l": [1, 2.5]}, "hi"
        ),
        Result("abcdefabcdef", (File("faces.png", b"png", "numbered"),), figures={"faces": 3}, text="3", choose=3),
        Started("abcdefabcdef"),
        JobFailed("abcdefabcdef", "bad_argument", "No.", "trace"),
        WorkerReady("w1", "m1", 64, 10, 256, ("age", "smile"), "cpu", 42),
    ]


def same(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if hasattr(a, "__dataclass_fields__"):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in fields(a))
    return a == b


@pytest.mark.parametrize("message", every_message(), ids=lambda m: type(m).__name__)
def test_every_message_round_trips_the_wire_exactly(message):
    data = wire.dumps(message)
    assert same(wire.loads(data), message)
    if hasattr(message, "validate"):
        message.validate()


def test_every_wire_message_has_a_sample():
    assert {type(m) for m in every_message()} == set(wire.MESSAGES.values())


def test_every_request_kind_is_on_the_wire_and_has_a_cost():
    from bot.limits import DEFAULT_COSTS

    assert {type(m).kind for m in every_message() if hasattr(type(m), "kind")} == set(REQUESTS)
    assert set(DEFAULT_COSTS) == set(REQUESTS), "every kind has a cost in projection-equivalents"


def envelope(type_name: str, body: dict, **extra) -> bytes:
    return msgpack.packb({"type": type_name, "v": 1, "body": body, **extra}, use_bin_type=True)


def array(dtype="<f4", shape=(2, 10), data=None):
    return {"dtype": dtype, "shape": list(shape), "data": data if data is not None else b"\0" * 80}


def hostile_corpus() -> list[bytes]:
    """Wire bytes an attacker with write access to the transport might send."""
    good = wire.dumps(BlendRequest(a=FACE, b=FACE))
    face = {"ws": array(), "noise": None}
    cases = [
        # pickles, including an object array whose element pointers are attacker bytes
        pickle.dumps(np.array([1, "x"], dtype=object)),
        b"\x80\x04cos\nsystem\n(S'echo pwned'\ntR.",
        b"\x80\x05\x95" + bytes(range(256)) * 2,
        # envelopes that are not ours
        msgpack.packb([1, 2, 3]),
        msgpack.packb({"type": "Job"}),
        envelope("Job", {}),
        envelope("os.system", {}),
        envelope("RandomRequest", {}, extra=1),
        msgpack.packb({"type": "RandomRequest", "v": 2, "body": {}}),
        envelope("RandomRequest", {"seed": 1, "evil": 2}),
        envelope("RandomRequest", []),
        envelope("RenderRequest", {}),  # a missing field
        # ids and fields of the wrong type (a None or list id used to kill the worker)
        envelope("RandomRequest", {"id": None}),
        envelope("RandomRequest", {"id": [1, 2]}),
        envelope("RandomRequest", {"seed": "1"}),
        envelope("RandomRequest", {"seed": True}),
        envelope("RandomRequest", {"truncation": [0.5]}),
        envelope("ProjectRequest", {"image": "not bytes"}),
        # arrays: object, complex, datetime and big-endian dtypes, forged shapes and strides
        *[
            envelope("RenderRequest", {"face": {"ws": array(d), "noise": None}})
            for d in ("|O", "<c8", "<M8[s]", ">f4", "<f8", "O")
        ],
        envelope("RenderRequest", {"face": {"ws": array(shape=(10**8,), data=b"\0" * 4), "noise": None}}),
        envelope("RenderRequest", {"face": {"ws": array(shape=(2**40, 2**40), data=b""), "noise": None}}),
        envelope("RenderRequest", {"face": {"ws": array(shape=(-1, 20)), "noise": None}}),
        envelope("RenderRequest", {"face": {"ws": array(shape=(1, 1, 1, 1, 80)), "noise": None}}),
        envelope("RenderRequest", {"face": {"ws": array(shape=(True, 80)), "noise": None}}),
        envelope("RenderRequest", {"face": {"ws": {**array(), "strides": [0, 0]}, "noise": None}}),
        envelope("RenderRequest", {"face": {"ws": array(data="x" * 80), "noise": None}}),
        envelope("RenderRequest", {"face": {**face, "code": "print(1)"}}),
        envelope("AverageRequest", {"faces": [face] * 5000}),
        envelope("Result", {"job_id": "a", "figures": {"x": {"nested": 1}}}),
        envelope("Result", {"job_id": "a", "figures": {"x": [[1]]}}),
        # msgpack that lies about its sizes, nests deeply, or is simply too big
        b"\xdf\xff\xff\xff\xff",
        b"\xdd\xff\xff\xff\xff",
        b"\xc6\xff\xff\xff\xff" + b"\0" * 10,
        b"\x91" * 100_000 + b"\xc0",
        b"\xd4\x01\x00",
        b"\xc7\x10\x05" + b"\0" * 16,
        envelope("ProjectRequest", {"image": b"\0" * (wire.MAX_MESSAGE_BYTES + 1)}),
        b"",
        b"\xc0",
        good[:-1],
        good + b"\0",
        # amplification: 16 MiB of nested empty lists and maps would be ~1 GB of Python objects
        b"\xdc\x10\x00" + (b"\xdc\x10\x00" + b"\x90" * 4096) * 4096,
        b"\xdc\x10\x00" + (b"\xde\x08\x00" + b"".join(b"\xa4%04x\x80" % i for i in range(2048))) * 4096,
        envelope("Result", {"job_id": "a", "files": [[[]] * 4000] * 4000}),
    ]
    return cases + [good[:i] for i in range(1, len(good), 97)]


def fuzz_corpus() -> list[bytes]:
    """Bit flips of a good message and plain noise: refused or decoded, never a crash."""
    rng = random.Random(7)
    good = wire.dumps(BlendRequest(a=FACE, b=FACE))
    cases = []
    for _ in range(300):  # bit flips of a good message and plain noise
        flipped = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        cases.append(bytes(flipped))
        cases.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))))
    return cases


CHILD = r"""
import json, resource, sys, time
import msgpack
resource.setrlimit(resource.RLIMIT_AS, (1536 * 2**20, 1536 * 2**20))
resource.setrlimit(resource.RLIMIT_CPU, (120, 120))
from engine.protocol import wire
cases = msgpack.unpackb(sys.stdin.buffer.read(), max_bin_len=2**30)
out = []
t0 = time.process_time()
for data in cases:
    try:
        obj = wire.loads(data)
        out.append(["decoded", type(obj).__name__])
    except wire.WireError as exc:
        out.append(["refused", str(exc)])
    except Exception as exc:
        out.append(["crash", f"{type(exc).__name__}: {exc}"[:300]])
# this image's own peak
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"outcomes": out, "cpu": time.process_time() - t0, "max_rss_mb": peak / 1024}))
"""


def test_hostile_wire_bytes_are_refused_in_bounded_memory_and_cpu():
    named = hostile_corpus()
    corpus = named + fuzz_corpus()
    assert len(named) > 50 and len(corpus) > 600
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        input=msgpack.packb(corpus, use_bin_type=True),
        capture_output=True,
        cwd=REPO,
        timeout=300,
        env={"OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin"},
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    report = json.loads(done.stdout)
    crashes = [(i, o) for i, o in enumerate(report["outcomes"]) if o[0] == "crash"]
    assert not crashes, crashes[:5]
    outcomes = report["outcomes"][: len(named)]
    assert all(kind == "refused" for kind, _ in outcomes), [(i, o) for i, o in enumerate(outcomes) if o[0] != "refused"]
    for kind, text in report["outcomes"]:
        if kind == "refused":
            assert "\n" not in text and text.endswith(".") and len(text) < 200, text
    assert report["max_rss_mb"] < 1024 and report["cpu"] < 60, report


def test_decoded_arrays_are_plain_writable_copies():
    got = wire.loads(wire.dumps(RenderRequest(face=FACE)))
    assert got.face.ws.flags.writeable and got.face.ws.flags.owndata and got.face.ws.dtype == np.dtype("<f4")


def test_a_seal_refuses_forged_unsigned_moved_stale_and_future_messages():
    payload = wire.dumps(RandomRequest(seed=1))
    key = b"k" * 32
    sealed = wire.seal(payload, key, b"job|s|1-1", now=1000.0)
    assert wire.unseal(sealed, key, 60, b"job|s|1-1", now=1030.0) == payload
    forged, restamped = bytearray(sealed), bytearray(sealed)
    forged[-1] ^= 1
    restamped[4:12] = struct.pack(">d", 1001.0)
    cases = {
        "forged payload": bytes(forged),
        "restamped": bytes(restamped),
        "unsigned": payload,
        "empty": b"",
        "wrong key": wire.seal(payload, b"x" * 32, b"job|s|1-1", now=1000.0),
        "moved": wire.seal(payload, key, b"job|s|2-1", now=1000.0),
        "no context": wire.seal(payload, key, now=1000.0),
        "stale": sealed,
        "future": wire.seal(payload, key, b"job|s|1-1", now=5000.0),
        "nan time": wire.seal(payload, key, b"job|s|1-1", now=float("nan")),
    }
    for name, data in cases.items():
        with pytest.raises(wire.WireError):
            wire.unseal(data, key, 60, b"job|s|1-1", now=1000.0 if name not in ("stale",) else 2000.0)


def test_a_sealed_message_hides_what_it_carries():
    """Without the key nothing of a sealed selfie or face can be read: no msgpack, no photo bytes."""
    photo = bytes(range(256)) * 64
    sealed = wire.seal(wire.dumps(ProjectRequest(image=photo)), b"k" * 32)
    assert photo[:64] not in sealed and b"ProjectRequest" not in sealed and b"image" not in sealed
    with pytest.raises(Exception):
        msgpack.unpackb(sealed[wire.SEAL_OVERHEAD - 16 :])
    assert wire.seal(b"same", b"k" * 32, now=1.0) != wire.seal(b"same", b"k" * 32, now=1.0), "a fresh nonce each time"


def test_the_bots_option_ranges_are_the_protocols_bounds():
    import discord
    from discord import app_commands

    from bot.commands import blend, edit, morph, project

    tree = app_commands.CommandTree(discord.Client(intents=discord.Intents.none()))
    for module in (blend, edit, morph, project):
        module.register(tree, None)

    def bounds(command: str, option: str):
        param = next(p for p in tree.get_command(command).parameters if p.name == option)
        return param.min_value, param.max_value

    assert bounds("blend", "ratio") == BlendRequest.RATIO
    assert bounds("mix", "split") == bounds("swap", "split") == MixRequest.SPLIT
    assert bounds("age", "amount") == bounds("edit", "amount") == EditRequest.AMOUNT
    assert bounds("morph", "frames") == MorphRequest.FRAMES
    assert bounds("project", "steps") == ProjectRequest.STEPS
    assert bounds("random", "truncation") == RandomRequest.TRUNCATION


def test_the_clis_option_ranges_are_the_protocols_bounds():
    import typer

    from engine.cli.commands import app

    cli = typer.main.get_command(app)

    def bounds(command: str, option: str):
        param = next(p for p in cli.commands[command].params if p.name == option)
        rng = getattr(param, "type", param)  # click keeps the range on the type; typer ≥ 0.2x on the option
        return rng.min, rng.max

    assert bounds("blend", "ratio") == BlendRequest.RATIO
    assert bounds("mix", "split") == bounds("swap", "split") == MixRequest.SPLIT
    assert bounds("edit", "amount") == EditRequest.AMOUNT
    assert bounds("morph", "frames") == MorphRequest.FRAMES
    assert bounds("project", "steps") == ProjectRequest.STEPS
    assert bounds("grid", "size") == GridRequest.SIZE


IMPORT_ALL = r"""
import importlib, json, pkgutil, sys
import {package}
for m in pkgutil.walk_packages({package}.__path__, "{package}."):
    importlib.import_module(m.name)
print(json.dumps(sorted(sys.modules)))
"""


def imported_by_all_of(package: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL.format(package=package)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return set(json.loads(done.stdout))


def test_the_bot_imports_neither_torch_nor_any_engine_module_but_the_protocol():
    modules = imported_by_all_of("bot")
    assert "torch" not in modules
    engine = {m for m in modules if m == "engine" or m.startswith("engine.")}
    assert engine <= {"engine", "engine.protocol"} | {m for m in engine if m.startswith("engine.protocol.")}, engine


def test_the_engine_never_imports_discord():
    assert not {m for m in imported_by_all_of("engine") if m == "discord" or m.startswith("discord.")}


def import_graph() -> dict[str, set[str]]:
    """Every import between our modules: module level, inside a function, or under TYPE_CHECKING
    (a cycle a type checker sees is still a cycle in the design)."""
    graph = {}
    for path in [*REPO.glob("bot/**/*.py"), *REPO.glob("engine/**/*.py")]:
        rel = path.relative_to(REPO).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        tree = ast.parse(path.read_text())
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.add(node.module)
                deps |= {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {d for d in deps if d.split(".")[0] in ("bot", "engine")}
    return {k: {d for d in v if d in graph and d != k} for k, v in graph.items()}


def test_no_modules_import_each_other_in_a_cycle():
    graph = import_graph()
    assert "bot.transport.local" in graph and "engine.protocol.wire" in graph
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                raise AssertionError(
                    "import cycle: " + " -> ".join(path[path.index(dep) :] + [dep])
                    if dep in path
                    else f"import cycle through {dep}"
                )
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_bot_reaches_the_engine_only_through_the_protocol_and_its_entry_point():
    """Counting imports inside functions too: bot/ names no engine module but engine.protocol
    (the contract) and engine.cli.entry (the declared entry point)."""
    graph = import_graph()
    crossing = {
        (m, d)
        for m, deps in graph.items()
        if m.startswith("bot")
        for d in deps
        if d.startswith("engine") and d != "engine" and not d.startswith(("engine.protocol", "engine.cli.entry"))
    }
    assert not crossing, sorted(crossing)
    assert any(d == "engine.cli.entry" for m, deps in graph.items() if m.startswith("bot") for d in deps)


ENGINE_LAYERS = ("protocol", "model", "face", "latent", "jobs", "serving", "cli")  # each imports only those before it


def test_the_engine_is_a_map_whose_imports_only_point_down():
    """engine/ holds at most 8 entries (its packages and __init__), and no module imports one
    of a layer above its own (function-level and TYPE_CHECKING imports counted)."""
    entries = [p.name for p in (REPO / "engine").iterdir() if p.name != "__pycache__"]
    assert len(entries) <= 8 and set(ENGINE_LAYERS) <= set(entries), entries
    graph = import_graph()
    layer = {
        name: ENGINE_LAYERS.index(name.split(".")[1])
        for name in graph
        if name.startswith("engine.") and name.split(".")[1] in ENGINE_LAYERS
    }
    upward = sorted((m, d) for m in layer for d in graph[m] if d in layer and layer[d] > layer[m])
    assert not upward, upward
