"""Imported FFHQ encoders: e4e (``Encoder4Editing``) and pSp (``GradualStyleEncoder``).

Both read a face aligned as FFHQ is, resized to 256 and scaled to [-1, 1], through an IR-SE
body (a stack of residual bottlenecks with squeeze-and-excitation), and make W+ codes from
three of its feature maps joined top-down as an FPN: ``c1`` (the last 128-channel block),
``c2`` (the last 256-channel block) and ``c3`` (the last block). A *style head* turns a
feature map into one 512-vector: stride-2 3×3 convolutions (LeakyReLU 0.01) down to 1×1, then
an equalised linear layer. Coarse styles read ``c3``, middle ones ``p2 = up(c3) + lat1(c2)``,
fine ones ``p1 = up(p2) + lat2(c1)``.

- pSp: style ``i`` is its own head's output.
- e4e: head 0 gives ``w0`` for every style; style ``i ≥ 1`` adds head ``i``'s delta.

Either way ``latent_avg`` is added (``start_from_latent_avg``). Written from reading
omertov/encoder4editing (its ``models/encoders``); parameter names follow its state dict so
a checkpoint's tensors load by name. Every size comes from the file: the number of blocks
and their widths from the tensors' shapes, the number of styles from ``opts``.

A checkpoint is read without running code (its pickle may name only tensors and plain
containers, ``engine/model/checkpoints.py``), and written as our own safetensors file with the
generator it belongs to: the checkpoint's decoder, identified exactly as ``wspace model
import`` identifies it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

FORMAT_KEY = "wspace-ffhq-encoder"
KINDS = {"Encoder4Editing": "e4e", "GradualStyleEncoder": "psp"}
INPUT_SIZE = 256  # what both encoders were trained on
MAX_BLOCKS, MAX_WIDTH, MAX_STYLES = 64, 2048, 32
MAX_ENCODER_PARAMETERS = 400 * 10**6  # e4e's FFHQ encoder has ~ 1.1e8
COARSE, MIDDLE = 3, 7  # styles below COARSE read c3, below MIDDLE p2, the rest p1 (both papers)


class EncoderImportError(ValueError):
    """Not an encoder this engine imports; ``str`` is one sentence."""


@dataclass
class Spec:
    """The architecture, as read from a checkpoint."""

    kind: str  # "e4e" or "psp"
    widths: list[int]  # output channels of each body block
    se: bool  # squeeze-and-excitation in every block
    n_styles: int
    head_convs: list[int]  # stride-2 convs of each style head (4, 5, 6 at 256 px: coarse, middle, fine)
    w_dim: int = 512
    latent_avg_added: bool = True

    def check(self) -> None:
        if self.kind not in KINDS.values():
            raise EncoderImportError(f"Unknown encoder kind {self.kind!r}.")
        whole = [self.n_styles, self.w_dim, *self.widths, *self.head_convs]
        if not (isinstance(self.widths, list) and isinstance(self.head_convs, list)
                and all(type(n) is int for n in whole)
                and isinstance(self.se, bool) and isinstance(self.latent_avg_added, bool)):
            raise EncoderImportError("The encoder's architecture is not given in whole numbers.")
        if not (
            1 <= len(self.widths) <= MAX_BLOCKS
            and all(1 <= w <= MAX_WIDTH for w in self.widths)
            and 1 <= self.n_styles <= MAX_STYLES
            and 1 <= self.w_dim <= MAX_WIDTH
            and len(self.head_convs) == self.n_styles
            and all(isinstance(c, int) and 1 <= c <= 12 for c in self.head_convs)
        ):
            raise EncoderImportError("The encoder's architecture is out of the bounds this engine loads.")
        for width in (128, 256):
            if width not in self.widths:
                raise EncoderImportError(f"The encoder's body has no {width}-channel block for its FPN.")

    def strides(self) -> list[int]:
        """Each stage's first block halves the size (the body's first block too)."""
        return [2 if i == 0 or w != self.widths[i - 1] else 1 for i, w in enumerate(self.widths)]

    def taps(self) -> tuple[int, int, int]:
        """Indices of the blocks whose outputs feed the FPN: c1, c2, c3."""
        last = {w: i for i, w in enumerate(self.widths)}
        return last[128], last[256], len(self.widths) - 1


# --- the network ------------------------------------------------------------------------------


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))
        return x * gate


class Bottleneck(nn.Module):
    """BN → 3×3 conv → PReLU → 3×3 conv (the block's stride) → BN [→ SE], plus a shortcut: a
    1×1 strided conv + BN when the width changes, else plain subsampling."""

    def __init__(self, cin: int, cout: int, stride: int, se: bool) -> None:
        super().__init__()
        self.shortcut_layer = (
            nn.MaxPool2d(1, stride)
            if cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )
        layers = [
            nn.BatchNorm2d(cin),
            nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
            nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.res_layer = nn.Sequential(*layers, *([SqueezeExcite(cout)] if se else []))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class EqualLinear(nn.Module):
    """A linear layer whose weight is scaled by 1/sqrt(fan-in) when used (StyleGAN2's)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(cout, cin))
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight / math.sqrt(self.weight.shape[1]), self.bias)


class StyleHead(nn.Module):
    """A feature map → one style: stride-2 convs down to 1×1 (log2 of its side), then a linear layer."""

    def __init__(self, channels: int, n_convs: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(n_convs):
            layers += [nn.Conv2d(channels, channels, 3, 2, 1), nn.LeakyReLU(0.01)]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).flatten(1))


def _up_add(top: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
    return F.interpolate(top, size=lateral.shape[2:], mode="bilinear", align_corners=True) + lateral


class FFHQEncoder(nn.Module):
    def __init__(self, spec: Spec) -> None:
        super().__init__()
        spec.check()
        self.spec = spec
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        cins = [64] + spec.widths[:-1]
        self.body = nn.Sequential(*[Bottleneck(a, b, s, spec.se) for a, b, s in zip(cins, spec.widths, spec.strides())])
        top = spec.widths[-1]
        self.styles = nn.ModuleList(StyleHead(top, n) for n in spec.head_convs)
        self.latlayer1 = nn.Conv2d(256, top, 1)
        self.latlayer2 = nn.Conv2d(128, top, 1)
        self.register_buffer("latent_avg", torch.zeros(spec.n_styles, spec.w_dim))
        self.generator = "unknown"  # the model id of the generator it was trained with

    @property
    def w_avg(self) -> torch.Tensor:  # where engine.encoder.encode looks for the device
        return self.latent_avg[0]

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i1, i2, i3 = self.spec.taps()
        x = self.input_layer(x)
        taps = {}
        for i, block in enumerate(self.body):
            x = block(x)
            if i in (i1, i2, i3):
                taps[i] = x
        return taps[i1], taps[i2], taps[i3]

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, 256, 256]`` in [-1, 1] → what the encoder itself outputs, ``[N, n_styles, w_dim]``."""
        c1, c2, c3 = self.features(x)
        p2 = _up_add(c3, self.latlayer1(c2)) if self.spec.n_styles > COARSE else None
        p1 = _up_add(p2, self.latlayer2(c1)) if self.spec.n_styles > MIDDLE else None
        feeds = [c3 if i < COARSE else p2 if i < MIDDLE else p1 for i in range(self.spec.n_styles)]
        outs = [head(f) for head, f in zip(self.styles, feeds)]
        if self.spec.kind == "psp":
            return torch.stack(outs, dim=1)
        w0 = outs[0]
        return torch.stack([w0] + [w0 + d for d in outs[1:]], dim=1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """An aligned face ``[N, 3, H, W]`` in [-1, 1] (any size) → W+ codes ``[N, n_styles, w_dim]``."""
        if img.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            img = F.interpolate(
                img,
                size=(INPUT_SIZE, INPUT_SIZE),
                mode="bilinear",
                align_corners=False,
                antialias=img.shape[-1] > INPUT_SIZE,
            )
        codes = self.heads(img)
        return codes + self.latent_avg if self.spec.latent_avg_added else codes


# --- reading a checkpoint -----------------------------------------------------------------------


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict, torch.Tensor | None]:
    """``(state_dict, opts, latent_avg)`` of an e4e/pSp checkpoint, loaded as data only."""
    from engine.model.checkpoints import MAX_MODEL_BYTES, CheckpointError, check_torch_zip

    path = Path(path)
    if not path.is_file():
        raise EncoderImportError(f"No file at {path}.")
    if path.stat().st_size > MAX_MODEL_BYTES:
        raise EncoderImportError(
            f"{path.name} is larger than any encoder this engine imports ({MAX_MODEL_BYTES // 2**30} GiB)."
        )
    try:
        check_torch_zip(path)
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except CheckpointError as exc:
        raise EncoderImportError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 (torch.load raises many types for a damaged file: one sentence)
        raise EncoderImportError(f"{path.name} is not a readable torch checkpoint ({type(exc).__name__}).") from None
    if not (isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict) and isinstance(ckpt.get("opts"), dict)):
        raise EncoderImportError(f"{path.name} is not an e4e or pSp checkpoint (no state_dict and opts).")
    sd, opts = ckpt["state_dict"], ckpt["opts"]
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise EncoderImportError(f"{path.name}'s state_dict holds something other than named tensors.")
    if not all(isinstance(k, str) and (v is None or isinstance(v, (str, int, float, bool))) for k, v in opts.items()):
        raise EncoderImportError(f"{path.name}'s opts hold something other than plain settings.")
    latent_avg = ckpt.get("latent_avg")
    if latent_avg is not None and not isinstance(latent_avg, torch.Tensor):
        raise EncoderImportError(f"{path.name}'s latent_avg is not a tensor.")
    return sd, opts, latent_avg


def spec_of(sd: dict[str, torch.Tensor], opts: dict) -> Spec:
    kind = KINDS.get(opts.get("encoder_type"))
    if kind is None:
        raise EncoderImportError(
            f"opts['encoder_type'] is {str(opts.get('encoder_type'))[:40]!r}; this engine imports "
            "Encoder4Editing (e4e) and GradualStyleEncoder (pSp)."
        )
    size = opts.get("stylegan_size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 8 or size > 4096 or size & (size - 1):
        raise EncoderImportError("opts['stylegan_size'] is not a power of two the engine knows.")
    n_blocks = 0
    while f"encoder.body.{n_blocks}.res_layer.1.weight" in sd:
        n_blocks += 1
        if n_blocks > MAX_BLOCKS:
            raise EncoderImportError("The encoder's body has more blocks than this engine loads.")
    widths = [int(sd[f"encoder.body.{i}.res_layer.1.weight"].shape[0]) for i in range(n_blocks)]
    w = sd.get("encoder.styles.0.linear.weight")
    n_styles = 2 * int(math.log2(size)) - 2
    if n_styles > MAX_STYLES:
        raise EncoderImportError("The encoder has more styles than this engine loads.")
    head_convs = [
        sum(1 for k in range(0, 2 * 12, 2) if f"encoder.styles.{i}.convs.{k}.weight" in sd) for i in range(n_styles)
    ]
    heads = sum(1 for k in sd if k.startswith("encoder.styles.") and k.endswith(".linear.weight"))
    if heads != n_styles or 0 in head_convs:
        raise EncoderImportError(
            f"opts['stylegan_size'] = {size} asks for {n_styles} styles, but the file holds {heads} style heads."
        )
    spec = Spec(
        kind,
        widths,
        "encoder.body.0.res_layer.5.fc1.weight" in sd,
        n_styles,
        head_convs,
        int(w.shape[0]) if w is not None else 0,
        bool(opts.get("start_from_latent_avg", True)),
    )
    spec.check()
    return spec


def build(spec: Spec, state: dict[str, torch.Tensor], latent_avg: torch.Tensor | None) -> FFHQEncoder:
    """The encoder with ``state`` (names as the checkpoint's, without ``encoder.``); shapes checked."""
    from engine.model.checkpoints import parameters_of

    if parameters_of(lambda: FFHQEncoder(spec)) > MAX_ENCODER_PARAMETERS:  # weighed before it is allocated
        raise EncoderImportError(f"The encoder would hold over {MAX_ENCODER_PARAMETERS // 10**6} million parameters.")
    E = FFHQEncoder(spec)
    expected = {
        k: v.shape for k, v in E.state_dict().items() if k != "latent_avg" and not k.endswith("num_batches_tracked")
    }
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected) - {"latent_avg"})
    if missing or unexpected:
        raise EncoderImportError(
            f"The encoder's tensors do not match its architecture (missing {missing[:2]}, unexpected {unexpected[:2]})."
        )
    wrong = [k for k, s in expected.items() if tuple(state[k].shape) != tuple(s)]
    if wrong:
        raise EncoderImportError(f"The encoder's tensor {wrong[0]} has the wrong shape.")
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise EncoderImportError("The encoder holds NaN or infinite weights.")
    if latent_avg is None and "latent_avg" in state:
        latent_avg = state["latent_avg"]
    E.load_state_dict({k: state[k].float() for k in expected}, strict=False)
    if latent_avg is not None:
        avg = latent_avg.float().reshape(-1, spec.w_dim)
        if avg.shape[0] not in (1, spec.n_styles) or not torch.isfinite(avg).all():
            raise EncoderImportError("The checkpoint's latent_avg does not fit its styles.")
        E.latent_avg.copy_(avg.expand(spec.n_styles, -1))
    elif spec.latent_avg_added:
        raise EncoderImportError("The checkpoint adds latent_avg to its codes but holds none.")
    return E.eval().requires_grad_(False)


def decoder_model_id(sd: dict[str, torch.Tensor], latent_avg: torch.Tensor | None, name: str) -> str | None:
    """The model id ``wspace model import`` gives the checkpoint's decoder (None: it has none)."""
    from engine.model.checkpoints import CheckpointError, model_id_for, rosinality_state

    decoder = {k[len("decoder.") :]: v for k, v in sd.items() if k.startswith("decoder.")}
    if not decoder:
        return None
    try:
        state, config = rosinality_state(decoder, latent_avg, name)
    except CheckpointError as exc:
        raise EncoderImportError(f"The checkpoint's decoder is not a StyleGAN2 generator: {exc}") from None
    return model_id_for(state, config)


def import_checkpoint(path: str | Path) -> FFHQEncoder:
    sd, opts, latent_avg = read_checkpoint(path)
    spec = spec_of(sd, opts)
    E = build(spec, {k[len("encoder.") :]: v for k, v in sd.items() if k.startswith("encoder.")}, latent_avg)
    E.generator = decoder_model_id(sd, latent_avg, Path(path).name) or "unknown"
    return E


# --- our file ----------------------------------------------------------------------------------


def save(E: FFHQEncoder, path: str | Path, provenance: dict | None = None) -> None:
    state = {
        k: v.detach().cpu().float().contiguous()
        for k, v in E.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    meta = {"spec": asdict(E.spec), "model_id": E.generator, "provenance": provenance or {}}
    save_file(state, str(path), metadata={FORMAT_KEY: json.dumps(meta)})


def load(path: str | Path, device: str | torch.device = "cpu") -> FFHQEncoder:
    """Our imported-encoder file; anything wrong is one sentence (:class:`EncoderImportError`)."""
    from engine.model.checkpoints import MAX_MODEL_BYTES

    path = Path(path)
    if not path.is_file():
        raise EncoderImportError(f"No encoder file at {path}.")
    if path.stat().st_size > MAX_MODEL_BYTES:
        raise EncoderImportError(f"{path.name} is larger than any encoder this engine loads.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get(FORMAT_KEY) or "null")
            if not isinstance(meta, dict) or not isinstance(meta.get("spec"), dict):
                raise EncoderImportError(f"{path.name} is not an encoder written by `wspace encoder import`.")
            spec = Spec(
                **{
                    k: meta["spec"][k]
                    for k in ("kind", "widths", "se", "n_styles", "head_convs", "w_dim", "latent_avg_added")
                }
            )
            if not (isinstance(spec.widths, list) and all(isinstance(w, int) for w in spec.widths)):
                raise EncoderImportError(f"{path.name}'s architecture is damaged.")
            spec.check()
            state = {k: f.get_tensor(k) for k in f.keys()}
    except EncoderImportError:
        raise
    except Exception as exc:  # noqa: BLE001 (any failure to read a hostile file is one sentence)
        raise EncoderImportError(
            f"{path.name} is not an encoder this engine can load ({type(exc).__name__})."
        ) from None
    E = build(spec, state, state.get("latent_avg"))
    E.generator = str(meta.get("model_id", "unknown"))[:64]
    return E.to(device)


def codes(E: FFHQEncoder, inputs: np.ndarray, batch: int = 8) -> np.ndarray:
    """W+ codes ``[N, n_styles, w_dim]`` of pre-aligned inputs ``[N, 3, 256, 256]`` in [-1, 1]."""
    x = np.asarray(inputs)
    if x.ndim != 4 or x.shape[1] != 3 or x.dtype.kind != "f" or not np.isfinite(x).all():
        raise EncoderImportError("The inputs must be finite numbers shaped [N, 3, H, W].")
    device = E.latent_avg.device
    with torch.no_grad():
        out = [
            E(torch.from_numpy(np.ascontiguousarray(x[i : i + batch], dtype=np.float32)).to(device)).cpu().numpy()
            for i in range(0, len(x), batch)
        ]
    return np.concatenate(out) if out else np.zeros((0, E.spec.n_styles, E.spec.w_dim), np.float32)
