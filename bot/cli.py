"""``wspace``: every engine operation on local files, and the bot's entry point.

The engine is imported inside the commands that need it, so ``wspace serve`` keeps
torch out of the bot process (the engine runs in its own worker process).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(help="wspace: StyleGAN2 latent-space toys for a Discord community, and the same engine on local files.",
                  no_args_is_help=True, add_completion=False)
model_app = typer.Typer(help="Import, fetch and inspect generator checkpoints.", no_args_is_help=True)
app.add_typer(model_app, name="model")

ModelOpt = Annotated[Optional[Path], typer.Option("--model", "-m", help="Generator file (.safetensors, rosinality .pt, NVIDIA .pkl); default: the embedded model.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="torch device, e.g. cpu or cuda")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder")]


def fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def load_model(model: Path | None, device: str):
    from engine.checkpoints import CheckpointError, load_generator

    try:
        return load_generator(model, device)
    except CheckpointError as exc:
        fail(str(exc))


@app.command()
def generate(seed: Annotated[int, typer.Option(help="First seed")] = 1,
             count: Annotated[int, typer.Option(min=1, max=1024, help="How many faces")] = 16,
             truncation: Annotated[float, typer.Option("--truncation", "--psi", help="Truncation ψ (1 = none)")] = 1.0,
             out: OutOpt = Path("out"), model: ModelOpt = None, device: DeviceOpt = "cpu") -> None:
    """Draw faces from seeds: one PNG per seed and a grid."""
    from engine.render import montage, png_bytes, to_uint8
    from engine.sampling import MAX_SEED, synthesize, ws_from_seeds

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
def model_import(src: Annotated[Path, typer.Argument(help="rosinality .pt or NVIDIA .pkl")],
                 out: Annotated[Path, typer.Option("--out", "-o", help="Native .safetensors to write")]) -> None:
    """Convert a rosinality or NVIDIA checkpoint to the native format (no code from the file runs)."""
    from engine.checkpoints import save_native

    G = load_model(src, "cpu")
    model_id = save_native(G, out, G.provenance, model_id=G.model_id)
    typer.echo(f"wrote {out} (model id {model_id}, {G.resolution}px, {G.num_ws} ws)")


@model_app.command("info")
def model_info(model: Annotated[Optional[Path], typer.Argument(help="Model file; default: embedded")] = None) -> None:
    """Print a model's architecture and provenance as JSON."""
    import json

    from engine.checkpoints import describe

    typer.echo(json.dumps(describe(load_model(model, "cpu")), indent=2))


@model_app.command("fetch")
def model_fetch(name: Annotated[str, typer.Argument(help="Known model name, e.g. ffhq")],
                models_dir: Annotated[Path, typer.Option("--dir", help="Where models are kept")] = Path("models"),
                url: Annotated[Optional[str], typer.Option(help="Mirror URL to download from instead")] = None) -> None:
    """Download a published generator (resumable, SHA-256 checked) and import it."""
    from engine.checkpoints import save_native
    from engine.fetch import FetchError, fetch_known

    try:
        path, digest = fetch_known(name, models_dir, url)
    except FetchError as exc:
        fail(str(exc))
    G = load_model(path, "cpu")
    native = models_dir / f"{name}.safetensors"
    save_native(G, native, {**G.provenance, "sha256": digest}, model_id=G.model_id)
    typer.echo(f"fetched {path.name} (sha256 {digest}) and wrote {native}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
