"""The two real face photos available offline, and helpers to make hostile variants."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


def grace_hopper() -> np.ndarray:
    import matplotlib

    path = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    return np.asarray(Image.open(path).convert("RGB"))


def encode(arr_or_img, fmt: str = "PNG", **kw) -> bytes:
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


GROUP_SIZES = (220, 196, 172, 150, 130, 112)  # crop sides: face 1 is the largest, face 6 the smallest


def group_photo() -> tuple[np.ndarray, list[str]]:
    """A six-person "group photo" made of the offline faces (mirrored and tinted so each is
    distinct) at six sizes on a grey wall; and what each face is, left to right."""
    from engine.face.align import detect_faces

    sources = {"astronaut": astronaut(), "grace_hopper": grace_hopper()}
    crops = {}
    for name, img in sources.items():
        left, top, right, bottom = detect_faces(img)[0].box
        cx, cy, half = (left + right) // 2, (top + bottom) // 2, (right - left)
        crops[name] = img[max(0, cy - half):cy + half, max(0, cx - half):cx + half]
    people = [
        ("astronaut", lambda a: a),
        ("grace_hopper", lambda a: a),
        ("astronaut mirrored", lambda a: a[:, ::-1]),
        ("grace_hopper mirrored", lambda a: a[:, ::-1]),
        ("astronaut grey", lambda a: a.mean(2, keepdims=True).repeat(3, 2)),
        ("grace_hopper warm", lambda a: np.clip(a * [1.1, 1.0, 0.85], 0, 255)),
    ]
    canvas = np.full((520, 1400, 3), 128, np.uint8)
    x = 20
    for (label, change), side in zip(people, GROUP_SIZES):
        face = np.asarray(
            Image.fromarray(np.uint8(change(crops[label.split()[0]]))).resize((side, side), Image.Resampling.LANCZOS)
        )
        y = 40 + (GROUP_SIZES[0] - side) // 2
        canvas[y : y + side, x : x + side] = face
        x += side + 30
    return canvas, [label for label, _ in people]
