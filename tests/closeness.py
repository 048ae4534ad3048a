"""What "the face a member would have got alone" means once other members share the batch.

A batched step rounds differently from a lone one on some CPUs and thread counts (oneDNN
and ATen split the work by batch size; bench/numerics.py measures it), and a projection
amplifies last-bit differences, most on photos the model cannot draw exactly. So the
tests hold a batched member to what does hold everywhere: over a short projection, values
within a hair of the lone ones; over any projection, the same likeness and fit.
A member whose state leaked into another's would miss these by whole units.
"""

from __future__ import annotations

import numpy as np

WS_TOL = 0.05  # largest W+ / noise-map difference over a short projection (0.0006 seen after 30 steps)
IMAGE_LEVELS = 4  # largest pixel difference of a final face, of 255 (1 seen)
# Over 300-step /project jobs on the two offline photos, batched against alone at 1-3 threads
# and three kernel settings (docs/numerics.json): likeness up to 0.063 apart, PSNR up to 0.40 dB.
LIKENESS_TOL = 0.1  # dlib distance; two photos of one person are ~0.3-0.5 apart, another person > 0.6
PSNR_TOL_DB = 1.0


def close_arrays(a, b, tol: float = WS_TOL) -> bool:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a.shape == b.shape and float(np.abs(a - b).max(initial=0.0)) < tol


def same_kept_face(a, b) -> None:
    """Two kept faces (``ws`` and float16 ``noise``) from a short projection, alone and batched."""
    assert close_arrays(a.ws, b.ws), float(np.abs(a.ws - b.ws).max())
    assert (a.noise is None) == (b.noise is None)
    if a.noise is not None:
        assert close_arrays(a.noise, b.noise)


def same_fit(a, b) -> None:
    """Two /project results for one photo: the same likeness and fit, whatever the batch."""
    assert abs(a.figures["likeness"] - b.figures["likeness"]) <= LIKENESS_TOL, (a.figures, b.figures)
    assert abs(a.figures["psnr"] - b.figures["psnr"]) <= PSNR_TOL_DB, (a.figures, b.figures)
