"""The engine's model tools: ``wspace generate``, ``wspace model …`` and ``wspace directions …``
(mounted on the ``wspace`` command by ``engine/cli/commands.py``), and the options every engine
command shares."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

# Plain help (rich_markup_mode=None): typer's rich panels print "<bool>" after every flag, --help included.
model_app = typer.Typer(rich_markup_mode=None, help="Import, fetch and inspect generator checkpoints.",
                        no_args_is_help=True)
directions_app = typer.Typer(rich_markup_mode=None, help="Learn or import attribute directions for a model.",
                             no_args_is_help=True)
encoder_app = typer.Typer(rich_markup_mode=None, no_args_is_help=True,
                          help="Import e4e and pSp encoders (FFHQ) as the projector's first guess.")

ModelOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--model", "-m", help="Generator file (.safetensors, rosinality .pt, NVIDIA .pkl); default: the embedded model."
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="torch device, e.g. cpu or cuda")]
EncoderOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--encoder",
        help="an e4e/pSp encoder from `wspace encoder import` "
        "(it must belong to the model): the projector's first guess",
    ),
]


def _out_folder(out: Path) -> Path:
    """``-o``: a folder, or a place where one can be made (checked before any work)."""
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"{out} is a file; name a folder (it is made if absent).")
    parent = next((p for p in out.absolute().parents if p.exists()), None)
    if not out.exists() and parent is not None and not parent.is_dir():
        raise typer.BadParameter(f"{parent} is a file, so no folder can be made under it.")
    return out


OutOpt = Annotated[
    Path, typer.Option("--out", "-o", help="Output folder (made when the command succeeds)", callback=_out_folder)
]
THREADS: dict[str, int | None] = {"threads": None}  # `wspace --threads N`: torch CPU threads of engine commands


def fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def loaded(load, model: Path | None, device: str):
    """``load(model, device)`` on a prepared process; a bad device or model file is one sentence."""
    from engine.model.checkpoints import CheckpointError
    from engine.model.runtime import device_problem, prepare_process

    if problem := device_problem(device):
        fail(problem)
    prepare_process(THREADS["threads"])
    try:
        return load(model, device)
    except CheckpointError as exc:
        fail(str(exc))


def load_model(model: Path | None, device: str):
    from engine.model.checkpoints import load_generator

    return loaded(load_generator, model, device)


def generate(
    seed: Annotated[int, typer.Option(help="First seed")] = 1,
    count: Annotated[int, typer.Option(min=1, max=1024, help="How many faces")] = 16,
    truncation: Annotated[float, typer.Option("--truncation", "--psi", help="Truncation ψ (1 = none)")] = 1.0,
    out: OutOpt = Path("out"),
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Draw faces from seeds: one PNG per seed and a grid."""
    from engine.model.images import montage, png_bytes, to_uint8
    from engine.model.sampling import MAX_SEED, synthesize, ws_from_seeds

    if seed < 0 or seed + count - 1 > MAX_SEED:
        fail(f"seeds must lie between 0 and {MAX_SEED}.")
    G = load_model(model, device)
    seeds = list(range(seed, seed + count))
    images = to_uint8(synthesize(G, ws_from_seeds(G, seeds, truncation)))
    out.mkdir(parents=True, exist_ok=True)
    for s, im in zip(seeds, images):
        (out / f"seed{s:04d}.png").write_bytes(png_bytes(im))
    (out / "grid.png").write_bytes(png_bytes(montage(images)))
    typer.echo(f"wrote {count} faces and grid.png to {out}/ (model {G.model_id}, ψ={truncation})")


@model_app.command("import")
def model_import(
    src: Annotated[Path, typer.Argument(help="rosinality .pt or NVIDIA .pkl")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Native .safetensors to write")],
) -> None:
    """Convert a rosinality or NVIDIA checkpoint to the native format (no code from the file runs)."""
    from engine.model.checkpoints import save_native

    G = load_model(src, "cpu")
    model_id = save_native(G, out, G.provenance, model_id=G.model_id)
    typer.echo(f"wrote {out} (model id {model_id}, {G.resolution}px, {G.num_ws} ws)")


@model_app.command("info")
def model_info(model: Annotated[Optional[Path], typer.Argument(help="Model file; default: embedded")] = None) -> None:
    """Print a model's architecture and provenance as JSON."""
    import json

    from engine.model.checkpoints import describe

    typer.echo(json.dumps(describe(load_model(model, "cpu")), indent=2))


@model_app.command("fetch")
def model_fetch(
    name: Annotated[str, typer.Argument(help="Known model name, e.g. ffhq")],
    models_dir: Annotated[Path, typer.Option("--dir", help="Where models are kept")] = Path("models"),
    url: Annotated[Optional[str], typer.Option(help="Mirror URL to download from instead")] = None,
) -> None:
    """Download a published generator (resumable, SHA-256 checked) and import it."""
    from engine.model.checkpoints import save_native
    from engine.model.fetch import FetchError, fetch_known

    try:
        path, digest = fetch_known(name, models_dir, url)
    except FetchError as exc:
        fail(str(exc))
    G = load_model(path, "cpu")
    native = models_dir / f"{name}.safetensors"
    save_native(G, native, {**G.provenance, "sha256": digest}, model_id=G.model_id)
    typer.echo(f"fetched {path.name} (sha256 {digest}) and wrote {native}")


@directions_app.command("learn")
def directions_learn(
    attributes: Annotated[Optional[list[str]], typer.Argument(help="age, gender, smile, yaw (default: all)")] = None,
    samples: Annotated[int, typer.Option(min=100)] = 10_000,
    seed: int = 7,
    out: Annotated[Optional[Path], typer.Option("--out", "-o")] = None,
    model: ModelOpt = None,
) -> None:
    """Learn directions InterFaceGAN-style (offline labellers), plus SeFa factors."""
    import json

    from tqdm import tqdm

    from engine.face.labels import ATTRIBUTES
    from engine.jobs.bundle import directions_path_for
    from engine.latent.directions import load_directions, save_directions
    from engine.latent.learn import learn_directions

    attributes = tuple(attributes or ATTRIBUTES)
    unknown = [a for a in attributes if a not in ATTRIBUTES]
    if unknown:
        fail(f"unknown attribute {unknown[0]!r}; choose from {', '.join(ATTRIBUTES)}.")
    G = load_model(model, "cpu")
    path = out or directions_path_for(model)
    bar = tqdm(total=samples, desc="render+label", unit="face")
    learned, report = learn_directions(
        G, samples, seed=seed, attributes=attributes, progress=lambda k, n: bar.update(k - bar.n)
    )
    bar.close()
    keep = load_directions(path, G.model_id)
    keep.update({d.name: d for d in learned})
    save_directions(list(keep.values()), path)
    typer.echo(json.dumps(report, indent=2))
    typer.echo(f"wrote {path}")


def operator_file(source: Path, out: Path | None) -> Path:
    """Where a directions change is written: ``out``, else the file it was read from, but
    never a file shipped inside the package (an upgrade would overwrite it, and in a wheel
    install it is site-packages)."""
    from engine.model.checkpoints import MODELS_DIR

    target = out or source
    if target.resolve().parent == MODELS_DIR.resolve():
        fail(
            f"{target.name} ships with wspace and is not changed in place; write your own copy with "
            "-o FILE and set engine.directions to it."
        )
    if target.exists() and not target.is_file():
        fail(f"{target} is not a file.")
    return target


@directions_app.command("layers")
def directions_layers(
    name: Annotated[str, typer.Argument(help="a direction of the model, e.g. smile")],
    layers: Annotated[str, typer.Argument(help="all, coarse, middle, fine, or a style range like 1-3")],
    directions: Annotated[
        Optional[Path], typer.Option("--directions", help="directions .npz (default: the model's)")
    ] = None,
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out", "-o", help="write the directions here (default: where they were read, unless shipped with wspace)"
        ),
    ] = None,
    model: ModelOpt = None,
) -> None:
    """Set the styles a direction moves by default (what /edit uses); point engine.directions at the file written."""
    from engine.jobs.bundle import directions_path_for
    from engine.latent.directions import load_directions, save_directions
    from engine.latent.edits import parse_layers

    G = load_model(model, "cpu")
    path = directions or directions_path_for(model)
    target = operator_file(path, out)
    keep = load_directions(path, G.model_id)
    if name not in keep:
        fail(f"{path.name} has no direction {name!r} for this model (it has {', '.join(keep) or 'none'}).")
    try:
        parse_layers(G.num_ws, layers)
    except ValueError as exc:
        fail(f"{exc}.")
    keep[name].layers = layers
    save_directions(list(keep.values()), target)
    typer.echo(f'{name} now moves styles {layers} by default ({target}; engine.directions = "{target}")')


@directions_app.command("import")
def directions_import(
    npy: Path,
    name: Annotated[str, typer.Option(help="name members will use")],
    layers: Annotated[str, typer.Option(help="all, coarse, middle or fine")] = "all",
    out: Annotated[Optional[Path], typer.Option("--out", "-o")] = None,
    model: ModelOpt = None,
) -> None:
    """Import a direction saved by another tool (.npy of shape (w_dim,), (1, w_dim) or (num_ws, w_dim))."""
    import re

    from engine.jobs.bundle import directions_path_for
    from engine.latent.directions import DirectionError, import_npy, load_directions, save_directions

    if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name):
        fail("a direction name is 1-32 lower-case letters, digits or underscores.")
    G = load_model(model, "cpu")
    try:
        d = import_npy(npy, G, name, layers)
    except DirectionError as exc:
        fail(str(exc))
    path = directions_path_for(model)
    target = operator_file(path, out)
    keep = load_directions(target if target.is_file() else path, G.model_id)
    keep[name] = d
    save_directions(list(keep.values()), target)
    typer.echo(f"imported {name} into {target}")


@encoder_app.command("import")
def encoder_import(
    checkpoint: Annotated[Path, typer.Argument(help="e4e_ffhq_encode.pt or psp_ffhq_encode.pt")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the encoder file to write (.safetensors)")],
) -> None:
    """Read an e4e or pSp checkpoint without running any of it, and write our encoder file."""
    from engine.model import psp

    if out.exists() and not out.is_file():
        fail(f"{out} is not a file.")
    try:
        E = psp.import_checkpoint(checkpoint)
    except psp.EncoderImportError as exc:
        fail(str(exc))
    psp.save(E, out, {"imported_from": checkpoint.name, "kind": E.spec.kind})
    paired = (
        f"it belongs to generator {E.generator}: load that model with it (`wspace model import "
        f"{checkpoint.name} -o MODEL.safetensors` imports the checkpoint's decoder)"
        if E.generator != "unknown"
        else "the checkpoint has no decoder to pair it with"
    )
    typer.echo(
        f"{E.spec.kind} encoder, {len(E.spec.widths)} IR{'-SE' if E.spec.se else ''} blocks, {E.spec.n_styles} styles "
        f"-> {out}; {paired}."
    )


@encoder_app.command("codes")
def encoder_codes(
    encoder: Annotated[Path, typer.Argument(help="an encoder from `wspace encoder import`")],
    inputs: Annotated[Path, typer.Option("--inputs", help="[N, 3, 256, 256] float array in [-1, 1] (.npy)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="where the [N, styles, 512] codes go (.npy)")],
    device: DeviceOpt = "cpu",
) -> None:
    """The W+ codes of pre-aligned inputs (to check an import, or for parity tests)."""
    import numpy as np

    from engine.latent.kept import MAX_NPZ_MEMBER_BYTES
    from engine.model import psp

    if not inputs.is_file():
        fail(f"no file at {inputs}.")
    if inputs.stat().st_size > 16 * MAX_NPZ_MEMBER_BYTES:
        fail(f"{inputs} is larger than this command reads.")
    try:
        x = np.load(inputs, allow_pickle=False)
        E = loaded(lambda _m, d: psp.load(encoder, d), None, device)
        codes = psp.codes(E, x)
    except psp.EncoderImportError as exc:
        fail(str(exc))
    except (ValueError, OSError) as exc:
        fail(f"{inputs} is not a .npy array ({type(exc).__name__}).")
    np.save(out, codes)
    typer.echo(f"{len(codes)} codes [{', '.join(map(str, codes.shape[1:]))}] -> {out}")
