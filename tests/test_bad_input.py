"""A generated corpus of hostile input: every case gets one human sentence (or works),
and the engine keeps serving the next job."""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.face.align import decode_image
from engine.jobs.answers import run_job
from engine.jobs.engine import Engine
from engine.model.checkpoints import save_native
from engine.model.networks import Generator, GeneratorConfig
from engine.protocol import (
    AverageRequest,
    BlendRequest,
    EditRequest,
    GridRequest,
    JobFailed,
    LoopRequest,
    MixRequest,
    MorphRequest,
    ProjectRequest,
    RandomRequest,
    RenderRequest,
    Request,
    Result,
    SwapRequest,
    as_face,
)
from engine.protocol.errors import UserError
from tests.hostile_images import honest_orientations, metadata_bombs, np_face, round_four
from tests.photos import encode, grace_hopper

rng = random.Random(7)
GRACE = grace_hopper()
SMALL = np.asarray(Image.fromarray(GRACE).resize((64, 75)))


def png_header(w: int, h: int, depth: int = 8, color: int = 2) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def corpus() -> list[tuple[str, bytes]]:
    cases: list[tuple[str, bytes]] = [("empty", b""), ("one byte", b"\x89"), ("text", b"hello world" * 10)]
    cases += [(f"random {i}", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4000)))) for i in range(90)]
    for fmt in ("PNG", "JPEG", "WEBP", "GIF"):
        data = encode(SMALL, fmt)
        cases += [(f"{fmt} truncated at {n}", data[:n]) for n in sorted(rng.sample(range(1, len(data)), 20))]
        cases += [(f"{fmt} flipped bytes {i}", bytes(b ^ (0xFF if rng.random() < 0.01 else 0) for b in data))
                  for i in range(5)]
    cases += [
        (f"bomb {w}x{h}", png_header(w, h)) for w, h in ((30000, 30000), (100000, 1), (1, 100000), (65535, 65535))
    ]
    cases += [("1x1", encode(np.zeros((1, 1, 3), np.uint8))), ("2x2 grey", encode(np.zeros((2, 2), np.uint8)))]
    cases += [
        ("16-bit", encode(Image.fromarray((np.asarray(Image.fromarray(SMALL).convert("L")).astype(np.uint16) * 257)))),
        ("CMYK jpeg", encode(Image.fromarray(SMALL).convert("CMYK"), "JPEG")),
        ("RGBA", encode(Image.fromarray(SMALL).convert("RGBA"))),
        ("palette", encode(Image.fromarray(SMALL).convert("P"))),
        ("too many bytes", b"\xff\xd8" + b"\x00" * (10 * 1024 * 1024 + 1)),
    ]
    return cases + metadata_bombs() + largest_accepted() + round_four()


def largest_accepted() -> list[tuple[str, bytes]]:
    """Uploads at the pixel limit in the modes that cost the most to turn into RGB."""
    side = int(40_000_000**0.5) - 1
    return [
        (f"largest {mode}", encode(Image.new(mode, (side, side), fill)))
        for mode, fill in (("RGB", (90, 120, 150)), ("RGBA", (90, 120, 150, 128)), ("I;16", 3000))
    ]


CORPUS = corpus()


def test_the_corpus_is_large():
    assert len(CORPUS) >= 200


@pytest.mark.parametrize("name, data", CORPUS, ids=[c[0] for c in CORPUS])
def test_every_attachment_decodes_or_gets_one_sentence(name, data):
    try:
        arr = decode_image(data)
    except UserError as exc:
        msg = str(exc)
        assert msg and msg[0].isupper() and msg.endswith(".") and "\n" not in msg and len(msg) < 160, msg
        return
    assert arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=16, z_dim=8, w_dim=8, mapping_layers=1, channels={4: 8, 8: 8, 16: 8}))
    path = tmp_path_factory.mktemp("m") / "m.safetensors"
    save_native(G, path)
    return Engine(path)


BAD_NUMBERS = [
    float("nan"),
    float("inf"),
    -float("inf"),
    1e308,
    -1e308,
    "1e400",
    "abc",
    "",
    [1],
    {"x": 1},
    b"7",
    -1e-300j,
]


def option_corpus(engine) -> list[Request]:
    ws = as_face(np.zeros((engine.G.num_ws, engine.G.w_dim)))
    jobs = []
    for x in BAD_NUMBERS:
        jobs += [
            BlendRequest(a=ws, b=ws, ratio=x),
            RandomRequest(seed=x),
            RandomRequest(seed=1, truncation=x),
            MorphRequest(faces=(ws, ws), frames=x),
            LoopRequest(face=ws, frames=x),
            GridRequest(a=ws, b=ws, c=ws, size=x),
            MixRequest(coarse=ws, fine=ws, split=x),
            SwapRequest(a=ws, b=ws, split=x),
            ProjectRequest(image=b"x", steps=x),
            EditRequest(face=ws, direction="age", amount=x),
        ]
    jobs += [MorphRequest(faces=(ws,) * n) for n in (0, 1, 65, 500)]
    jobs += [EditRequest(face=ws, direction=d, amount=1.0) for d in ("", "x" * 10_000, "../../etc/passwd", None)]
    jobs += [
        RenderRequest(face=bad)
        for bad in (
            as_face(ws.ws[:1]),
            as_face(ws.ws.T),
            as_face(np.full_like(ws.ws, np.nan)),
            "text",
            None,
            as_face(ws.ws, np.zeros(7)),
        )
    ]
    jobs += [BlendRequest(a=ws, b=ws, layers=bad) for bad in ("toes", "", None, 3, "0-99", "5-2")]
    jobs += [AverageRequest(faces=(ws,) * n) for n in (0, 1)] + [AverageRequest(faces=[ws, ws])]
    jobs += [RandomRequest(id=bad) for bad in ("", None, "x" * 1000, "../../x")]
    jobs += [RandomRequest(max_bytes=bad) for bad in (0, -1, 10**12)]
    jobs += [MixRequest(coarse=ws, fine=ws, split=engine.G.num_ws), LoopRequest(face=ws, layers=f"0-{engine.G.num_ws}")]
    return jobs


def test_bad_options_fail_alone_with_one_sentence(engine):
    jobs = option_corpus(engine)
    assert len(jobs) >= 100
    for job in jobs:
        events = []
        run_job(engine, job, events.append)
        final = events[-1]
        assert isinstance(final, JobFailed) and final.user_error, (job, final)
        assert "\n" not in final.message and final.message.endswith(".")
    ok = []
    run_job(engine, RandomRequest(seed=1), ok.append)
    assert isinstance(ok[-1], Result)


def test_only_the_formats_members_send_reach_a_decoder():
    from PIL import Image

    from engine.face.align import decode_image
    from engine.protocol.errors import NotAnImage
    from tests.photos import grace_hopper

    img = Image.fromarray(grace_hopper()).resize((128, 128))
    for fmt in ("TIFF", "BMP", "ICO", "PPM", "TGA", "PCX", "QOI", "DDS", "JPEG2000", "EPS"):
        buf = io.BytesIO()
        try:
            img.save(buf, fmt)
        except (KeyError, OSError, ValueError):  # Pillow here cannot write it: the magic bytes will do
            buf = io.BytesIO(
                {"QOI": b"qoif", "DDS": b"DDS ", "EPS": b"%!PS-Adobe-3.0 EPSF-3.0\n"}.get(fmt, b"??") + bytes(200)
            )
        with pytest.raises(NotAnImage, match=r"^That file is not an image I can read \(PNG, JPEG, WebP or GIF\)\.$"):
            decode_image(buf.getvalue())
    for fmt in ("JPEG", "PNG", "WEBP", "GIF"):
        buf = io.BytesIO()
        img.save(buf, fmt)
        assert decode_image(buf.getvalue()).shape == (128, 128, 3), fmt


def test_a_progressive_jpeg_scan_bomb_is_refused_before_decoding():
    import time

    from PIL import Image

    from engine.face.align import MAX_JPEG_SCANS, decode_image
    from engine.face.containers import jpeg_segments
    from engine.protocol.errors import NotAnImage
    from tests.photos import grace_hopper

    buf = io.BytesIO()
    Image.fromarray(grace_hopper()).save(buf, "JPEG", progressive=True, quality=90)
    good = buf.getvalue()
    assert 1 < sum(m == 0xDA for m, _, _ in jpeg_segments(good)) <= MAX_JPEG_SCANS, "a real progressive photo passes"
    empty_scan = b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00"  # one component, no coded data
    bomb = good[:-2] + empty_scan * 100_000 + b"\xff\xd9"
    t0 = time.perf_counter()
    with pytest.raises(NotAnImage, match="scans") as refused:
        decode_image(bomb)
    assert time.perf_counter() - t0 < 5, "refused from the markers, not after decoding"
    # a crafted file costs its sender the job (repeating it is not free); an honest mistake does not
    from engine.protocol import CraftedUpload, JobFailed
    assert isinstance(refused.value, CraftedUpload)
    assert not JobFailed("j", refused.value.code, str(refused.value)).refunded
    assert JobFailed("j", NotAnImage.code, "That file is not an image.").refunded
    assert not JobFailed("j", "internal", "Sorry.").refunded and not JobFailed("j", "no_such_code", "?").refunded


def progressive_photo() -> bytes:
    from PIL import Image

    from tests.photos import grace_hopper

    buf = io.BytesIO()
    Image.fromarray(grace_hopper()).resize((96, 96)).save(buf, "JPEG", progressive=True, quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("hide", [b"\xff\x00\x00\x0c", b"\xff\x00\xff\x00\x00\x0c", b"\xff\xff\xff\x00\x00\x20"])
def test_scans_hidden_behind_stuffed_zeros_are_counted_as_libjpeg_reads_them(hide):
    import time

    from engine.face.align import decode_image
    from engine.protocol.errors import NotAnImage

    good = progressive_photo()
    empty_scan = b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00"
    com = b"\xff\xfe\x00\x02"  # an empty comment ends each scan; the walk then meets FF 00, which is no segment
    bomb = good[:-2] + (com + hide + empty_scan) * 5000 + b"\xff\xd9"
    t0 = time.perf_counter()
    with pytest.raises(NotAnImage, match="scans"):
        decode_image(bomb)
    assert time.perf_counter() - t0 < 5


def test_marker_floods_cost_no_python_loop_per_byte():
    import time

    from engine.face.align import decode_image
    from engine.protocol.errors import NotAnImage

    good = progressive_photo()
    fill = good[:2] + b"\xff" * 10_000_000 + good[2:]  # fill bytes are legal: the photo reads
    t0 = time.perf_counter()
    assert decode_image(fill, max_bytes=32 * 2**20).shape == (96, 96, 3)
    assert time.perf_counter() - t0 < 3, "fill bytes are skipped in one search"
    dqt = good[:2] + b"\xff\xdb\x00\x02" * 2_000_000 + good[2:]  # two million empty segments
    t0 = time.perf_counter()
    with pytest.raises(NotAnImage, match="segments"):
        decode_image(dqt, max_bytes=32 * 2**20)
    assert time.perf_counter() - t0 < 3, "refused after the bound, not after the walk"


def test_a_restart_marker_after_soi_hides_no_metadata():
    from engine.face.align import decode_image
    from engine.face.containers import strip_metadata

    good = progressive_photo()
    secret = b"SECRET-COMMENT"
    com = b"\xff\xfe" + (len(secret) + 2).to_bytes(2, "big") + secret
    xmp = b"http://ns.adobe.com/xap/1.0/\x00" + b"<x:xmpmeta>SECRET-XMP</x:xmpmeta>"
    app1 = b"\xff\xe1" + (len(xmp) + 2).to_bytes(2, "big") + xmp
    tricky = good[:2] + b"\xff\xd0" + com + b"\xff\x00" + app1 + good[2:]
    stripped, _ = strip_metadata(tricky, "JPEG")
    assert b"SECRET" not in stripped, "COM and XMP after a standalone marker are stripped too"
    assert decode_image(tricky).shape == (96, 96, 3)


BOUNDED_CHILD = r"""
import json, resource, sys, time
import msgpack
resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
resource.setrlimit(resource.RLIMIT_CPU, (120, 120))
from engine.face.align import decode_image, faces_in
from engine.latent.kept import KeptFaceError, load_npz
from engine.protocol.errors import UserError
images, latents, folder = msgpack.unpackb(sys.stdin.buffer.read(), max_bin_len=2**30)
out, slowest = [], 0.0
faces_in(decode_image(images[-1][1]))  # dlib's models loaded: what follows is the cost of the uploads
base = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:"))


def attempt(name, read, arg, refusal):
    global slowest
    t = time.process_time()
    try:
        read(arg)
        out.append([name, "decoded", ""])
    except refusal as exc:
        out.append([name, "refused", str(exc)])
    except Exception as exc:
        out.append([name, "crash", f"{type(exc).__name__}: {exc}"[:200]])
    slowest = max(slowest, time.process_time() - t)


for name, data in images:
    attempt(name, lambda d: faces_in(decode_image(d)), data, UserError)
for i, (name, data) in enumerate(latents):
    path = f"{folder}/{i}.npz"
    open(path, "wb").write(data)
    attempt(name, load_npz, path, KeptFaceError)
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"outcomes": out, "peak_mb": peak / 1024, "base_mb": base / 1024, "slowest_s": slowest}))
"""


def latent_corpus() -> list[tuple[str, bytes]]:
    """Latent files an attacker might hand the CLI (or a future upload), and one good one."""
    import zipfile

    def npz(**arrays) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    ws = np.zeros((10, 256), np.float32)
    good = npz(ws=ws, model_id=np.array("m"))
    cases = [("npy", encode_npy(ws)), ("empty", b""), ("not a zip", b"PK" + bytes(100))]
    cases += [(f"truncated at {n}", good[:n]) for n in (10, len(good) // 2, len(good) - 5)]
    flipped = bytearray(good)
    flipped[good.find(b"NUMPY") + 200] ^= 0xFF
    cases.append(("CRC error", bytes(flipped)))
    cases += [
        (label, npz(ws=arr, model_id=np.array("m")))
        for label, arr in (
            ("complex", ws.astype(np.complex64)),
            ("datetime", np.zeros((10, 256), "datetime64[s]")),
            ("objects", np.array([1, "x"], dtype=object)),
        )
    ]
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:  # 0.4 MB that declares 400 MB
        header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (100000000,), }".ljust(117) + b"\n"
        z.writestr("ws.npy", b"\x93NUMPY\x01\x00v\x00" + header + bytes(400_000_000))
    return cases + [("zip bomb", bomb.getvalue()), ("a good latent", good)]


def encode_npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_uploads_and_latent_files_stay_bounded_in_a_capped_child(tmp_path):
    """The image and latent corpora again, in a child under RLIMIT_AS 2 GiB and RLIMIT_CPU:
    no crash, one sentence each, bombs refused before they cost memory or time. Images that
    decode are also searched for faces: handling any accepted upload (the largest at the
    40-MP limit, metadata bombs in every format) stays within 1 GiB above the process's size."""
    import json
    import subprocess
    import sys

    import msgpack

    latents = latent_corpus()
    done = subprocess.run(
        [sys.executable, "-c", BOUNDED_CHILD],
        capture_output=True,
        timeout=600,
        input=msgpack.packb([CORPUS, latents, str(tmp_path)], use_bin_type=True),
        env={"OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin", "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    report = json.loads(done.stdout)
    crashes = [o for o in report["outcomes"] if o[1] == "crash"]
    assert not crashes, crashes[:5]
    for name, kind, text in report["outcomes"]:
        if kind == "refused":
            assert "\n" not in text and text.endswith("."), (name, text)
    by_name = {name: kind for name, kind, _ in report["outcomes"]}
    assert by_name["bomb 30000x30000"] == by_name["zip bomb"] == by_name["objects"] == "refused"
    assert by_name["a good latent"] == "decoded"
    assert by_name["jpeg scans behind stuffed zeros"] == by_name["jpeg empty DQT flood"] == "refused"
    assert by_name["lossy 40-MP RGBA webp"] == by_name["animated 40-MP webp"] == "refused"
    assert by_name["lossy 16-MP RGBA webp"] != "crash" and by_name["jpeg fill flood"] != "crash"
    bombs = [name for name, _ in metadata_bombs()]
    assert all(by_name[n] == "decoded" for n in bombs if not n.startswith("thin")), (
        "the photo under the metadata is kept"
    )
    assert all(by_name[n] == "refused" for n in bombs if n.startswith("thin"))
    assert report["peak_mb"] - report["base_mb"] < 1024 and report["slowest_s"] < 10, {
        k: v for k, v in report.items() if k != "outcomes"
    }


@pytest.mark.parametrize("name, data, shape", honest_orientations(), ids=[c[0] for c in honest_orientations()])
def test_an_honest_photo_is_still_shown_upright(name, data, shape):
    """Metadata is dropped before decoding, but the EXIF orientation of every format is honoured."""
    arr = decode_image(data)
    assert arr.shape[:2] == shape
    assert np.abs(arr.astype(float) - np_face()).mean() < 12, "the pixels are the upright photo's"
