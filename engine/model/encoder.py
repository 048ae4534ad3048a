"""A feed-forward encoder: an aligned face -> a W+ guess, to start the projector near the answer.

The network reads the image at the generator's resolution and answers W+ as offsets from
``w_avg`` in units of W's per-dimension spread, so an untrained (zero) head answers
``w_avg`` — exactly the projector's default start. Coarse layers are read from the
deepest features, fine layers from shallower ones as well (each stage's pooled features
feed the head), which is the pSp idea in a size that runs in a few milliseconds on a CPU.

Weights live beside the generator they belong to (``<model>.encoder.safetensors``) with
that generator's model id; an encoder is never used with another model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

FORMAT_KEY = "wspace-encoder"
MAX_ENCODER_PARAMETERS = 50 * 10**6  # the embedded model's encoder has ~ 5e6


@dataclass
class EncoderConfig:
    resolution: int = 64
    num_ws: int = 10
    w_dim: int = 256
    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 256])
    hidden: int = 512


class ResidualDown(nn.Module):
    """3×3 conv, 3×3 stride-2 conv, with a 1×1 stride-2 shortcut; GroupNorm + LeakyReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, 3, padding=1)
        self.norm1 = nn.GroupNorm(min(8, cin), cin)
        self.conv2 = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        self.norm2 = nn.GroupNorm(min(8, cout), cout)
        self.skip = nn.Conv2d(cin, cout, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.norm1(self.conv1(x)), 0.2)
        y = self.norm2(self.conv2(y))
        return F.leaky_relu(y + self.skip(x), 0.2)


class Encoder(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        ch = config.channels
        self.stem = nn.Conv2d(3, ch[0], 3, padding=1)
        self.stages = nn.ModuleList(ResidualDown(a, b) for a, b in zip(ch[:-1], ch[1:]))
        final = config.resolution >> len(self.stages)
        pooled = sum(ch[1:])
        self.head = nn.Sequential(nn.Linear(ch[-1] * final * final + pooled, config.hidden), nn.LeakyReLU(0.2),
                                  nn.Linear(config.hidden, config.num_ws * config.w_dim))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        # Filled from the generator (or the checkpoint): where W is and how wide it spreads.
        self.register_buffer("w_avg", torch.zeros(config.w_dim))
        self.register_buffer("w_scale", torch.ones([]))
        self.model_id = "untrained"
        self.provenance: dict = {}

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """``[N, 3, R, R]`` in [-1, 1] -> W+ ``[N, num_ws, w_dim]``."""
        c = self.config
        if img.shape[-1] != c.resolution:
            img = F.interpolate(img, size=(c.resolution, c.resolution), mode="area")
        x = F.leaky_relu(self.stem(img), 0.2)
        pooled = []
        for stage in self.stages:
            x = stage(x)
            pooled.append(x.mean(dim=[2, 3]))
        feats = torch.cat([x.flatten(1)] + pooled, dim=1)
        offsets = self.head(feats).reshape(-1, c.num_ws, c.w_dim)
        return self.w_avg + self.w_scale * offsets


def save_encoder(E: Encoder, path: str | Path, model_id: str, provenance: dict | None = None,
                 dtype: torch.dtype = torch.float16) -> None:
    """Weights are stored as fp16 by default (half the size; the guess moves < 0.01 dB)."""
    state = {k: v.detach().cpu().to(dtype).contiguous() for k, v in E.state_dict().items()}
    meta = {"config": asdict(E.config), "model_id": model_id, "provenance": provenance or {}}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={FORMAT_KEY: json.dumps(meta)})


def load_encoder(path: str | Path, model_id: str | None = None, device: str | torch.device = "cpu") -> Encoder | None:
    """The encoder at ``path`` if it exists and belongs to ``model_id``; otherwise ``None``
    (the projector then starts from ``w_avg`` as it always did). A damaged or hostile file
    is one sentence (:class:`~engine.model.checkpoints.CheckpointError`)."""
    from engine.model.checkpoints import MAX_MODEL_BYTES, CheckpointError, parameters_of

    path = Path(path)
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_MODEL_BYTES:
        raise CheckpointError(f"{path.name} is larger than any encoder this engine loads.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get(FORMAT_KEY, "null") or "null")
            if not meta:
                return None
            if model_id is not None and meta["model_id"] != model_id:
                return None
            config = EncoderConfig(**meta["config"])
            numbers = [config.resolution, config.num_ws, config.w_dim, config.hidden, *config.channels]
            if not (all(type(n) is int and n > 0 for n in numbers) and config.resolution <= 1024
                    and config.num_ws <= 32 and config.w_dim <= 2048 and config.hidden <= 8192
                    and 2 <= len(config.channels) <= 10 and all(c <= 2048 for c in config.channels)
                    and config.resolution >> (len(config.channels) - 1) >= 1):
                raise ValueError("an impossible architecture")
            if parameters_of(lambda: Encoder(config)) > MAX_ENCODER_PARAMETERS:  # weighed before allocation
                raise ValueError(f"over {MAX_ENCODER_PARAMETERS // 10**6} million parameters")
            state = {k: f.get_tensor(k) for k in f.keys()}
        if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
            raise ValueError("NaN or infinite weights")
        E = Encoder(config)
        E.load_state_dict({k: v.float() for k, v in state.items()})
    except Exception as exc:  # noqa: BLE001 (a file that is no encoder: one sentence)
        raise CheckpointError(f"{path.name} is not an encoder this engine can load ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:120] if str(exc) else 'unreadable'}).") from None
    E.model_id, E.provenance = meta["model_id"], meta.get("provenance", {})
    return E.eval().requires_grad_(False).to(device)


def encode(E: Encoder, image: np.ndarray) -> np.ndarray:
    """One aligned face ``[H, W, 3]`` uint8 -> its W+ guess ``[num_ws, w_dim]`` float32."""
    from engine.model.images import from_uint8

    with torch.no_grad():
        ws = E(from_uint8(image).to(E.w_avg.device))
    return ws[0].cpu().numpy().astype(np.float32)
