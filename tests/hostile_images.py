"""Generated metadata bombs and impossible shapes in every format a member may send.

Each builder is parameterised (tag count, region size, chunk kind) so the corpus covers
more than one layout: a decoder that copies a region once per EXIF tag, a compressed ICC
profile or text chunk that inflates, XMP packets, and headers whose sides no face fits.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from tests.photos import encode, grace_hopper


def tiff_bomb(tags: int, region: int, order: str = "<", orientation: int | None = None) -> bytes:
    """An EXIF (TIFF) block with one IFD of ``tags`` UNDEFINED entries all pointing at the
    same ``region`` bytes: a parser that copies each entry's data makes ``tags`` copies."""
    magic = b"II*\x00" if order == "<" else b"MM\x00*"
    entries = ([struct.pack(order + "HHI", 0x0112, 3, 1) + struct.pack(order + "HH", orientation, 0)]
               if orientation else [])
    data_at = 8 + 2 + 12 * (tags + len(entries)) + 4
    entries += [struct.pack(order + "HHII", 0x200 + k, 7, region, data_at) for k in range(tags)]
    ifd = struct.pack(order + "H", len(entries)) + b"".join(entries) + struct.pack(order + "I", 0)
    return magic + struct.pack(order + "I", 8) + ifd + b"\x00" * region


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def with_png_chunks(png: bytes, *chunks: bytes) -> bytes:
    """``png`` with ``chunks`` inserted after its IHDR (where metadata sits)."""
    at = 8 + 12 + 13
    return png[:at] + b"".join(chunks) + png[at:]


def with_webp_chunk(webp_rgb: Image.Image, kind: bytes, payload: bytes, flag: int) -> bytes:
    """An extended (VP8X) WebP of the image carrying ``payload`` in a ``kind`` chunk."""
    plain = encode(webp_rgb, "WEBP", lossless=True)
    body = plain[12:]
    w, h = webp_rgb.size
    vp8x = (
        b"VP8X"
        + struct.pack("<I", 10)
        + bytes([flag, 0, 0, 0])
        + (w - 1).to_bytes(3, "little")
        + (h - 1).to_bytes(3, "little")
    )
    extra = kind + struct.pack("<I", len(payload)) + payload + (b"\x00" if len(payload) & 1 else b"")
    chunks = vp8x + body + extra
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


def with_jpeg_segments(jpeg: bytes, *segments: tuple[int, bytes]) -> bytes:
    """``jpeg`` with ``(marker, payload)`` segments inserted after its SOI."""
    out = b"".join(b"\xff" + bytes([m]) + struct.pack(">H", len(p) + 2) + p for m, p in segments)
    return jpeg[:2] + out + jpeg[2:]


def with_gif_blocks(gif: bytes, *blocks: bytes) -> bytes:
    """``gif`` with extension ``blocks`` inserted before its first block."""
    flags = gif[10]
    at = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    return gif[:at] + b"".join(blocks) + gif[at:]


def gif_extension(label: int, payload: bytes, head: bytes = b"") -> bytes:
    """A GIF extension block: ``head`` (an application's own block) then ``payload`` in 255-byte pieces."""
    pieces = b"".join(bytes([len(payload[k : k + 255])]) + payload[k : k + 255] for k in range(0, len(payload), 255))
    return b"\x21" + bytes([label]) + (bytes([len(head)]) + head if head else b"") + pieces + b"\x00"


def metadata_bombs() -> list[tuple[str, bytes]]:
    face = Image.fromarray(grace_hopper()).resize((128, 150))
    png, jpeg = encode(face, "PNG"), encode(face, "JPEG", quality=85)
    cases: list[tuple[str, bytes]] = []
    for tags, region in ((3000, 330_000), (30_000, 24), (600, 1_600_000)):
        bomb = tiff_bomb(tags, region)
        cases.append((f"PNG eXIf {tags} tags x {region} B", with_png_chunks(png, png_chunk(b"eXIf", bomb))))
        cases.append((f"WebP EXIF {tags} tags x {region} B", with_webp_chunk(face, b"EXIF", bomb, 0x08)))
    cases.append(("PNG eXIf big-endian", with_png_chunks(png, png_chunk(b"eXIf", tiff_bomb(2000, 400_000, ">")))))
    cases.append(
        ("JPEG APP1 5000 tags x 4 KB", with_jpeg_segments(jpeg, (0xE1, b"Exif\x00\x00" + tiff_bomb(4000, 15_000))))
    )
    cases.append(
        ("JPEG APP1 x 150", with_jpeg_segments(jpeg, *[(0xE1, b"Exif\x00\x00" + tiff_bomb(5000, 5000))] * 150))
    )
    inflating = zlib.compress(b"\x00" * 200_000_000, 9)  # 0.2 MB that inflates to 200 MB
    cases += [
        ("PNG iCCP bomb", with_png_chunks(png, png_chunk(b"iCCP", b"icc\x00\x00" + inflating))),
        ("PNG zTXt bomb", with_png_chunks(png, *[png_chunk(b"zTXt", b"k\x00\x00" + inflating)] * 4)),
        (
            "PNG iTXt compressed XMP",
            with_png_chunks(png, png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x01\x00\x00\x00" + inflating)),
        ),
        ("PNG 3000 tEXt", with_png_chunks(png, *[png_chunk(b"tEXt", b"k\x00" + b"v" * 3000)] * 3000)),
        ("WebP ICCP 9 MB", with_webp_chunk(face, b"ICCP", b"\x00" * 9_000_000, 0x20)),
        ("WebP XMP 9 MB", with_webp_chunk(face, b"XMP ", b"<x:xmpmeta " + b"a" * 9_000_000, 0x04)),
        (
            "JPEG APP2 ICC x 150",
            with_jpeg_segments(
                jpeg, *[(0xE2, b"ICC_PROFILE\x00" + bytes([k % 255 + 1, 150]) + b"\x00" * 60_000) for k in range(150)]
            ),
        ),
        ("JPEG COM x 150", with_jpeg_segments(jpeg, *[(0xFE, b"c" * 65_000)] * 150)),
    ]
    gif = encode(face, "GIF")
    cases += [
        ("GIF comment 9 MB", with_gif_blocks(gif, gif_extension(0xFE, b"c" * 9_000_000))),
        ("GIF 4000 comments", with_gif_blocks(gif, *[gif_extension(0xFE, b"c" * 2000)] * 4000)),
        ("GIF XMP 9 MB", with_gif_blocks(gif, gif_extension(0xFF, b"x" * 9_000_000, b"XMP DataXMP"))),
    ]
    for w, h in ((8, 5_000_000), (5_000_000, 8), (16, 2_500_000), (39, 600), (2000, 200), (3, 3)):
        header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        cases.append(
            (
                f"thin {w}x{h}",
                b"\x89PNG\r\n\x1a\n"
                + header
                + png_chunk(b"IDAT", zlib.compress(b"\x00" * (min(w, h) * 3 + 1) * max(w, h), 9))
                + png_chunk(b"IEND", b""),
            )
        )
    return cases


def honest_orientations() -> list[tuple[str, bytes, tuple[int, int]]]:
    """Honest photos stored sideways with an EXIF orientation, and the upright shape expected."""
    face = Image.fromarray(grace_hopper()).resize((128, 150))
    out = []
    for orientation, stored in (
        (6, face.rotate(90, expand=True)),
        (8, face.rotate(-90, expand=True)),
        (3, face.rotate(180)),
    ):
        exif = tiff_bomb(0, 0, orientation=orientation)
        out.append((f"JPEG orientation {orientation}", encode(stored, "JPEG", exif=b"Exif\x00\x00" + exif), (150, 128)))
        out.append(
            (
                f"PNG orientation {orientation}",
                with_png_chunks(encode(stored, "PNG"), png_chunk(b"eXIf", exif)),
                (150, 128),
            )
        )
        out.append((f"WebP orientation {orientation}", with_webp_chunk(stored, b"EXIF", exif, 0x08), (150, 128)))
    return out


def np_face() -> np.ndarray:
    return np.asarray(Image.fromarray(grace_hopper()).resize((128, 150)))


def round_four() -> list[tuple[str, bytes]]:
    """Uploads that cost CPU or memory the first bounds did not count: scans behind stuffed zeros,
    marker floods, a photo tiled with faint faces, large lossy and animated WebP."""
    jpeg = encode(np.asarray(Image.fromarray(grace_hopper()).resize((64, 75))), "JPEG")
    empty_scan = b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00"
    tile = np.asarray(Image.fromarray(grace_hopper()[40:330, 120:390]).resize((48, 48)), np.float32)
    faint = np.tile(128 + 0.1 * (tile - 128), (21, 21, 1)).astype(np.uint8)  # 441 faces at a tenth of their contrast
    webps = []
    for megapixels in (40, 16):  # the pixel limit, and WebP's own (the largest accepted)
        side = int((megapixels * 10**6) ** 0.5) - 1
        noise = np.random.default_rng(4).integers(0, 256, (side // 8, side // 8, 4), dtype=np.uint8)
        big_rgba = Image.fromarray(noise, "RGBA").resize((side, side), Image.Resampling.NEAREST)
        webp, anim = io.BytesIO(), io.BytesIO()
        big_rgba.save(webp, "WEBP", quality=10, method=0)
        frames = [Image.new("RGBA", (side, side), (i * 40, 0, 0, 255)) for i in range(3)]
        frames[0].save(anim, "WEBP", save_all=True, append_images=frames[1:], quality=1, method=0)
        webps += [(f"lossy {megapixels}-MP RGBA webp", webp.getvalue()),
                  (f"animated {megapixels}-MP webp", anim.getvalue())]
    return webps + [
        ("jpeg scans behind stuffed zeros", jpeg[:-2] + (b"\xff\xfe\x00\x02\xff\x00\x00\x0c" + empty_scan) * 3000
         + b"\xff\xd9"),
        ("jpeg fill flood", jpeg[:2] + b"\xff" * 8_000_000 + jpeg[2:]),
        ("jpeg empty DQT flood", jpeg[:2] + b"\xff\xdb\x00\x02" * 2_000_000 + jpeg[2:]),
        ("faint faces tiled", encode(faint)),
    ]
