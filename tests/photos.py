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
