"""What both training scripts share: a model with its EMA copy and optimiser, resumed from
and saved to one checkpoint file (written atomically: a kill mid-save leaves the last good
one), and the loss and figure helpers of the distillation.

    run = Run(model, opt, work / "ckpt.pt", ema_beta=0.998, name="G")
    run.resume()                     # step and elapsed time come back too
    ... step = run.learn(loss, started)  # backward, optimiser step, EMA, step and time counted
    run.checkpoint_every(300, args)  # at most every 300 s; run.save(args) at the end
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F


class Run:
    def __init__(self, model: torch.nn.Module, opt: torch.optim.Optimizer, path: Path, ema_beta: float,
                 name: str, ema_buffers: bool = False) -> None:
        self.model, self.opt, self.path, self.beta, self.name = model, opt, Path(path), ema_beta, name
        self.ema = copy.deepcopy(model).eval().requires_grad_(False)
        self.ema_buffers = ema_buffers  # also copy buffers (e.g. the generator's w_avg) into the EMA
        self.step, self.elapsed = 0, 0.0
        self._last_save = time.time()

    def learn(self, loss: torch.Tensor, started: float) -> int:
        """One optimiser step on ``loss``, the EMA follows; returns the new step count."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.update_ema()
        self.step += 1
        self.elapsed += time.time() - started
        return self.step

    def resume(self) -> bool:
        """Load the checkpoint if there is one; the keys are ``{name}``, ``{name}_ema``, ``opt``."""
        if not self.path.exists():
            return False
        ck = torch.load(self.path, weights_only=False)  # our own file, written by save() below
        self.model.load_state_dict(ck[self.name])
        self.ema.load_state_dict(ck[f"{self.name}_ema"])
        self.opt.load_state_dict(ck["opt"])
        self.step, self.elapsed = ck["step"], ck["elapsed"]
        return True

    def save(self, args) -> None:
        """Write the checkpoint atomically (a temporary file, then a rename)."""
        tmp = self.path.with_suffix(".tmp")
        torch.save({self.name: self.model.state_dict(), f"{self.name}_ema": self.ema.state_dict(),
                    "opt": self.opt.state_dict(), "step": self.step, "elapsed": self.elapsed,
                    "args": {k: str(v) for k, v in vars(args).items()}}, tmp)
        tmp.replace(self.path)
        self._last_save = time.time()

    def checkpoint_every(self, seconds: float, args) -> None:
        if time.time() - self._last_save > seconds:
            self.save(args)

    @torch.no_grad()
    def update_ema(self) -> None:
        for pe, p in zip(self.ema.parameters(), self.model.parameters()):
            pe.lerp_(p, 1 - self.beta)
        if self.ema_buffers:
            for be, b in zip(self.ema.buffers(), self.model.buffers()):
                be.copy_(b)


def pyramid_loss(a: torch.Tensor, b: torch.Tensor, levels: int = 4, squared: bool = False) -> torch.Tensor:
    """Mean |a - b| (or (a - b)², ``squared``) over a ``levels``-level image pyramid."""
    loss = a.new_zeros([])
    for _ in range(levels):
        loss = loss + ((a - b).square() if squared else (a - b).abs()).mean()
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    return loss / levels


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a - b) / 2).square().mean(dim=[1, 2, 3])
    return float((10 * torch.log10(1 / mse.clamp_min(1e-10))).mean())


def cosine(t: float, floor: float) -> float:
    """1 at t = 0 down to ``floor`` at t = 1, along half a cosine."""
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, t))))
