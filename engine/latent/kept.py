"""A kept face: what the render of a member's face needs, and nothing that can run.

W+ alone does not redraw a projected face exactly: the projector also optimises the finest
noise maps (texture; the features live in W+, which alone draws the member: bench/survive.py).
So a kept face is
``ws`` (float32 ``[num_ws, w_dim]``) plus the noise maps packed into one flat float16
array (``noise``; ``None`` means the model's own constant maps, as for a /random face
or a row stored before noise was kept). The projector renders its final image from
the float16-rounded maps, so what a member is shown is exactly what this redraws.

Between faces (blends, averages, morphs, grids) each noise layer follows its style
layer: layer ``k``'s map is the weighted mix of the faces' maps with the weights that
style ``k`` got, rescaled to the faces' own RMS (two independent maps averaged at
0.5 would otherwise lose 3 dB of texture). Chosen by measurement (bench/kept_face.py,
docs/benchmarks.md) over keeping the nearer face's maps and over dropping them.

No torch here: the bot imports this module to store and read faces.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from engine.protocol.events import NOISE_DTYPE, WS_DTYPE  # the protocol's Face holds these

NOISE_RULES = ("mix", "nearest", "const")
# Noise maps above this resolution are not kept: the projector leaves them at the model's
# constant maps. A 1024-px model's maps would cost 5.6 MB a face (2 796 176 values), ~150×
# its W+; up to 256 px they cost 349 KB (docs/benchmarks.md, "What a kept face costs").
KEPT_NOISE_MAX_RES = 256
MAX_NPZ_MEMBER_BYTES = 64 * 2**20  # the largest array a latent file may hold (a 1024-px face is ~5.6 MB)


class KeptFaceError(ValueError):
    """A file or array that is not a kept face of this model; ``str`` is one sentence."""


def noise_size(resolutions: list[int]) -> int:
    return int(sum(r * r for r in resolutions))


def pack_noise(maps: list[np.ndarray]) -> np.ndarray:
    """Per-layer ``[r, r]`` maps -> one flat little-endian float16 array."""
    return np.concatenate([np.asarray(m, dtype=np.float32).reshape(-1) for m in maps]).astype(NOISE_DTYPE)


def unpack_noise(flat, resolutions: list[int]) -> list[np.ndarray]:
    """One flat array -> per-layer float32 maps; refuses a wrong size or non-numbers."""
    try:
        arr = np.asarray(flat)
    except (TypeError, ValueError):
        raise KeptFaceError("The face's noise maps are not an array of numbers; project the photo again.") from None
    if arr.dtype.kind != "f" or arr.ndim != 1:
        raise KeptFaceError("The face's noise maps are not a flat array of numbers; project the photo again.")
    if arr.size != noise_size(resolutions):
        raise KeptFaceError("The face's noise maps were made by a different model; project the photo again.")
    with np.errstate(over="ignore", invalid="ignore"):  # a value float32 cannot hold is refused below, quietly
        arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise KeptFaceError("The face's noise maps are damaged (they hold non-numbers); project the photo again.")
    out, i = [], 0
    for r in resolutions:
        out.append(arr[i:i + r * r].reshape(r, r))
        i += r * r
    return out


def mix_noise(faces: list[list[np.ndarray]], weights: np.ndarray, rule: str = "mix") -> list[np.ndarray]:
    """Noise maps for a face between ``faces`` (each a per-layer list of maps).

    ``weights`` is ``[K]`` or ``[K, L]``: how much of face ``k`` layer ``l`` takes (the
    style weights of the latent being drawn). Negative weights (extrapolation) count as
    zero, and each layer's weights are renormalised to sum to one. ``rule``: ``mix`` (the
    weighted sum rescaled to the faces' RMS), ``nearest`` (the maps of the face with the
    largest weight) or ``const`` (the first face's maps; the caller passes constant maps).
    """
    if rule not in NOISE_RULES:
        raise ValueError(f"rule must be one of {NOISE_RULES}")
    layers = len(faces[0])
    w = np.asarray(weights, dtype=np.float64)
    w = np.repeat(w[:, None], layers, axis=1) if w.ndim == 1 else w[:, :layers]
    w = np.clip(w, 0.0, None)
    out = []
    for layer in range(layers):
        col = w[:, layer]
        if rule != "mix" or col.sum() <= 0 or np.count_nonzero(col) == 1:
            k = int(np.argmax(col)) if rule != "const" else 0
            out.append(faces[k][layer])
            continue
        col = col / col.sum()
        maps = [faces[k][layer] for k in range(len(faces)) if col[k] > 0]
        ks = [col[k] for k in range(len(faces)) if col[k] > 0]
        mixed = sum(c * m for c, m in zip(ks, maps))
        target = sum(c * float(np.sqrt(np.mean(np.square(m)))) for c, m in zip(ks, maps))
        rms = float(np.sqrt(np.mean(np.square(mixed))))
        out.append((mixed * (target / rms if rms > 1e-8 else 1.0)).astype(np.float32))
    return out


# --- the .npz files the command line writes ---------------------------------------------------

def save_npz(path: Path, ws: np.ndarray, noise: np.ndarray | None, model_id: str) -> None:
    arrays = {"ws": np.ascontiguousarray(ws, dtype=WS_DTYPE), "model_id": np.array(model_id)}
    if noise is not None:
        arrays["noise"] = np.ascontiguousarray(noise, dtype=NOISE_DTYPE)
    np.savez(path, **arrays)


def declared_bytes(member) -> int:
    """How many bytes a ``.npy`` stream's header says its array holds (0 when it has no header)."""
    try:
        version = np.lib.format.read_magic(member)
        reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if reader is None:
            raise KeptFaceError("That latent file holds an array format wspace does not read.")
        shape, _, dtype = reader(member, max_header_size=10_000)
    except (ValueError, OSError, SyntaxError, TypeError):
        return 0  # not an array numpy would read: np.load refuses it below, in one sentence
    count = 1
    for n in shape:
        count *= int(n)
    return count * max(1, dtype.itemsize)


def load_npz(data: bytes | str | Path) -> tuple[np.ndarray, np.ndarray | None, str]:
    """``(ws, noise or None, model_id)`` of a latent file, sizes checked before anything is read."""
    raw = Path(data).read_bytes() if isinstance(data, (str, Path)) else data
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            for info in zf.infolist():
                if info.file_size > MAX_NPZ_MEMBER_BYTES:
                    raise KeptFaceError(f"{info.filename} in that file is too large to be a face.")
                with zf.open(info) as member:  # the array's own header, read before numpy allocates it
                    if declared_bytes(member) > MAX_NPZ_MEMBER_BYTES:
                        raise KeptFaceError(f"{info.filename} in that file declares an array too large to be a face.")
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            ws = np.asarray(npz["ws"])
            model_id = str(npz["model_id"])
            noise = np.asarray(npz["noise"]) if "noise" in npz.files else None
    except KeptFaceError:
        raise
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise KeptFaceError(f"That is not a wspace latent file ({type(exc).__name__}).") from None
    if ws.dtype.kind != "f" or ws.ndim != 2:
        raise KeptFaceError("That latent file does not hold a W+ array of numbers.")
    return ws.astype(np.float32), noise, model_id
