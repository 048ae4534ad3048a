"""The modulated convolution and its helpers: pure tensor functions the synthesis layers
(engine/model/networks.py) are made of — the FIR upsampling filter, demodulation, per-row
products and convolutions that keep every image of a batch close to its arithmetic alone
(engine/latent/batch.py says how close, and why not exact).
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

FIR_TAPS = (1.0, 3.0, 3.0, 1.0)


def fir_filter() -> torch.Tensor:
    taps = torch.tensor(FIR_TAPS)
    f = torch.outer(taps, taps)
    return f / f.sum()


def blur_upsample(
    x: torch.Tensor, f: torch.Tensor, pad: tuple[int, int], up: int = 1, gain: float = 4.0
) -> torch.Tensor:
    """FIR filter with optional zero-insertion upsampling (upfirdn2d with down=1).

    ``gain`` 4 restores the energy of a 2× upsampling, whether the zeros were inserted
    here (``up=2``) or by a stride-2 transposed convolution before.
    """
    n, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    k = (f * gain).to(x.dtype)[None, None].expand(c, 1, *f.shape)
    if pad[0] == pad[1]:  # let the convolution pad: no padded copy of the activations
        return F.conv2d(x, k, groups=c, padding=pad[0])
    return F.conv2d(F.pad(x, [pad[0], pad[1], pad[0], pad[1]]), k, groups=c)


def rows_times(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``x [N, K] @ m [K, M]`` with every row computed by the same kernel whatever ``N``.

    A plain matrix product picks its kernel by the number of rows, so a style would change
    in the 6th digit with who else is in the batch; a batched product of single rows keeps
    one kernel (on the CPUs measured: bench/numerics.py).
    """
    return torch.bmm(x.unsqueeze(1), m.expand(x.shape[0], -1, -1)).squeeze(1)


# ATen runs a *single* CPU image of at most this many values through its own convolution
# instead of oneDNN's (ConvUtils ``use_mkldnn``); any batch of two or more goes to oneDNN.
# So a lone small image is convolved as a pair of itself: a drawing is then the same alone
# or beside others' (0 levels apart at every setting bench/numerics.py ran), and a lone
# projection stays close to a batched one. Not a promise of bit-identity: oneDNN's own
# split of the work still depends on the batch, threads and CPU (engine/latent/batch.py).
LONE_IMAGE_NUMEL = 20480


def as_in_a_batch(conv, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """``conv(x, …)`` computed exactly as it would be for ``x`` inside a larger batch."""
    if x.shape[0] == 1 and x.device.type == "cpu" and x.numel() <= LONE_IMAGE_NUMEL:
        return conv(torch.cat([x, x]), *args, **kwargs)[:1]
    return conv(x, *args, **kwargs)


def inference_only(*tensors: torch.Tensor) -> bool:
    """True when no graph is being recorded for these tensors: activations may then be
    overwritten in place and weight-derived tensors cached."""
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


class WeightCache:
    """Tensors derived from a weight (Σ_k w², the transposed layout), recomputed only when
    the weight changes (its storage or version counter) and never while autograd needs them."""

    def __init__(self) -> None:
        self.owner: weakref.ref | None = None  # the very tensor: a freed one's address may be reused
        self.key: tuple | None = None  # its storage (module.to() swaps .data in place), version, type
        self.values: dict[str, torch.Tensor] = {}

    def get(self, weight: torch.Tensor, name: str, make) -> torch.Tensor:
        if not inference_only(weight):
            return make(weight)
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
        if self.owner is None or self.owner() is not weight or key != self.key:
            self.owner, self.key, self.values = weakref.ref(weight), key, {}
        if name not in self.values:
            self.values[name] = make(weight)
        return self.values[name]


def weight_energy(weight: torch.Tensor) -> torch.Tensor:
    """Σ over the kernel of w², shape [out, in]: the demodulation coefficients are then
    ``rsqrt(styles² @ energy.T)``."""
    return weight.square().sum(dim=[2, 3])


def transposed_weight(weight: torch.Tensor) -> torch.Tensor:
    return weight.transpose(0, 1).contiguous()


# A convolution over channels-last activations first copies its kernel into channels-last
# (ATen's ``_convolution``), in the forward pass and again in the backward: ten 2.4 MB copies
# per projection step of the embedded model. The kernel is kept in that layout instead: the
# same values, the same oneDNN call, the same result to the bit; a lone member's step 1.3×
# faster at 2 threads (bench/lone_project.py compares both in one run; off there as the baseline).
NHWC_KERNELS = True

def as_nhwc(weight: torch.Tensor) -> torch.Tensor:
    return weight.contiguous(memory_format=torch.channels_last)


def transposed_nhwc(weight: torch.Tensor) -> torch.Tensor:
    return weight.transpose(0, 1).contiguous(memory_format=torch.channels_last)


def modulated_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool,
    up: int,
    fused: bool,
    cache: WeightCache | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Modulated convolution without the upsampling blur.

    Returns the (pre-blur) result and the demodulation coefficients still to be applied
    (``None`` when already applied or not demodulating). Keeping the coefficients out lets
    the caller fold them into the noise addition. When nothing records a graph, ``x`` is
    scaled in place: callers hand over activations they no longer need.
    """
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    pad = kh // 2 if up == 1 else 0
    cache = cache or WeightCache()
    if not fused:
        dcoefs = None
        if demodulate:
            energy = cache.get(weight, "energy", weight_energy)
            dcoefs = (rows_times(styles.square(), energy.t()) + 1e-8).rsqrt()
        s = styles.reshape(n, -1, 1, 1).to(x.dtype)
        x = x.mul_(s) if inference_only(x, styles) else x * s
        nhwc = NHWC_KERNELS and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        if up == 1:
            kernel = cache.get(weight, "nhwc", as_nhwc) if nhwc else weight
            x = as_in_a_batch(F.conv2d, x, kernel.to(x.dtype), padding=pad)
        else:
            weight_t = cache.get(weight, "transposed_nhwc" if nhwc else "transposed",
                                 transposed_nhwc if nhwc else transposed_weight).to(x.dtype)
            x = as_in_a_batch(F.conv_transpose2d, x, weight_t, stride=up)
        return x, dcoefs
    w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(n, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    if up == 1:
        x = F.conv2d(x, w.reshape(-1, in_ch, kh, kw).to(x.dtype), padding=pad, groups=n)
    else:
        w = w.transpose(1, 2).reshape(n * in_ch, out_ch, kh, kw)
        x = F.conv_transpose2d(x, w.to(x.dtype), stride=up, groups=n)
    return x.reshape(n, out_ch, *x.shape[2:]), None


def to_rgb_nhwc(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """A modulated 1×1 convolution to a few channels as one batched matrix product over
    channels-last activations: reads ``x`` once and never writes a scaled copy of it."""
    n, c, h, w = x.shape
    per_sample = weight.reshape(1, -1, c) * styles.reshape(n, 1, c)  # [N, out, C]
    rows = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view: x is channels-last
    y = torch.bmm(rows, per_sample.transpose(1, 2).to(x.dtype))  # [N, HW, out]
    return y.reshape(n, h, w, -1).permute(0, 3, 1, 2)
