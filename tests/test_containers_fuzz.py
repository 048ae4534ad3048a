"""The metadata walk never raises: truncated and mutated EXIF/TIFF blocks in every container
(PNG eXIf, JPEG APP1, WebP EXIF) and cut or flipped containers give bytes and an orientation."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from engine.face.containers import exif_orientation, strip_metadata


def tiff(order: str = "<", orientation: int = 6) -> bytes:
    head = (b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "I", 8)
    entry = struct.pack(order + "HHIHH", 0x0112, 3, 1, orientation, 0)
    return head + struct.pack(order + "H", 1) + entry + b"\x00\x00\x00\x00"


def png(exif: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"eXIf", exif)
            + chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00")) + chunk(b"IEND", b""))


def jpeg(exif: bytes) -> bytes:
    app1 = b"Exif\x00\x00" + exif
    return b"\xff\xd8" + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + b"\xff\xda\x00\x02\x00\xff\xd9"


def webp(exif: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return kind + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) % 2 else b"")

    body = chunk(b"VP8X", bytes([0x08, 0, 0, 0]) + b"\x00" * 6) + chunk(b"VP8L", b"\x2f" + b"\x00" * 4)
    body += chunk(b"EXIF", exif)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


CONTAINERS = {"PNG": png, "JPEG": jpeg, "WEBP": webp}


def test_a_whole_exif_block_gives_its_orientation():
    assert exif_orientation(tiff("<", 6)) == 6 and exif_orientation(tiff(">", 3)) == 3


def cut_and_mutated(whole: bytes, seed: int, count: int = 300) -> list[bytes]:
    """Every prefix of ``whole`` (the empty one and ``whole`` included), then ``count`` copies
    with a few random bytes changed."""
    rng = np.random.default_rng(seed)
    out = [whole[:n] for n in range(len(whole) + 1)]
    for _ in range(count):
        b = bytearray(whole)
        for i in rng.integers(0, len(b), rng.integers(1, 8)):
            b[i] = int(rng.integers(0, 256))
        out.append(bytes(b))
    return out


@pytest.mark.parametrize("fmt", sorted(CONTAINERS))
def test_truncated_and_mutated_exif_never_raises(fmt):
    for block in cut_and_mutated(tiff(), 0):  # "II*\0" with nothing after it included
        assert 1 <= exif_orientation(block) <= 8
        data, orientation = strip_metadata(CONTAINERS[fmt](block), fmt)
        assert isinstance(data, bytes) and 1 <= orientation <= 8


@pytest.mark.parametrize("fmt", sorted(CONTAINERS))
def test_cut_and_flipped_containers_never_raise(fmt):
    for data in cut_and_mutated(CONTAINERS[fmt](tiff()), 1):
        out, orientation = strip_metadata(data, fmt)
        assert isinstance(out, bytes) and 1 <= orientation <= 8
