"""StyleGAN2 generator: mapping network and skip-architecture synthesis network.

Parameter names and maths follow NVIDIA's stylegan2-ada-pytorch (config-f family) so
that its checkpoints copy over name for name; rosinality's are renamed on import
(see ``engine/model/checkpoints.py``).

Speed: on the CPU a modulated convolution is computed by scaling the activations
by the styles, running one ordinary convolution with the shared weight, and
scaling the result by the demodulation coefficients, which are a small matrix
product ``styles² @ Σ_k weight²``. On CUDA the grouped-convolution trick (one
weight per sample) is used instead, as the reference code does for inference.
When no autograd graph is recorded (inference), activations are scaled in place,
weight-derived tensors are cached, and toRGB is a batched matrix product over the
channels-last activations: at 64 px each avoided pass over a batch's activations
is worth ~1 ms (bench/generator.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from engine.model.modconv import (
    WeightCache,
    blur_upsample,
    fir_filter,
    inference_only,
    modulated_conv,
    rows_times,
    to_rgb_nhwc,
)

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
NOISE_MODES = ("const", "random", "none")


MAX_DIM = 2048
MAX_PARAMETERS = 200 * 10**6  # NVIDIA's FFHQ 1024 generator has about 30 million


@dataclass
class GeneratorConfig:
    """Architecture of one generator; stored as JSON beside its weights."""

    resolution: int = 64
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    mapping_lr_mul: float = 0.01
    img_channels: int = 3
    channels: dict[int, int] = field(default_factory=dict)
    conv_clamp: float | None = None

    def __post_init__(self) -> None:
        """Checked before anything is allocated: a model file's config comes from its author."""
        for name in ("resolution", "z_dim", "w_dim", "mapping_layers", "img_channels"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int):
                raise ValueError(f"{name} must be a whole number")
        res = self.resolution
        if res < 4 or res > 1024 or res & (res - 1):
            raise ValueError(f"resolution must be a power of two in 4..1024, not {res}")
        if not (1 <= self.z_dim <= MAX_DIM and 1 <= self.w_dim <= MAX_DIM and 1 <= self.mapping_layers <= 16
                and 1 <= self.img_channels <= 4):
            raise ValueError("z_dim, w_dim, mapping_layers or img_channels is out of range")
        for name in ("mapping_lr_mul", "conv_clamp"):
            x = getattr(self, name)
            if x is not None and (isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 < x < 1e6):
                raise ValueError(f"{name} must be a positive finite number")
        if not isinstance(self.channels, dict) or len(self.channels) > 16:
            raise ValueError("channels must map each resolution to a channel count")
        self.channels = {int(k): int(v) for k, v in self.channels.items()}
        if not self.channels:
            self.channels = channel_schedule(res)
        missing = [r for r in block_resolutions(res) if r not in self.channels]
        if missing:
            raise ValueError(f"channels has no entry for resolutions {missing}")
        if any(not 1 <= c <= MAX_DIM for c in self.channels.values()):
            raise ValueError(f"channel counts must lie in 1..{MAX_DIM}")
        if self.parameter_estimate() > MAX_PARAMETERS:
            raise ValueError(f"the architecture would hold over {MAX_PARAMETERS // 10**6} million parameters")

    def parameter_estimate(self) -> int:
        """Roughly how many weights the generator has (the convolutions and their style affines)."""
        total = self.z_dim * self.w_dim + self.mapping_layers * self.w_dim * self.w_dim
        prev = self.channels[4]
        for r in block_resolutions(self.resolution):
            c = self.channels[r]
            total += 9 * (prev * c + c * c) + self.w_dim * (prev + 2 * c) + c * self.img_channels
            prev = c
        return total

    def to_json(self) -> dict:
        d = asdict(self)
        d["channels"] = {str(k): v for k, v in self.channels.items()}
        return d

    @classmethod
    def from_json(cls, d: dict) -> "GeneratorConfig":
        return cls(**d)


def block_resolutions(resolution: int) -> list[int]:
    return [2**i for i in range(2, int(math.log2(resolution)) + 1)]


def channel_schedule(resolution: int, channel_base: int = 32768, channel_max: int = 512) -> dict[int, int]:
    """NVIDIA's schedule: ``min(channel_base // res, channel_max)`` channels at each resolution."""
    return {r: min(channel_base // r, channel_max) for r in block_resolutions(resolution)}


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def lrelu_bias(
    x: torch.Tensor, bias: torch.Tensor, gain: float = LRELU_GAIN, clamp: float | None = None
) -> torch.Tensor:
    shape = [1, -1] + [1] * (x.ndim - 2)
    x = F.leaky_relu(x + bias.reshape(shape), LRELU_SLOPE) * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


class FullyConnected(nn.Module):
    """Dense layer with equalised learning rate (weight stored scaled by 1/lr_mul)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: str = "linear",
        lr_mul: float = 1.0,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.activation = activation
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = self.bias * self.bias_gain
        if self.activation == "linear":  # the affines that make styles: per row, batch-invariant
            return rows_times(x, w.t()) + b
        return lrelu_bias(x.matmul(w.t()), b)


class MappingNetwork(nn.Module):
    def __init__(
        self, z_dim: int, w_dim: int, num_ws: int, num_layers: int = 8, lr_mul: float = 0.01, w_avg_beta: float = 0.995
    ) -> None:
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, w_dim, num_ws, num_layers
        self.w_avg_beta = w_avg_beta
        dims = [z_dim] + [w_dim] * num_layers
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnected(dims[i], dims[i + 1], "lrelu", lr_mul))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, update_w_avg: bool = False) -> torch.Tensor:
        x = normalize_2nd_moment(z.to(torch.float32))
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if update_w_avg:
            self.w_avg.copy_(x.detach().mean(0).lerp(self.w_avg, self.w_avg_beta))
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            x = self.w_avg.lerp(x, truncation_psi)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3×3 conv (optionally 2× up) + noise + bias + leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: int = 1,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.resolution, self.up, self.conv_clamp = resolution, up, conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("resample_filter", fir_filter(), persistent=False)
        self.cache = WeightCache()

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise_mode: str = "const",
        noise: torch.Tensor | None = None,
        fused: bool = False,
    ) -> torch.Tensor:
        styles = self.affine(w)
        x, dcoefs = modulated_conv(x, self.weight, styles, True, self.up, fused, self.cache)
        if self.up > 1:
            x = blur_upsample(x, self.resample_filter, (1, 1))
        if noise is None and noise_mode != "none":
            if noise_mode == "random":
                noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device)
            else:
                noise = self.noise_const
        # lrelu(v)·g == lrelu(v·g) for g > 0, so the gain is folded into the scale, the
        # noise and the bias: one multiply, one add, one in-place activation.
        add = (self.bias * LRELU_GAIN).reshape(1, -1, 1, 1)
        if noise is not None:
            add = add + noise * (self.noise_strength * LRELU_GAIN)
        add = add.to(x.dtype)
        if x.dim() == 4 and add.shape[-1] > 1 and x.is_contiguous(memory_format=torch.channels_last):
            add = add.contiguous(memory_format=torch.channels_last)  # a mismatched layout costs ~9× here
        if dcoefs is None:
            x = (x * LRELU_GAIN).add_(add)
        else:
            scale = (dcoefs * LRELU_GAIN).reshape(*dcoefs.shape, 1, 1).to(x.dtype)
            if inference_only(x, add, scale):  # x is this layer's own fresh output
                x = torch.addcmul(add, x, scale, out=x)
            else:
                x = torch.addcmul(add, x, scale)
        x = F.leaky_relu(x, LRELU_SLOPE, inplace=True)
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return x


class ToRGBLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)
        self.conv_clamp = conv_clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool = False) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        if not fused and x.is_contiguous(memory_format=torch.channels_last):
            x = to_rgb_nhwc(x, self.weight, styles)
        else:
            x, _ = modulated_conv(x, self.weight, styles, False, 1, fused)
        x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return x


class SynthesisBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.register_buffer("resample_filter", fir_filter(), persistent=False)
        self.num_conv = 1 if in_channels == 0 else 2

    def layers(self) -> list[SynthesisLayer]:
        return [self.conv1] if self.in_channels == 0 else [self.conv0, self.conv1]

    def forward(self, x, img, ws, noise_mode="const", noises=None, fused=False):
        layers = self.layers()
        noises = noises if noises is not None else [None] * len(layers)
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
            if not fused:  # oneDNN convolutions, transposed ones above all, are fastest in NHWC
                x = x.contiguous(memory_format=torch.channels_last)
        for i, layer in enumerate(layers):
            x = layer(x, ws[:, i], noise_mode, noises[i], fused)
        if img is not None:
            img = blur_upsample(img, self.resample_filter, (2, 1), up=2)
        y = self.torgb(x, ws[:, len(layers)], fused)
        return x, (y if img is None else img + y)


class SynthesisNetwork(nn.Module):
    def __init__(
        self, w_dim: int, resolution: int, img_channels: int, channels: dict[int, int], conv_clamp: float | None = None
    ) -> None:
        super().__init__()
        self.w_dim, self.resolution = w_dim, resolution
        self.block_resolutions = block_resolutions(resolution)
        self.num_ws = 0
        for res in self.block_resolutions:
            in_ch = channels[res // 2] if res > 4 else 0
            block = SynthesisBlock(in_ch, channels[res], w_dim, res, img_channels, conv_clamp)
            setattr(self, f"b{res}", block)
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last block's toRGB

    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"b{r}") for r in self.block_resolutions]

    def noise_layers(self) -> list[SynthesisLayer]:
        """Every layer that takes a noise input, in the order of their ``ws`` indices."""
        return [layer for block in self.blocks() for layer in block.layers()]

    def forward(
        self,
        ws: torch.Tensor,
        noise_mode: str = "const",
        noise: list[torch.Tensor] | None = None,
        fused: bool | None = None,
    ) -> torch.Tensor:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, not {noise_mode!r}")
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must have shape [N, {self.num_ws}, {self.w_dim}], not {list(ws.shape)}")
        if fused is None:  # whichever path measured fastest (bench/generator.py): on the CPU,
            fused = ws.device.type == "cuda"  # activation scaling won at every batch size
        x = img = None
        w_idx = n_idx = 0
        for block in self.blocks():
            n = block.num_conv
            block_noise = noise[n_idx : n_idx + n] if noise is not None else None
            x, img = block(x, img, ws[:, w_idx : w_idx + n + 1], noise_mode, block_noise, fused)
            w_idx += n
            n_idx += n
        return img


class Generator(nn.Module):
    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        self.z_dim, self.w_dim, self.resolution = config.z_dim, config.w_dim, config.resolution
        self.img_channels = config.img_channels
        self.synthesis = SynthesisNetwork(
            config.w_dim, config.resolution, config.img_channels, config.channels, config.conv_clamp
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            config.z_dim, config.w_dim, self.num_ws, config.mapping_layers, config.mapping_lr_mul
        )

    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping.w_avg

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, noise_mode: str = "const") -> torch.Tensor:
        return self.synthesis(self.mapping(z, truncation_psi), noise_mode)
