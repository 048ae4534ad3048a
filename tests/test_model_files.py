"""Hostile model files, generated here: every one is refused with one sentence (or, for a
harmless mutation, loads), in a child whose memory and CPU are capped, with nothing from
any file executed; NaN weights and absurd architectures are refused before allocation."""

from __future__ import annotations

import json
import os
import pickle
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.model.checkpoints import save_native
from engine.model.networks import Generator, GeneratorConfig

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "stylegan2"
CONFIG = dict(resolution=16, z_dim=8, w_dim=8, mapping_layers=1, channels={4: 8, 8: 8, 16: 8})


class Boom:
    """Pickles as a call to os.system: a file built from it must never run it."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def native_cases(d: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(**CONFIG))
    good = d / "good.safetensors"
    save_native(G, good)
    raw = good.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = json.loads(header["__metadata__"]["wspace"])
    cases: dict[str, bytes] = {
        f"truncated at {k}": raw[:k] for k in (0, 4, 8, 20, 8 + n // 2, 8 + n, len(raw) // 2, len(raw) - 1)
    }
    cases["header length 2**60"] = struct.pack("<Q", 2**60) + raw[8:]
    cases["header not json"] = struct.pack("<Q", 5) + b"{{{{{" + raw[8 + n :]

    def with_meta(m) -> bytes:
        h = dict(header, __metadata__={"wspace": m if isinstance(m, str) else json.dumps(m)})
        body = json.dumps(h).encode()
        body += b" " * (-len(body) % 8)
        return struct.pack("<Q", len(body)) + body + raw[8 + n :]

    for label, change in {
        "meta not json": "{",
        "meta a list": [1, 2],
        "no config": {"model_id": "x"},
        "resolution 2**20": {"resolution": 2**20},
        "resolution 48": {"resolution": 48},
        "channels of a billion": {"channels": {str(r): 10**9 for r in (4, 8, 16)}},
        "z_dim as text": {"z_dim": "big"},
        "mapping layers 1000": {"mapping_layers": 1000},
        "w_dim 0": {"w_dim": 0},
        "negative channels": {"channels": {"4": -8, "8": 8, "16": 8}},
        "too many parameters": {"resolution": 1024, "channels": {}, "w_dim": 2048, "mapping_layers": 16},
        "nan lr mul": {"mapping_lr_mul": float("nan")},
        "unknown key": {"evil": 1},
    }.items():
        m = (
            change
            if not isinstance(change, dict) or "model_id" in change
            else {**meta, "config": {**meta["config"], **change}}
        )
        cases[f"meta: {label}"] = with_meta(json.dumps(m, allow_nan=True) if isinstance(m, dict) else m)
    cases["meta: model id of 10 000 characters"] = with_meta({**meta, "model_id": "a" * 10_000})
    cases["meta: provenance a list"] = with_meta({**meta, "provenance": [1]})
    out = {}
    for label, data in cases.items():
        p = d / f"native_{len(out)}.safetensors"
        p.write_bytes(data)
        out[label] = p
    state = {k: v.clone() for k, v in G.state_dict().items()}
    for label, edit in {
        "NaN weights": lambda s: s["synthesis.b8.conv0.weight"].fill_(float("nan")),
        "infinite w_avg": lambda s: s["mapping.w_avg"].fill_(float("inf")),
        "a missing tensor": lambda s: s.pop("synthesis.b16.torgb.bias"),
        "an extra tensor": lambda s: s.__setitem__("evil", torch.zeros(3)),
        "a wrongly shaped tensor": lambda s: s.__setitem__("synthesis.b8.conv0.weight", torch.zeros(8, 8, 5, 5)),
    }.items():
        s = {k: v.clone() for k, v in state.items()}
        edit(s)
        p = d / f"native_{len(out)}.safetensors"
        from safetensors.torch import save_file

        save_file(s, str(p), metadata={"wspace": json.dumps(meta)})
        out[label] = p
    out["a directory"] = d / "dir.safetensors"
    out["a directory"].mkdir()
    big = d / "huge.safetensors"
    with big.open("wb") as f:
        f.truncate(3 * 2**30)  # sparse: nothing is written
    out["3 GiB"] = big
    (d / "empty.pt").write_bytes(b"")
    out["empty .pt"] = d / "empty.pt"
    (d / "x.onnx").write_bytes(b"x")
    out["unknown suffix"] = d / "x.onnx"
    return out


def torch_zip(d: Path, label: str, obj) -> Path:
    p = d / f"pt_{abs(hash(label)) % 10**8}.pt"
    torch.save(obj, p)
    return p


def rosinality_cases(d: Path) -> dict[str, Path]:
    import argparse

    out = {
        "code in the pickle": torch_zip(d, "boom", {"g_ema": {"x": torch.zeros(1)}, "evil": Boom()}),
        "an argparse namespace": torch_zip(d, "ns", {"g_ema": {}, "args": argparse.Namespace(a=1)}),
        "no g_ema": torch_zip(d, "none", {"g": {}}),
        "g_ema a list": torch_zip(d, "list", {"g_ema": [1, 2]}),
        "g_ema of numbers": torch_zip(d, "nums", {"g_ema": {"style.1.weight": 3}}),
        "a bare tensor": torch_zip(d, "t", torch.zeros(3)),
        "a stride-0 tensor declaring 10 GB": torch_zip(
            d, "stride0", {"g_ema": {"style.1.weight": torch.zeros(1).expand(2_500_000_000)}}
        ),
        "deflated members": deflated_pt(d, "deflated", 0),
        "a deflate-bombed storage (1 GiB in ~1 MB)": deflated_pt(d, "bomb", 2**30),
    }
    (d / "notzip.pt").write_bytes(b"PK\x03\x04" + bytes(200))
    out["not a zip"] = d / "notzip.pt"
    fixture = FIXTURES / "rosinality_tiny.pt"
    if fixture.exists():
        raw = fixture.read_bytes()
        for k in (100, len(raw) // 3, len(raw) - 10):
            (d / f"rt{k}.pt").write_bytes(raw[:k])
            out[f"fixture truncated at {k}"] = d / f"rt{k}.pt"
        ck = torch.load(fixture, weights_only=True)
        nan = {
            **ck,
            "g_ema": {
                k: (v.clone().fill_(float("nan")) if k == "style.1.weight" else v) for k, v in ck["g_ema"].items()
            },
        }
        out["fixture with NaN"] = torch_zip(d, "nan", nan)
        shapes = {
            **ck,
            "g_ema": {k: (torch.zeros(3, 3) if k == "convs.0.conv.weight" else v) for k, v in ck["g_ema"].items()},
        }
        out["fixture with a wrong shape"] = torch_zip(d, "shape", shapes)
        dropped = {**ck, "g_ema": {k: v for k, v in ck["g_ema"].items() if k != "to_rgbs.0.bias"}}
        out["fixture missing a tensor"] = torch_zip(d, "drop", dropped)
    return out


def ada_pickle(meta_tree) -> bytes:
    """A pickle that rebuilds ``meta_tree`` the way NVIDIA's persistence module does (its
    records through ``torch_utils.persistence._reconstruct_persistent_obj``), written here
    with a stand-in module so no NVIDIA code is needed."""
    import types

    saved = {k: sys.modules.get(k) for k in ("torch_utils", "torch_utils.persistence")}
    pkg, mod = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        raise AssertionError("never called here")

    _reconstruct_persistent_obj.__module__ = mod.__name__
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mod._reconstruct_persistent_obj, pkg.persistence = _reconstruct_persistent_obj, mod
    sys.modules.update({"torch_utils": pkg, "torch_utils.persistence": mod})

    class Record:
        def __init__(self, class_name, state):
            self.meta = {"type": "class", "class_name": class_name, "state": state, "module_src": ""}

        def __reduce__(self):
            return (_reconstruct_persistent_obj, (self.meta,))

    try:
        return pickle.dumps(meta_tree(Record), protocol=4)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def twice_per_level(Record, depth: int = 40):
    """A module tree naming one child twice at every level: 2**40 paths over 40 records."""
    node = Record("Leaf", {"_parameters": {"w": torch.zeros(2)}, "_modules": {}})
    for _ in range(depth):
        node = Record("Node", {"_parameters": {}, "_modules": {"a": node, "b": node}})
    return {"G_ema": Record("Generator", {"_modules": {"synthesis": node, "mapping": node}, "c_dim": 0})}


def stride_zero(Record):
    """A parameter whose view declares 10 GB over a 4-byte storage (stride 0)."""
    huge = torch.zeros(1).expand(2_500_000_000)
    return {"G_ema": Record("Generator", {"_parameters": {"w": huge}, "_modules": {}, "c_dim": 0})}


class HugeView:
    """Pickles as a tensor view whose sizes are 16 integers of 2 500 digits each: multiplying
    them out before any bound costs time that grows with their length."""

    def __reduce__(self):
        import warnings

        big = 10**2500
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TypedStorage is deprecated; it is what a snapshot holds
            storage = torch.zeros(4).storage()
        return (torch._utils._rebuild_tensor_v2, (storage, 0, (big,) * 16, (1,) * 16))


class DeflatedStorage:
    """Pickles as a tensor storage saved in torch's zip format with a deflated 256 MiB member."""

    def __reduce__(self):
        import io
        import zipfile

        buf = io.BytesIO()
        torch.save(torch.zeros(4).untyped_storage(), buf)
        src, out = zipfile.ZipFile(io.BytesIO(buf.getvalue())), io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in src.infolist():
                dst.writestr(info.filename, src.read(info))
            dst.writestr(src.namelist()[0].split("/")[0] + "/data/9", bytes(256 * 2**20))
        return (torch.storage._load_from_bytes, (out.getvalue(),))


def minimal_ada(Record, bias_gain=0.01, weight=None):
    """The smallest tree the ada importer walks to its numbers (a 4-px generator)."""
    conv1 = Record("SynthesisLayer", {"_parameters": {"weight": torch.zeros(8, 8, 3, 3) if weight is None else weight},
                                      "_modules": {}, "conv_clamp": None})
    b4 = Record("SynthesisBlock", {"architecture": "skip", "_parameters": {}, "_modules": {"conv1": conv1}})
    synthesis = Record("SynthesisNetwork", {"block_resolutions": [4], "_parameters": {}, "_modules": {"b4": b4}})
    fc0 = Record("FullyConnectedLayer", {"bias_gain": bias_gain, "_parameters": {}, "_modules": {}})
    mapping = Record("MappingNetwork", {"num_layers": 1, "_parameters": {}, "_modules": {"fc0": fc0}})
    return {"G_ema": Record("Generator", {"c_dim": 0, "img_resolution": 4, "z_dim": 8, "w_dim": 8, "img_channels": 3,
                                          "_parameters": {}, "_modules": {"synthesis": synthesis, "mapping": mapping}})}


# BUILD on an allowlisted function: would set safe_pickle._rebuild_parameter.__defaults__ = ()
BUILD_ON_A_FUNCTION = (
    b"\x80\x02}X\x05\x00\x00\x00G_emactorch._utils\n_rebuild_parameter\nN}X\x0c\x00\x00\x00__defaults__)s\x86bs."
)


def deflated_pt(d: Path, label: str, bomb_bytes: int) -> Path:
    """A torch zip whose members are deflated, one of them ``bomb_bytes`` of zeros."""
    import zipfile

    plain = torch_zip(d, label + " plain", {"g_ema": {"style.1.weight": torch.zeros(4)}})
    out = d / f"deflated_{abs(hash(label)) % 10**8}.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        prefix = src.namelist()[0].split("/")[0]
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
        if bomb_bytes:
            with dst.open(f"{prefix}/data/9", "w", force_zip64=True) as f:
                chunk = bytes(2**24)
                for _ in range(bomb_bytes // len(chunk)):
                    f.write(chunk)
    return out


def ada_cases(d: Path) -> dict[str, Path]:
    out = {}
    for label, data in (
        ("module tree naming one child twice per level, 40 deep", ada_pickle(twice_per_level)),
        (
            "module tree naming one child twice per level, 22 deep",
            ada_pickle(lambda Record: twice_per_level(Record, 22)),
        ),
        ("a stride-0 parameter declaring 10 GB", ada_pickle(stride_zero)),
        ("BUILD on an allowlisted function", BUILD_ON_A_FUNCTION),
        ("a view sized by huge integers", ada_pickle(lambda Record: minimal_ada(Record, weight=HugeView()))),
        ("a deflated storage (256 MiB in ~256 KB)",
         ada_pickle(lambda Record: minimal_ada(Record, weight=DeflatedStorage()))),
        ("complex weights", ada_pickle(lambda Record: minimal_ada(Record, weight=torch.zeros(8, 8, 3, 3,
                                                                                             dtype=torch.complex64)))),
        ("bias_gain 10**400", ada_pickle(lambda Record: minimal_ada(Record, bias_gain=10**400))),
    ):
        path = d / f"r3_{abs(hash(label)) % 10**8}.pkl"
        path.write_bytes(data)
        out[label] = path
    (d / "boom.pkl").write_bytes(pickle.dumps({"G_ema": Boom()}))
    out["code in the pickle"] = d / "boom.pkl"
    (d / "dict.pkl").write_bytes(pickle.dumps({"G_ema": {"a": 1}}))
    out["G_ema a dict"] = d / "dict.pkl"
    (d / "deep.pkl").write_bytes(b"\x80\x02" + b"]" * 100_000 + b".")
    out["deep nesting"] = d / "deep.pkl"
    fixture = FIXTURES / "ada_tiny.pkl"
    if fixture.exists():
        raw = fixture.read_bytes()
        rng = random.Random(3)
        for k in (10, len(raw) // 2, len(raw) - 2):
            (d / f"at{k}.pkl").write_bytes(raw[:k])
            out[f"fixture truncated at {k}"] = d / f"at{k}.pkl"
        for i in range(40):
            flipped = bytearray(raw)
            for _ in range(rng.randint(1, 6)):
                flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            (d / f"af{i}.pkl").write_bytes(bytes(flipped))
            out[f"fixture with flipped bytes #{i}"] = d / f"af{i}.pkl"
    return out


OWN_CASES = 55  # the hostile files written from scratch; ../shared's fixtures add their damaged copies


CHILD = r"""
import json, os, resource, subprocess, sys
resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))
resource.setrlimit(resource.RLIMIT_CPU, (300, 300))
called = []
def sentinel(*a, **k):
    called.append(repr(a)[:80])
    raise RuntimeError("sentinel")
os.system = os.popen = os.execv = subprocess.Popen = sentinel
from engine.model.checkpoints import CheckpointError, load_generator
from engine.model import safe_pickle
defaults = safe_pickle._rebuild_parameter.__defaults__
out = {}
for label, path in json.load(sys.stdin).items():
    try:
        G = load_generator(path)
        out[label] = ["loaded", G.model_id]
    except CheckpointError as exc:
        out[label] = ["refused", str(exc)]
    except Exception as exc:
        out[label] = ["crash", f"{type(exc).__name__}: {exc}"[:300]]
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"outcomes": out, "called": called, "peak_mb": peak / 1024,
                  "loader_unchanged": safe_pickle._rebuild_parameter.__defaults__ == defaults}))
"""


def test_hostile_model_files_are_refused_with_one_sentence(tmp_path):
    cases = {
        f"{kind}: {label}": path
        for kind, made in (
            ("native", native_cases(tmp_path)),
            ("rosinality", rosinality_cases(tmp_path)),
            ("ada", ada_cases(tmp_path)),
        )
        for label, path in made.items()
    }
    own = [k for k in cases if "fixture" not in k]  # what this test writes itself, on any checkout
    assert len(own) >= OWN_CASES
    for kind, name in (("rosinality", "rosinality_tiny.pt"), ("ada", "ada_tiny.pkl")):
        derived = [k for k in cases if k.startswith(f"{kind}: fixture")]
        assert bool(derived) == (FIXTURES / name).exists(), f"{kind}: the reference file's variants follow the file"
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        input=json.dumps({k: str(v) for k, v in cases.items()}),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    outcomes = report["outcomes"]
    assert not report["called"] and not (tmp_path / "PWNED").exists(), "nothing in a file ran"
    crashes = {k: v for k, v in outcomes.items() if v[0] == "crash"}
    assert not crashes, crashes
    for label, (kind, text) in outcomes.items():
        if kind == "refused":
            assert "\n" not in text and len(text) < 300 and "Traceback" not in text, (label, text)
        elif not label.startswith("ada: fixture with flipped bytes"):
            pytest.fail(f"{label} loaded: {text}")
    assert report["peak_mb"] < 3000, report["peak_mb"]
    assert report["loader_unchanged"], "no pickle changed the loader's own functions"
    for label in (
        "ada: module tree naming one child twice per level, 40 deep",
        "ada: module tree naming one child twice per level, 22 deep",
        "ada: a stride-0 parameter declaring 10 GB",
        "ada: BUILD on an allowlisted function",
        "ada: a view sized by huge integers",
        "ada: a deflated storage (256 MiB in ~256 KB)",
        "ada: complex weights",
        "ada: bias_gain 10**400",
        "rosinality: a stride-0 tensor declaring 10 GB",
        "rosinality: a deflate-bombed storage (1 GiB in ~1 MB)",
        "rosinality: deflated members",
    ):
        assert outcomes[label][0] == "refused", (label, outcomes[label])


def test_a_model_with_nan_weights_is_refused_not_drawn_black(tmp_path):
    from engine.model.checkpoints import CheckpointError, load_generator

    G = Generator(GeneratorConfig(**CONFIG))
    with torch.no_grad():
        G.synthesis.b8.conv0.weight.fill_(float("nan"))
    save_native(G, tmp_path / "nan.safetensors")
    with pytest.raises(CheckpointError, match="NaN"):
        load_generator(tmp_path / "nan.safetensors")


def test_an_absurd_architecture_is_refused_before_allocation():
    with pytest.raises(ValueError, match="million parameters"):
        GeneratorConfig(
            resolution=1024, w_dim=2048, channels={r: 2048 for r in (4, 8, 16, 32, 64, 128, 256, 512, 1024)}
        )
    assert GeneratorConfig(resolution=1024).parameter_estimate() < 40 * 10**6, "FFHQ 1024 still fits"


def test_a_damaged_encoder_beside_a_model_is_one_sentence(tmp_path):
    from safetensors.torch import save_file

    from engine.model.checkpoints import CheckpointError
    from engine.model.encoder import load_encoder

    meta = {
        "config": {"resolution": 64, "num_ws": 10, "w_dim": 256, "channels": [10**6] * 5, "hidden": 512},
        "model_id": "m",
    }
    save_file({"x": torch.zeros(1)}, str(tmp_path / "e.safetensors"), metadata={"wspace-encoder": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="impossible architecture"):
        load_encoder(tmp_path / "e.safetensors", "m")
    for config, said in (
        ({"resolution": 1024, "num_ws": 32, "w_dim": 2048, "channels": [2048] * 10, "hidden": 8192},
         "million parameters"),
        ({"resolution": 64, "num_ws": 10.0, "w_dim": 256, "channels": [32, 64], "hidden": 512}, "impossible"),
        ({"resolution": 64, "num_ws": True, "w_dim": 256, "channels": [32, 64], "hidden": 512}, "impossible"),
    ):  # within each bound alone, 1.5 G parameters together: weighed before allocation; numbers must be whole
        save_file({"x": torch.zeros(1)}, str(tmp_path / "big.safetensors"),
                  metadata={"wspace-encoder": json.dumps({"config": config, "model_id": "m"})})
        with pytest.raises(CheckpointError, match=said):
            load_encoder(tmp_path / "big.safetensors", "m")
    (tmp_path / "t.safetensors").write_bytes(b"\x08" + bytes(20))
    with pytest.raises(CheckpointError, match="not an encoder"):
        load_encoder(tmp_path / "t.safetensors", "m")
    assert load_encoder(tmp_path / "absent.safetensors", "m") is None
