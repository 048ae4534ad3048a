"""Native format round trips; imports refuse what is not a generator; pickles never run code."""

from __future__ import annotations

import pickle
import random
import subprocess
import sys
import types

import pytest
import torch

from engine.model.checkpoints import CheckpointError, load_generator, read_native, save_native
from engine.model.networks import Generator, GeneratorConfig
from engine.model.safe_pickle import UnsafePickle, load_snapshot


def small_generator() -> Generator:
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=16, z_dim=8, w_dim=8, mapping_layers=2, channels={4: 8, 8: 8, 16: 4}))
    G.mapping.w_avg.normal_()
    return G


def test_native_round_trip_is_exact(tmp_path):
    G = small_generator()
    model_id = save_native(G, tmp_path / "g.safetensors", {"note": "test"})
    H = load_generator(tmp_path / "g.safetensors")
    assert H.model_id == model_id and H.provenance == {"note": "test"}
    for (k, a), (k2, b) in zip(G.state_dict().items(), H.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    z = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.equal(G(z), H(z))
    _, meta = read_native(tmp_path / "g.safetensors")
    assert meta["config"]["channels"] == {"4": 8, "8": 8, "16": 4}


def test_model_id_follows_the_weights(tmp_path):
    G = small_generator()
    a = save_native(G, tmp_path / "a.safetensors")
    assert save_native(G, tmp_path / "b.safetensors") == a
    G.synthesis.b4.const.data.add_(1)
    assert save_native(G, tmp_path / "c.safetensors") != a


def test_imported_fixture_converts_to_native_unchanged(tmp_path, ada_pkl):
    G = load_generator(ada_pkl)
    save_native(G, tmp_path / "ada.safetensors", G.provenance, model_id=G.model_id)
    H = load_generator(tmp_path / "ada.safetensors")
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        assert torch.equal(G(z), H(z))
    assert H.model_id == G.model_id


@pytest.mark.parametrize("name, content", [
    ("junk.safetensors", b"not safetensors"),
    ("junk.pt", b"\x00" * 64),
    ("junk.pkl", b"\x80\x04K\x01."),
    ("model.onnx", b"whatever"),
])
def test_files_that_are_not_generators_are_refused(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CheckpointError):
        load_generator(tmp_path / name)


class _RunsShell:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        import os
        return (os.system, (self.cmd,))


def test_a_pickle_that_runs_code_when_loaded_naively_is_refused(tmp_path):
    sentinel = tmp_path / "pwned"
    payload = pickle.dumps({"G_ema": _RunsShell(f"touch {sentinel}")})
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(payload)
    # Control: a naive load in another process really does run the payload.
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.load(open({str(bad)!r}, 'rb'))"], check=False)
    assert sentinel.exists(), "the crafted pickle should run code under a naive load"
    sentinel.unlink()
    with pytest.raises(CheckpointError, match="refused"):
        load_generator(bad)
    assert not sentinel.exists()


def test_persistence_module_source_is_never_executed(tmp_path, monkeypatch):
    """A torch_utils.persistence record whose module_src writes a file: read as inert data."""
    sentinel = tmp_path / "ran"
    fake = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # what the real one does: exec(module_src)
        exec(meta["module_src"], {})

    fake._reconstruct_persistent_obj = _reconstruct_persistent_obj
    monkeypatch.setitem(sys.modules, "torch_utils", types.ModuleType("torch_utils"))
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", fake)

    class Persistent:
        def __reduce__(self):
            meta = dict(type="class", version=6, class_name="Generator",
                        module_src=f"open({str(sentinel)!r}, 'w').write('x')", state={"_modules": {}})
            return (_reconstruct_persistent_obj, (meta,))

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    data = pickle.dumps({"G_ema": Persistent()})
    snapshot = load_snapshot(data)
    assert not sentinel.exists()
    assert snapshot["G_ema"].class_name == "Generator" and snapshot["G_ema"].module_src_len > 0
    path = tmp_path / "src.pkl"
    path.write_bytes(data)
    with pytest.raises(CheckpointError):
        load_generator(path)  # no parameters: not a usable generator
    assert not sentinel.exists()


@pytest.mark.parametrize("module, name", [("builtins", "eval"), ("os", "system"), ("subprocess", "Popen"),
                                          ("torch", "load"), ("numpy", "load"), ("builtins", "getattr")])
def test_unexpected_globals_are_refused(module, name):
    data = b"\x80\x04" + f"c{module}\n{name}\n".encode() + b"."
    with pytest.raises(UnsafePickle, match=f"{module}.{name}"):
        load_snapshot(data)


def mutations(data: bytes, rng: random.Random, count: int):
    """Byte flips, truncations, duplicated and deleted chunks, and spliced-in globals."""
    evil = [b"cos\nsystem\n", b"cbuiltins\nexec\n", b"csubprocess\nPopen\n", b"\x93", b"R", b"b"]
    for i in range(count):
        buf = bytearray(data)
        kind = i % 5
        if kind == 0:
            for _ in range(rng.randint(1, 8)):
                buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif kind == 1:
            del buf[rng.randrange(len(buf)):]
        elif kind == 2:
            a = rng.randrange(len(buf))
            b = min(len(buf), a + rng.randint(1, 64))
            buf[a:a] = buf[a:b] * rng.randint(1, 4)
        elif kind == 3:
            a = rng.randrange(len(buf))
            del buf[a:a + rng.randint(1, 64)]
        else:
            a = rng.randrange(len(buf))
            buf[a:a] = rng.choice(evil)
        yield bytes(buf)


def test_mutated_fixture_pickles_are_refused_or_read_never_run_never_hang(ada_pkl, monkeypatch):
    import builtins
    import os
    import signal

    load_snapshot(ada_pkl.read_bytes())  # torch's own lazy imports (which exec module code) happen here
    ran = []
    for owner, name in ((os, "system"), (os, "popen"), (os, "execv"), (subprocess, "Popen"), (builtins, "eval"),
                        (builtins, "exec")):
        monkeypatch.setattr(owner, name, lambda *a, _n=name, **k: ran.append(_n))

    def hung(signum, frame):
        raise TimeoutError("load_snapshot hung on a mutated pickle")

    previous = signal.signal(signal.SIGALRM, hung)
    outcomes = {"refused": 0, "read": 0}
    try:
        for data in mutations(ada_pkl.read_bytes(), random.Random(1234), 300):
            signal.alarm(5)
            try:
                load_snapshot(data)
                outcomes["read"] += 1
            except UnsafePickle:
                outcomes["refused"] += 1
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert ran == [], f"a mutated pickle ran {ran}"
    assert sum(outcomes.values()) == 300 and outcomes["refused"] > 150
