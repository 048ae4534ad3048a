"""Strip a photo's metadata before any decoder parses it, keeping only its orientation.

EXIF, XMP, ICC profiles and text chunks are where an upload can hide an amplifier: one
1 MB PNG whose EXIF directory holds 65 535 tags pointing at the same megabyte makes Pillow
keep a copy per tag (3 GB). None of it changes the pixels we need, so every container a
member may send is rewritten with only the parts a decoder needs (PNG: IHDR, PLTE, tRNS,
IDAT, IEND; JPEG: everything but APPn/COM segments except JFIF and Adobe; WebP: the image
chunks, with the VP8X flags made to match). The one field we honour, the EXIF orientation,
is read here by a bounded walk of IFD0 (at most ``MAX_IFD_ENTRIES`` entries, nothing
followed by offset). GIF carries no EXIF; of a GIF only the first frame and its graphic
control block are kept (Pillow joins a comment's 255-byte pieces one by one: 11 s of CPU for
a 9 MB comment).

Malformed structure is not repaired: the walk stops where the structure ends, and the
decoder then refuses the truncated file as it would any other.
"""

from __future__ import annotations

import re
import struct

MAX_IFD_ENTRIES = 512  # IFD0 of a camera photo holds ~10-30; nothing past this is read

PNG_KEEP = {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"}
JPEG_KEEP_APP = {0xE0: b"JFIF", 0xEE: b"Adobe"}  # APP0 JFIF (density), APP14 Adobe (colour transform)
WEBP_KEEP = {b"VP8X", b"VP8 ", b"VP8L", b"ALPH", b"ANIM", b"ANMF"}
VP8X_METADATA_FLAGS = 0x20 | 0x08 | 0x04  # ICC, EXIF, XMP


def exif_orientation(tiff: bytes) -> int:
    """The orientation (1-8) in the IFD0 of a TIFF-structured EXIF block; 1 when absent or malformed."""
    if tiff[:4] == b"II*\x00":
        order = "<"
    elif tiff[:4] == b"MM\x00*":
        order = ">"
    else:
        return 1
    if len(tiff) < 8:  # a header cut short: no IFD to read
        return 1
    (ifd,) = struct.unpack(order + "I", tiff[4:8])
    if ifd + 2 > len(tiff):
        return 1
    (count,) = struct.unpack(order + "H", tiff[ifd:ifd + 2])
    for k in range(min(count, MAX_IFD_ENTRIES)):
        at = ifd + 2 + 12 * k
        if at + 12 > len(tiff):
            return 1
        tag, kind, n = struct.unpack(order + "HHI", tiff[at:at + 8])
        if tag == 0x0112 and kind == 3 and n == 1:
            (value,) = struct.unpack(order + "H", tiff[at + 8:at + 10])
            return value if 1 <= value <= 8 else 1
    return 1


def _png(data: bytes) -> tuple[bytes, int]:
    out, i, orientation = [data[:8]], 8, 1
    while i + 12 <= len(data):
        (length,) = struct.unpack(">I", data[i:i + 4])
        kind, end = data[i + 4:i + 8], i + 12 + length
        if end > len(data):
            break
        if kind in PNG_KEEP:
            out.append(data[i:end])
        elif kind == b"eXIf":
            orientation = exif_orientation(data[i + 8:i + 8 + length])
        i = end
        if kind == b"IEND":
            break
    return b"".join(out), orientation


MAX_JPEG_SEGMENTS = 1024  # a camera JPEG has ~10-20 segments, a progressive one ~40; a flood has millions
_RUN = re.compile(rb"\xff++")  # a run of 0xFF (fill bytes, or a marker's prefix)
_MARKER = re.compile(rb"(?<!\xff)\xff++([^\x00])")  # between segments: FF 00 is no marker, stray bytes skipped
_SCAN_END = re.compile(rb"(?<!\xff)\xff++([^\x00\xd0-\xd7])")  # in a scan: FF 00 stuffed, FF D0-D7 restarts
_STANDALONE = frozenset((0x01, *range(0xD0, 0xD8)))  # TEM, RST0-7: no length field


def _next_marker(data: bytes, i: int, pattern: re.Pattern, passed: frozenset) -> int | None:
    """Where the next marker starts (its last 0xFF) at or after ``i``, found as libjpeg's
    ``next_marker`` finds it: runs of 0xFF are fill, a 0xFF followed by a byte in ``passed`` is
    no marker. One regular-expression search (no Python loop per byte); None at the end."""
    if i < len(data) and data[i] == 0xFF:  # a run right here (the pattern's look-behind sees the byte before i)
        end = _RUN.match(data, i).end()
        if end < len(data) and data[end] not in passed:
            return end - 1
        i = end + 1
    m = pattern.search(data, i)
    return None if m is None else m.start(1) - 1


_SCAN_PASSED = frozenset((0x00, *range(0xD0, 0xD8)))


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """The JPEG's segments after SOI as libjpeg reads them, ``(marker, start, end)``: bytes that
    are no marker between segments (stray bytes, stuffed zeros, fill) are skipped as libjpeg skips
    them; a scan (SOS) runs to the first marker outside its entropy-coded data; the walk ends at EOI
    or the data's end. At most ``MAX_JPEG_SEGMENTS + 1`` are listed (more: a flood, refused)."""
    out, i = [], 2
    while len(out) <= MAX_JPEG_SEGMENTS and (at := _next_marker(data, i, _MARKER, frozenset((0x00,)))) is not None:
        marker = data[at + 1]
        if marker == 0xD9:
            out.append((marker, at, at + 2))
            break
        if marker in _STANDALONE:
            end = at + 2
        elif at + 4 > len(data):
            break
        else:
            end = at + 2 + max(2, int.from_bytes(data[at + 2:at + 4], "big"))
            if marker == 0xDA:  # the entropy-coded data belongs to the scan
                nxt = _next_marker(data, end, _SCAN_END, _SCAN_PASSED)
                end = len(data) if nxt is None else nxt
        out.append((marker, at, min(end, len(data))))
        i = end
    return out


def _jpeg(data: bytes) -> tuple[bytes, int]:
    """SOI and the segments a decoder needs, in order; APPn and COM segments dropped (but JFIF
    and Adobe), and with them whatever libjpeg would have skipped between segments."""
    out, orientation = [data[:2]], 1
    for marker, start, end in jpeg_segments(data):
        payload = data[start + 4:end]
        if marker == 0xE1 and payload[:6] == b"Exif\x00\x00":
            orientation = exif_orientation(payload[6:])
        elif marker in _STANDALONE:
            continue
        elif not (0xE0 <= marker <= 0xEF or marker == 0xFE) or payload.startswith(
            JPEG_KEEP_APP.get(marker, b"\x00" * 99)
        ):
            out.append(data[start:end])
    return b"".join(out), orientation


def _webp(data: bytes) -> tuple[bytes, int]:
    out, i, orientation = [], 12, 1
    while i + 8 <= len(data):
        kind = data[i : i + 4]
        (length,) = struct.unpack("<I", data[i + 4 : i + 8])
        end = i + 8 + length + (length & 1)
        if i + 8 + length > len(data):
            break
        if kind == b"VP8X" and length >= 1:
            chunk = bytearray(data[i:end])
            chunk[8] &= ~VP8X_METADATA_FLAGS & 0xFF
            out.append(bytes(chunk))
        elif kind in WEBP_KEEP:
            out.append(data[i:end])
        elif kind == b"EXIF":
            payload = data[i + 8 : i + 8 + length]
            orientation = exif_orientation(payload[6:] if payload.startswith(b"Exif\x00\x00") else payload)
        i = end
    body = b"".join(out)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body, orientation


def _after_subblocks(data: bytes, i: int) -> int:
    """The index after a GIF sequence of data sub-blocks starting at ``i`` (its 0 terminator included)."""
    while i < len(data):
        n = data[i]
        i += 1 + n
        if n == 0:
            break
    return min(i, len(data))


def _gif(data: bytes) -> tuple[bytes, int]:
    if len(data) < 13:
        return data, 1
    flags = data[10]
    i = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    out = [data[:i]]
    while i + 1 < len(data):
        if data[i] == 0x21:  # an extension: only the graphic control block (transparency) is kept
            end = _after_subblocks(data, i + 2)
            if data[i + 1] == 0xF9:
                out.append(data[i:end])
            i = end
        elif data[i] == 0x2C and i + 10 <= len(data):  # the first image: kept, and nothing after it
            local = data[i + 9]
            start = i + 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1  # + the LZW code size
            out.append(data[i : _after_subblocks(data, start)])
            break
        else:
            break
    return b"".join(out) + b"\x3b", 1


def strip_metadata(data: bytes, fmt: str) -> tuple[bytes, int]:
    """``data`` (of format ``fmt``, as sniffed) without its metadata, and its EXIF orientation."""
    return {"PNG": _png, "JPEG": _jpeg, "WEBP": _webp, "GIF": _gif}[fmt](data)
