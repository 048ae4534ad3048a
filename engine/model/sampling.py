"""Seeds to latents to faces: the "person who does not exist"."""

from __future__ import annotations

import numpy as np
import torch

from engine.model.networks import Generator
from engine.protocol.requests import MAX_SEED  # one definition: the protocol's


def z_from_seed(seed: int, z_dim: int) -> torch.Tensor:
    """The z of a seed, drawn as NVIDIA's generate.py draws it (so seeds mean the same there)."""
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be between 0 and {MAX_SEED}")
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim).astype(np.float32))


def ws_from_seeds(G: Generator, seeds: list[int], truncation_psi: float = 1.0) -> torch.Tensor:
    z = torch.cat([z_from_seed(s, G.z_dim) for s in seeds]).to(G.w_avg.device)
    with torch.no_grad():
        return G.mapping(z, truncation_psi)


def synthesize(G: Generator, ws: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """Render W+ latents in batches with the constant noise maps; returns CPU images."""
    out = []
    with torch.no_grad():
        for i in range(0, ws.shape[0], batch):
            out.append(G.synthesis(ws[i:i + batch].to(G.w_avg.device), noise_mode="const").cpu())
    return torch.cat(out)
