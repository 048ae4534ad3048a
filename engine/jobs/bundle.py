"""What an engine loads for one model, found by one rule: the generator file and its
siblings ``<stem>.directions.npz`` and ``<stem>.encoder.safetensors``.

The CLI, the local worker, the Redis worker and the benches all load a model through
:func:`load_bundle`, so a model, its directions and its encoder never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.latent.directions import Direction, load_directions
from engine.model.checkpoints import DEFAULT_MODEL, CheckpointError, load_generator
from engine.model.encoder import Encoder, load_encoder


def model_path_or_default(model_path: str | Path | None) -> Path:
    return Path(model_path) if model_path else DEFAULT_MODEL


def directions_path_for(model_path: str | Path | None) -> Path:
    path = model_path_or_default(model_path)
    return path.with_name(path.stem + ".directions.npz")


def encoder_path_for(model_path: str | Path | None) -> Path:
    path = model_path_or_default(model_path)
    return path.with_name(path.stem + ".encoder.safetensors")


@dataclass
class Bundle:
    G: object  # engine.model.networks.Generator
    model_id: str
    provenance: dict
    directions: dict[str, Direction] = field(default_factory=dict)
    encoder: Encoder | None = None  # a first guess for projections, when this model has one
    directions_path: Path | None = None


def load_bundle(model_path: str | Path | None = None, device: str = "cpu",
                directions_path: str | Path | None = None, encoder_path: str | Path | None = None) -> Bundle:
    """The generator at ``model_path`` (default: the embedded model), the directions learned
    for it (``directions_path``, default: its sibling file) and its encoder: ``encoder_path``
    (an e4e or pSp encoder imported with ``wspace encoder import``, which must belong to this
    generator), else the model's own sibling encoder when it has one."""
    G = load_generator(model_path, device)
    directions_path = Path(directions_path) if directions_path else directions_path_for(model_path)
    encoder = (imported_encoder(encoder_path, G, device) if encoder_path else
               load_encoder(encoder_path_for(model_path), G.model_id, device))
    return Bundle(G, G.model_id, getattr(G, "provenance", {}), load_directions(directions_path, G.model_id),
                  encoder, directions_path)


def imported_encoder(path: str | Path, G, device: str):
    """An imported FFHQ encoder, refused in one sentence unless it was trained with ``G``."""
    from engine.model import psp

    try:
        E = psp.load(path, device)
    except psp.EncoderImportError as exc:
        raise CheckpointError(str(exc)) from None
    if E.generator != G.model_id or E.spec.n_styles != G.num_ws or E.spec.w_dim != G.w_dim:
        raise CheckpointError(f"{Path(path).name} belongs to generator {E.generator}, not to the loaded model "
                              f"{G.model_id}; load its own decoder (wspace model import CHECKPOINT -o FILE) with it.")
    return E
