"""Tensors to pictures: PNG bytes, montages, GIF and MP4 bytes."""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """``[N, 3, H, W]`` (or ``[3, H, W]``) in [-1, 1] -> ``[N, H, W, 3]`` uint8."""
    if img.ndim == 3:
        img = img[None]
    x = (img.detach().float().cpu().clamp(-1, 1) + 1) * 127.5
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def from_uint8(arr: np.ndarray) -> torch.Tensor:
    """``[H, W, 3]`` or ``[N, H, W, 3]`` uint8 -> ``[N, 3, H, W]`` float in [-1, 1]."""
    if arr.ndim == 3:
        arr = arr[None]
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float() / 127.5 - 1


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def upscale(arr: np.ndarray, size: int) -> np.ndarray:
    """Nearest-free, smooth upscaling of one ``[H, W, 3]`` image for display."""
    if arr.shape[0] == size:
        return arr
    return np.asarray(Image.fromarray(arr).resize((size, size), Image.Resampling.LANCZOS))


def montage(images: np.ndarray, cols: int | None = None, pad: int = 2, fill: int = 255) -> np.ndarray:
    """Lay ``[N, H, W, 3]`` images out on a grid with ``pad`` pixels between them."""
    n, h, w, c = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.full((rows * h + (rows + 1) * pad, cols * w + (cols + 1) * pad, c), fill, np.uint8)
    for i, im in enumerate(images):
        r, q = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        out[y:y + h, x:x + w] = im
    return out
