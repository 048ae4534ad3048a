"""W+ projection (rolux / stylegan2-ada style): find the latent that draws a given face.

The schedule is the published one, spelled out as constants below: start from ``w_avg``
on every layer, Adam with a ramped learning rate, decaying latent noise, and per-layer
noise maps optimised under a multi-scale autocorrelation penalty and renormalised after
every step. Two changes keep the kept W+ a face that blends, morphs and edits can move
(``bench/survive.py``, judged by FaceNet, which nothing here uses): only the two finest
octaves of noise maps move (texture; coarser maps that move carry features W+ then lacks),
and a realism penalty holds each style near W's own Gaussian (W+ codes far from it melt
when moved).

Loss: LPIPS-VGG when its weights are present locally (the ``lpips`` package and the
torchvision VGG16 checkpoint in the torch hub cache); otherwise an offline loss of
multi-scale pixel terms plus a multi-scale SSIM term (see ``docs/benchmarks.md`` for
the measurements that chose it). The loss used is reported in every result.

The loop itself, :func:`engine.latent.batch.project`, runs one member or several together.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from engine.model.networks import Generator

# --- the schedule ------------------------------------------------------------------------
DEFAULT_STEPS = 300
INITIAL_LR = 0.1
LR_RAMPUP = 0.05  # fraction of the steps spent ramping the lr up
LR_RAMPDOWN = 0.25  # fraction spent in the cosine ramp-down
INITIAL_NOISE_FACTOR = 0.05  # latent noise = factor · σ_w · max(0, 1 - t / NOISE_RAMP_LENGTH)²
NOISE_RAMP_LENGTH = 0.75
NOISE_REGULARIZE_WEIGHT = 1e5
W_STATS_SAMPLES = 10_000
ADAM_BETAS = (0.9, 0.999)
REFINE_LR = 0.03
REFINE_NOISE_FACTOR = 0.01
FAR_GUESS_LR = 0.4  # a guess that fits badly (a real photo) needs bigger steps, and no latent noise
CLOSE_GUESS_DB = 25.0  # a guess this close (PSNR) is refined gently
W_PLUS_WEIGHT = 0.0  # editability penalties (see Schedule); chosen by bench/kept_face.py
W_MEAN_WEIGHT = 0.0
# A kept W+ that is a face, chosen by bench/survive.py (docs/benchmarks.md): only the two finest
# octaves of noise maps move, and each style is pulled toward W's own Gaussian.
NOISE_OCTAVES = 2
REALISM_WEIGHT = 0.002
# --- the offline loss --------------------------------------------------------------------
PIXEL_LEVELS = 4  # image pyramid levels for the pixel term
SSIM_WEIGHT = 0.5  # weight of (1 - SSIM), averaged over the same pyramid


@dataclass(frozen=True)
class Schedule:
    """Peak learning rate and starting latent-noise factor of a projection run."""

    initial_lr: float = INITIAL_LR
    noise_factor: float = INITIAL_NOISE_FACTOR
    name: str = "custom"
    rampdown: float = LR_RAMPDOWN  # fraction of the steps in the cosine ramp-down
    noise_lr_mul: float = 1.0  # the noise maps' learning rate relative to the latents'
    # Editability (e4e-style, in units of σ_w²): keep each style near the mean of the W+
    # styles, and that mean near W's own centre, so edits and blends stay on the manifold.
    w_plus_weight: float = W_PLUS_WEIGHT
    w_mean_weight: float = W_MEAN_WEIGHT
    noise_reg_weight: float = NOISE_REGULARIZE_WEIGHT  # higher: smoother maps, more of the face in W+
    # A kept W+ that is a face (bench/survive.py): the first ``w_first`` of the steps move one w
    # shared by every style (W, where the mapping network puts faces), the rest W+; only the noise
    # maps of the ``noise_octaves`` finest resolutions move (texture, not features; None: every
    # map); ``realism_weight`` pulls each style toward W's own distribution (squared Mahalanobis
    # distance per dimension).
    w_first: float = 0.0
    noise_octaves: int | None = NOISE_OCTAVES
    realism_weight: float = REALISM_WEIGHT
    realism_coarse_weight: float | None = None  # the coarse styles' (layout, pose); None: realism_weight


ROLUX = Schedule(name="rolux")
# From an encoder's guess that already fits (a face the model can draw) a gentle start keeps
# it there; from one that fits badly (real photos, other generators' faces) big steps
# without latent noise get further in the same time. Chosen by the guess's own PSNR
# (bench/projection_speed.py, see docs/benchmarks.md).
REFINE = Schedule(initial_lr=REFINE_LR, noise_factor=REFINE_NOISE_FACTOR, name="refine")
REFINE_FAR = Schedule(initial_lr=FAR_GUESS_LR, noise_factor=0.0, name="refine_far")


def refine_schedule(guess_psnr: float) -> Schedule:
    return REFINE if guess_psnr >= CLOSE_GUESS_DB else REFINE_FAR


@dataclass
class Projection:
    ws: np.ndarray  # [num_ws, w_dim] float32
    noise: list[np.ndarray]
    image: np.ndarray  # [H, W, 3] uint8, the final render
    frames: list[np.ndarray]  # previews along the way, for the convergence GIF
    losses: list[float]
    loss_kind: str
    steps: int
    seconds: float
    psnr: float
    model_id: str
    figures: dict = field(default_factory=dict)
    timeline: list[float] = field(default_factory=list)  # seconds since the start, after each step


def lr_schedule(t: float, initial_lr: float = INITIAL_LR, rampdown: float = LR_RAMPDOWN) -> float:
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return initial_lr * ramp * min(1.0, t / LR_RAMPUP)


def latent_noise_scale(t: float, w_std: float, factor: float = INITIAL_NOISE_FACTOR) -> float:
    return w_std * factor * max(0.0, 1.0 - t / NOISE_RAMP_LENGTH) ** 2


def mapped(G: Generator, samples: int = W_STATS_SAMPLES, seed: int = 123) -> torch.Tensor:
    """``samples`` w from the mapping network, ``[samples, w_dim]``, the same ones every time."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(samples, G.z_dim, generator=gen).to(G.w_avg.device)
    with torch.no_grad():
        return G.mapping(z)[:, 0]


def w_stats(G: Generator, samples: int = W_STATS_SAMPLES, seed: int = 123) -> tuple[torch.Tensor, float]:
    """``w_avg`` and the scalar spread σ_w of W (as the reference projector measures it)."""
    cache = getattr(G, "_w_stats", None)
    if cache is not None:
        return cache
    w = mapped(G, samples, seed)
    w_avg = G.w_avg.detach().clone()
    w_std = float(((w - w_avg).square().sum() / samples) ** 0.5)
    G._w_stats = (w_avg, w_std)
    return G._w_stats


def w_gaussian(G: Generator, samples: int = W_STATS_SAMPLES, seed: int = 123) -> tuple[torch.Tensor, torch.Tensor]:
    """W's mean and the upper Cholesky factor ``U`` of its precision (``Uᵀ U = Σ⁻¹``), from mapped z."""
    cache = getattr(G, "_w_gaussian", None)
    if cache is not None:
        return cache
    w = mapped(G, samples, seed).double()
    cov = torch.cov(w.T) + 1e-6 * torch.eye(w.shape[1], dtype=w.dtype, device=w.device)
    upper = torch.linalg.cholesky(torch.linalg.inv(cov)).T
    G._w_gaussian = (w.mean(0).float(), upper.float().contiguous())
    return G._w_gaussian


def realism_regularizer(ws: torch.Tensor, mean: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Each style's squared Mahalanobis distance from W's Gaussian, per dimension (``ws``:
    ``[N, num_ws, w_dim]`` -> ``[N, num_ws]``; about 1 for styles the mapping network makes)."""
    return ((ws - mean) @ upper.T).square().mean(dim=2)


def w_plus_regularizer(ws: torch.Tensor, w_avg: torch.Tensor, w_std: float,
                       per_sample: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean squared offset of each W+ style from the mean style, and of the mean style from
    ``w_avg``, per dimension and in units of σ_w² (``ws``: ``[N, num_ws, w_dim]``; with
    ``per_sample`` each ``[N]``, else averaged over the batch)."""
    mean = ws.mean(dim=1, keepdim=True)
    scale = ws.shape[-1] / (w_std * w_std)
    spread = (ws - mean).square().mean(dim=[1, 2]) * scale
    centre = (mean[:, 0] - w_avg).square().mean(dim=1) * scale
    return (spread, centre) if per_sample else (spread.mean(), centre.mean())


def noise_regularizer(noises: list[torch.Tensor], per_sample: bool = False) -> torch.Tensor:
    """The multi-scale autocorrelation penalty of the noise maps ``[N, 1, r, r]``: ``[N]``
    with ``per_sample``, else summed over the batch."""
    reg = noises[0].new_zeros([noises[0].shape[0]])
    for noise in noises:
        while True:
            reg = reg + (noise * torch.roll(noise, shifts=1, dims=3)).mean(dim=[1, 2, 3]) ** 2
            reg = reg + (noise * torch.roll(noise, shifts=1, dims=2)).mean(dim=[1, 2, 3]) ** 2
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return reg if per_sample else reg.sum()


def _gaussian_window(size: int = 7, sigma: float = 1.5) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size) - size // 2) ** 2) / (2 * sigma**2))
    return g / g.sum()


def ssim_window(like: torch.Tensor) -> torch.Tensor:
    """The SSIM window for images like ``like``, on their device (made once per loss, so a
    step copies nothing from the host)."""
    return _gaussian_window(min(7, like.shape[-1])).to(like)


def ssim(a: torch.Tensor, b: torch.Tensor, window: torch.Tensor | None = None) -> torch.Tensor:
    """Mean SSIM of images in [-1, 1] (Gaussian window 7, σ 1.5), per sample."""
    c = a.shape[1]
    g = ssim_window(a) if window is None else window
    win = g.shape[0]
    kx = g.reshape(1, 1, 1, -1).expand(c, 1, 1, win)
    ky = g.reshape(1, 1, -1, 1).expand(c, 1, win, 1)

    def blur(x):
        return F.conv2d(F.conv2d(x, kx, groups=c), ky, groups=c)

    a, b = (a + 1) / 2, (b + 1) / 2
    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.mean(dim=[1, 2, 3])


class OfflineLoss:
    """Multi-scale MSE plus multi-scale (1 - SSIM); needs no downloaded weights."""

    name = "pixel+ssim"

    def __init__(self, target: torch.Tensor, ssim_weight: float = SSIM_WEIGHT, levels: int = PIXEL_LEVELS) -> None:
        self.ssim_weight, self.levels = ssim_weight, levels
        self.name = "pixel+ssim" if ssim_weight > 0 else "pixel"
        self.targets = self._pyramid(target)
        self.windows = [ssim_window(t) for t in self.targets]

    def _pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = [x]
        while len(out) < self.levels and out[-1].shape[-1] > 8:
            out.append(F.avg_pool2d(out[-1], 2))
        return out

    def per_sample(self, img: torch.Tensor) -> torch.Tensor:
        """The loss of each image against its own target, ``[N]``."""
        loss = img.new_zeros([img.shape[0]])
        for x, t, window in zip(self._pyramid(img), self.targets, self.windows):
            loss = loss + (x - t).square().mean(dim=[1, 2, 3])
            if self.ssim_weight > 0 and x.shape[-1] >= 16:
                loss = loss + self.ssim_weight * (1 - ssim(x, t, window))
        return loss / len(self.targets)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return self.per_sample(img).mean()


class LPIPSLoss:
    name = "lpips-vgg"

    def __init__(self, target: torch.Tensor, net) -> None:
        self.net = net
        self.target = self._prep(target)

    @staticmethod
    def _prep(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=(256, 256), mode="area") if x.shape[-1] > 256 else x

    def per_sample(self, img: torch.Tensor) -> torch.Tensor:
        return self.net(self._prep(img), self.target).reshape(-1)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return self.per_sample(img).mean()


def lpips_available() -> bool:
    """LPIPS-VGG only when everything it needs is already on disk (never downloads)."""
    try:
        import importlib.util
        from pathlib import Path

        if importlib.util.find_spec("lpips") is None:
            return False
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        return any(hub.glob("vgg16-*.pth"))
    except Exception:  # noqa: BLE001 (no hub, no weights: the answer is simply no)
        return False


@functools.lru_cache(maxsize=4)
def lpips_network(device: str):
    """LPIPS-VGG on ``device``, loaded once: a batch makes a new loss whenever a member joins."""
    import lpips

    return lpips.LPIPS(net="vgg", verbose=False).to(device).eval().requires_grad_(False)


def make_loss(target: torch.Tensor, kind: str = "auto"):
    if kind in ("auto", "lpips") and lpips_available():
        return LPIPSLoss(target, lpips_network(str(target.device)))
    if kind == "lpips":
        raise RuntimeError("LPIPS-VGG weights are not available on this machine")
    return OfflineLoss(target, ssim_weight=0.0 if kind == "pixel" else SSIM_WEIGHT)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


ProgressFn = Callable[[int, int, float, np.ndarray | None], None]
