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


def _jpeg(data: bytes) -> tuple[bytes, int]:
    out, i, orientation = [data[:2]], 2, 1
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            out.append(data[i:i + 1])
            i += 1
            continue
        if marker == 0xDA or marker in (0x01, *range(0xD0, 0xDA)):  # scans and standalone markers: the rest as is
            break
        end = i + 2 + int.from_bytes(data[i + 2:i + 4], "big")
        payload = data[i + 4:end]
        if marker == 0xE1 and payload[:6] == b"Exif\x00\x00":
            orientation = exif_orientation(payload[6:])
        elif not (0xE0 <= marker <= 0xEF or marker == 0xFE) or payload.startswith(
            JPEG_KEEP_APP.get(marker, b"\x00" * 99)
        ):
            out.append(data[i:end])
        i = end
    out.append(data[i:])
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
