"""Latent arithmetic in W+: pure functions on ``[num_ws, w_dim]`` arrays (numpy or torch).

Nothing here renders or touches a file; the worker renders what these return.
"""

from __future__ import annotations

import math

import numpy as np

from engine.protocol.requests import LAYER_GROUPS  # one definition: the protocol's


def layer_ranges(num_ws: int) -> dict[str, range]:
    """StyleGAN's coarse (4–8 px), middle (16–32 px) and fine (64 px and up) styles.

    For models below 64 px, which have no "fine" resolutions, the last two styles are
    called fine so that every group is non-empty.
    """
    fine_start = min(8, max(num_ws - 2, 1))
    middle_start = min(4, fine_start)
    return {"all": range(0, num_ws), "coarse": range(0, middle_start),
            "middle": range(middle_start, fine_start), "fine": range(fine_start, num_ws)}


def parse_layers(num_ws: int, layers: str) -> range:
    """A group name (``all``, ``coarse``, ``middle``, ``fine``) or an inclusive style range
    ``"A-B"`` (e.g. ``"1-3"``, as a direction's default layers may be stored)."""
    if layers in LAYER_GROUPS:
        return layer_ranges(num_ws)[layers]
    first, sep, last = layers.partition("-")
    if sep and first.isdigit() and last.isdigit() and int(first) <= int(last) < num_ws:
        return range(int(first), int(last) + 1)
    raise ValueError(f"layers must be one of {', '.join(LAYER_GROUPS)} or a style range A-B below {num_ws}")


def layer_mask(num_ws: int, layers: str | range | None) -> np.ndarray:
    """``[num_ws, 1]`` float mask of a group name, an ``"A-B"`` style range or an index range."""
    if layers is None:
        layers = "all"
    if isinstance(layers, str):
        layers = parse_layers(num_ws, layers)
    mask = np.zeros((num_ws, 1), np.float32)
    mask[list(layers)] = 1
    return mask


def blend(a: np.ndarray, b: np.ndarray, ratio: float, layers: str | range | None = None) -> np.ndarray:
    """``(1 - ratio)·a + ratio·b`` on the chosen layers; outside 0..1 extrapolates."""
    _check_finite(ratio, "ratio")
    return a + (b - a) * (ratio * layer_mask(a.shape[0], layers))


def average(latents: list[np.ndarray]) -> np.ndarray:
    if not latents:
        raise ValueError("average needs at least one latent")
    return np.mean(np.stack(latents), axis=0).astype(np.float32)


def mix(coarse: np.ndarray, fine: np.ndarray, split: int) -> np.ndarray:
    """Style mixing: styles ``[0, split)`` from ``coarse``, the rest from ``fine``."""
    if not 0 <= split <= coarse.shape[0]:
        raise ValueError(f"split must lie between 0 and {coarse.shape[0]}")
    return np.concatenate([coarse[:split], fine[split:]]).astype(np.float32)


def apply_direction(
    ws: np.ndarray, direction: np.ndarray, amount: float, layers: str | range | None = None
) -> np.ndarray:
    """Move ``amount`` along a unit direction (``[w_dim]`` or ``[num_ws, w_dim]``) on some layers."""
    _check_finite(amount, "amount")
    d = np.broadcast_to(direction, ws.shape)
    return (ws + amount * d * layer_mask(ws.shape[0], layers)).astype(np.float32)


def strip(
    ws: np.ndarray, direction: np.ndarray, amount: float, count: int = 5, layers: str | range | None = None
) -> np.ndarray:
    """``count`` latents from ``-amount`` to ``+amount`` along a direction: ``[count, num_ws, w_dim]``."""
    return np.stack([apply_direction(ws, direction, a, layers) for a in np.linspace(-amount, amount, count)])


def ease_in_out(t: np.ndarray) -> np.ndarray:
    """Smoothstep: zero velocity at both ends, so a morph rests on each face."""
    return t * t * (3 - 2 * t)


def morph_weights(count: int, frames: int, loop: bool = True) -> np.ndarray:
    """``[frames, count]``: how much of each of ``count`` faces every morph frame takes,
    walking through them in order with easing; when ``loop``, the walk returns to the first
    so the GIF repeats seamlessly."""
    keys = list(range(count)) + ([0] if loop and count > 1 else [])
    weights = np.zeros((frames, count), np.float32)
    if len(keys) < 2:
        weights[:, 0] = 1
        return weights
    segments = len(keys) - 1
    pos = np.arange(frames) / frames * segments if loop else np.linspace(0, segments, frames)
    for f, p in enumerate(pos):
        i = min(int(p), segments - 1)
        t = ease_in_out(np.float32(p - i))
        weights[f, keys[i]] += 1 - t
        weights[f, keys[i + 1]] += t
    return weights


def weighted(weights: np.ndarray, latents) -> np.ndarray:
    """``[F, K]`` weights of ``K`` latents ``[K, num_ws, w_dim]`` -> ``F`` latents (morphs, grids, averages)."""
    return np.einsum("fk,kij->fij", weights, np.stack(latents)).astype(np.float32)


def morph_sequence(latents: np.ndarray, frames: int, loop: bool = True) -> np.ndarray:
    """``frames`` latents walking through ``latents`` ``[K, num_ws, w_dim]`` (see :func:`morph_weights`)."""
    return weighted(morph_weights(len(latents), frames, loop), latents)


def deform_loop(
    ws: np.ndarray,
    frames: int,
    layers: str | range | None = "middle",
    amplitude: float = 0.5,
    w_std: float = 1.0,
    harmonics: int = 3,
    seed: int = 0,
) -> np.ndarray:
    """A face that breathes: sine-modulated random offsets on some layers.

    Each harmonic k adds a random direction times ``sin(2πk·t + φ)``, t ∈ [0, 1); frame
    ``frames`` would equal frame 0, so the GIF loops without a seam.
    """
    rng = np.random.default_rng(seed)
    mask = layer_mask(ws.shape[0], layers)
    t = np.arange(frames) / frames
    out = np.repeat(ws[None], frames, axis=0).astype(np.float32)
    for k in range(1, harmonics + 1):
        d = rng.standard_normal(ws.shape).astype(np.float32)
        d *= w_std / np.linalg.norm(d, axis=1, keepdims=True)  # each style moves by up to σ_w·amplitude
        phase = rng.uniform(0, 2 * math.pi)
        out += (amplitude / k) * np.sin(2 * math.pi * k * t + phase)[:, None, None] * d * mask
    return out


def plane_weights(n: int = 5, extent: float = 1.0) -> np.ndarray:
    """``[n*n, 3]``: the weights of ``a, b, c`` at each cell of :func:`plane_grid`."""
    u = np.linspace(0, extent, n, dtype=np.float32)
    return np.array([[1 - x - y, x, y] for y in u for x in u], np.float32)


def plane_grid(a: np.ndarray, b: np.ndarray, c: np.ndarray, n: int = 5, extent: float = 1.0) -> np.ndarray:
    """An ``n×n`` grid on the plane through three latents: ``a`` at the top-left corner,
    ``b`` along the rows, ``c`` down the columns. Returns ``[n*n, num_ws, w_dim]``."""
    return weighted(plane_weights(n, extent), [a, b, c])


def _check_finite(x: float, name: str) -> None:
    if not math.isfinite(x):
        raise ValueError(f"{name} must be a finite number")
