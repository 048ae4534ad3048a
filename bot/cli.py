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
directions_app = typer.Typer(help="Learn or import attribute directions for a model.", no_args_is_help=True)
app.add_typer(directions_app, name="directions")

ModelOpt = Annotated[Optional[Path], typer.Option("--model", "-m", help="Generator file (.safetensors, rosinality .pt, NVIDIA .pkl); default: the embedded model.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="torch device, e.g. cpu or cuda")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder")]


def fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def load_model(model: Path | None, device: str):
    from engine.checkpoints import CheckpointError, load_generator
    from engine.runtime import device_problem, prepare_process

    if problem := device_problem(device):
        fail(problem)
    prepare_process()
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


def _engine(model: Path | None, device: str):
    from engine.checkpoints import CheckpointError
    from engine.ops import Engine
    from engine.runtime import device_problem, prepare_process

    if problem := device_problem(device):
        fail(problem)
    prepare_process()
    try:
        return Engine(model, device)
    except CheckpointError as exc:
        fail(str(exc))


def _run(engine, kind: str, args: dict, latents: dict, out: Path, label: str = ""):
    """Run one job locally with a progress bar; write its files into ``out``."""
    import time

    from tqdm import tqdm

    from engine.errors import UserError
    from engine.jobs import Job

    out.mkdir(parents=True, exist_ok=True)
    bars = []
    started = time.time()  # tqdm's own clock

    def progress(p) -> None:
        if not p.total:
            return
        if not bars:  # the clock starts with the job, not with its first report (else "729444 step/s")
            unit = "frame" if p.message.startswith("frame") else "step"
            bars.append(tqdm(total=p.total, desc=label or kind, unit=unit, leave=False))
            bars[0].start_t = started
        bars[0].update(p.step - bars[0].n)

    try:
        result = engine.run(Job(kind, args, latents, engine.model_id, max_bytes=50 * 2**20), progress)
    except UserError as exc:
        fail(str(exc))
    finally:
        for bar in bars:
            bar.close()
    for f in result.files:
        (out / f.name).write_bytes(f.data)
    if result.latent is not None:
        from engine.kept import save_npz

        save_npz(out / "latent.npz", result.latent, result.noise, result.model_id)
    return result


def kept_face(result):
    """The kept face (W+ and noise maps) a result carries, to feed another job."""
    from engine.jobs import Face

    return Face(result.latent, result.noise)


def read_latent(path: Path, engine):
    """A latent file as the kept face every command starts from."""
    from engine.jobs import Face
    from engine.kept import KeptFaceError, load_npz

    if not path.is_file():
        fail(f"no latent file at {path}.")
    try:
        ws, noise, model_id = load_npz(path)
    except KeptFaceError as exc:
        fail(f"{path}: {exc}")
    if model_id != engine.model_id:
        fail(f"{path} was made by model {model_id}, not by the loaded model {engine.model_id}.")
    return Face(ws, noise)


@app.command()
def project(photo: Annotated[Path, typer.Argument(help="A photo with a face")],
            steps: Annotated[int, typer.Option(min=1, max=2000)] = 300,
            encoder: Annotated[bool, typer.Option(help="Start from the model's encoder guess when it has one")] = True,
            out: OutOpt = Path("out/project"), model: ModelOpt = None, device: DeviceOpt = "cpu") -> None:
    """Find the face, align it, project it into W+: aligned.png, projected.png, side_by_side.png, progress.gif, latent.npz."""
    engine = _engine(model, device)
    if not photo.exists():
        fail(f"no file at {photo}.")
    r = _run(engine, "project", {"image": photo.read_bytes(), "steps": steps, "encoder": encoder}, {}, out, "projecting")
    f = r.figures
    seen = f["faces_found"]
    typer.echo(f"saw {seen} face{'s' if seen != 1 else ''}; used {'it' if seen == 1 else f['face_used']}.")
    typer.echo(f"likeness {f['likeness']:.3f} (same person below 0.6), PSNR {f['psnr']:.2f} dB, "
               f"{f['steps']} steps from {f['start']} in {f['seconds']:.1f} s, loss {f['loss']}; wrote {out}/ "
               "(projected.png is the kept face latent.npz redraws)")


@app.command()
def render(latent: Annotated[Path, typer.Argument(help="A latent .npz from `wspace project` (or any command that keeps a face)")],
           out: OutOpt = Path("out/render"), model: ModelOpt = None, device: DeviceOpt = "cpu") -> None:
    """Draw a kept face exactly as every command starts from it: face.png (same size as projected.png)."""
    engine = _engine(model, device)
    _run(engine, "render", {}, {"a": read_latent(latent, engine)}, out)
    typer.echo(f"wrote {out}/face.png")


@app.command()
def blend(a: Path, b: Path, ratio: Annotated[float, typer.Option(help="0 = a, 1 = b; outside extrapolates")] = 0.5,
          layers: Annotated[str, typer.Option(help="all, coarse, middle or fine")] = "all",
          out: OutOpt = Path("out/blend"), model: ModelOpt = None, device: DeviceOpt = "cpu") -> None:
    """Blend two latents (.npz from `wspace project`)."""
    engine = _engine(model, device)
    _run(engine, "blend", {"ratio": ratio, "layers": layers}, {"a": read_latent(a, engine), "b": read_latent(b, engine)}, out)
    typer.echo(f"wrote {out}/blend.png")


@app.command()
def edit(latent: Path, direction: Annotated[str, typer.Option(help="age, gender, smile, yaw, …")] = "age",
         amount: Annotated[float, typer.Option(min=-10, max=10)] = 2.0, strip: bool = False,
         out: OutOpt = Path("out/edit"), model: ModelOpt = None, device: DeviceOpt = "cpu") -> None:
    """Move a latent along a learned direction."""
    engine = _engine(model, device)
    r = _run(engine, "edit", {"direction": direction, "amount": amount, "strip": strip}, {"a": read_latent(latent, engine)}, out)
    if r.text:
        typer.echo(r.text)
    typer.echo(f"wrote {out}/")


@app.command()
def morph(latents: Annotated[list[Path], typer.Argument(help="Two or more latent .npz files")],
          frames: Annotated[int, typer.Option(min=2, max=240)] = 48, fmt: Annotated[str, typer.Option("--format")] = "gif",
          out: OutOpt = Path("out/morph"), model: ModelOpt = None, device: DeviceOpt = "cpu") -> None:
    """A looping morph through several latents."""
    engine = _engine(model, device)
    _run(engine, "morph", {"frames": frames, "format": fmt},
         {str(i): read_latent(p, engine) for i, p in enumerate(latents)}, out)
    typer.echo(f"wrote {out}/morph.{fmt}")


@app.command()
def mix(coarse: Path, fine: Path, split: Annotated[Optional[int], typer.Option(help="style index where fine takes over")] = None,
        out: OutOpt = Path("out/mix"), model: ModelOpt = None, device: DeviceOpt = "cpu") -> None:
    """Style mixing: pose and shape from one latent, colours and texture from another."""
    engine = _engine(model, device)
    _run(engine, "mix", {"split": split}, {"coarse": read_latent(coarse, engine), "fine": read_latent(fine, engine)}, out)
    typer.echo(f"wrote {out}/mix.png")


@app.command()
def loop(latent: Path, layers: Annotated[str, typer.Option(help="coarse, middle, fine or all")] = "middle",
         frames: Annotated[int, typer.Option(min=8, max=240)] = 48,
         out: OutOpt = Path("out/loop"), model: ModelOpt = None, device: DeviceOpt = "cpu") -> None:
    """A seamless face-deform loop GIF."""
    engine = _engine(model, device)
    _run(engine, "loop", {"layers": layers, "frames": frames}, {"a": read_latent(latent, engine)}, out)
    typer.echo(f"wrote {out}/loop.gif")


@app.command()
def grid(a: Path, b: Path, c: Path, size: Annotated[int, typer.Option(min=2, max=9)] = 5,
         out: OutOpt = Path("out/grid"), model: ModelOpt = None, device: DeviceOpt = "cpu") -> None:
    """A montage of the plane through three latents."""
    engine = _engine(model, device)
    _run(engine, "grid", {"size": size}, {k: read_latent(p, engine) for k, p in zip("abc", (a, b, c))}, out)
    typer.echo(f"wrote {out}/grid.png")


@directions_app.command("learn")
def directions_learn(attributes: Annotated[Optional[list[str]], typer.Argument(help="age, gender, smile, yaw (default: all)")] = None,
                     samples: Annotated[int, typer.Option(min=100)] = 10_000, seed: int = 7,
                     out: Annotated[Optional[Path], typer.Option("--out", "-o")] = None, model: ModelOpt = None) -> None:
    """Learn directions InterFaceGAN-style (offline labellers), plus SeFa factors."""
    import json

    from tqdm import tqdm

    from engine.checkpoints import DEFAULT_MODEL
    from engine.directions import load_directions, save_directions
    from engine.labels import ATTRIBUTES
    from engine.learn import learn_directions

    attributes = tuple(attributes or ATTRIBUTES)
    unknown = [a for a in attributes if a not in ATTRIBUTES]
    if unknown:
        fail(f"unknown attribute {unknown[0]!r}; choose from {', '.join(ATTRIBUTES)}.")
    G = load_model(model, "cpu")
    path = out or (model or DEFAULT_MODEL).with_name((model or DEFAULT_MODEL).stem + ".directions.npz")
    bar = tqdm(total=samples, desc="render+label", unit="face")
    learned, report = learn_directions(G, samples, seed=seed, attributes=attributes,
                                       progress=lambda k, n: bar.update(k - bar.n))
    bar.close()
    keep = load_directions(path, G.model_id)
    keep.update({d.name: d for d in learned})
    save_directions(list(keep.values()), path)
    typer.echo(json.dumps(report, indent=2))
    typer.echo(f"wrote {path}")


@directions_app.command("layers")
def directions_layers(name: Annotated[str, typer.Argument(help="a direction of the model, e.g. smile")],
                      layers: Annotated[str, typer.Argument(help="all, coarse, middle, fine, or a style range like 1-3")],
                      directions: Annotated[Optional[Path], typer.Option("--directions", help="directions .npz (default: the model's)")] = None,
                      model: ModelOpt = None) -> None:
    """Set the styles a direction moves by default (what /edit uses)."""
    from engine.checkpoints import DEFAULT_MODEL
    from engine.directions import load_directions, save_directions
    from engine.edits import parse_layers

    G = load_model(model, "cpu")
    path = directions or (model or DEFAULT_MODEL).with_name((model or DEFAULT_MODEL).stem + ".directions.npz")
    keep = load_directions(path, G.model_id)
    if name not in keep:
        fail(f"{path.name} has no direction {name!r} for this model (it has {', '.join(keep) or 'none'}).")
    try:
        parse_layers(G.num_ws, layers)
    except ValueError as exc:
        fail(f"{exc}.")
    keep[name].layers = layers
    save_directions(list(keep.values()), path)
    typer.echo(f"{name} now moves styles {layers} by default ({path})")


@directions_app.command("import")
def directions_import(npy: Path, name: Annotated[str, typer.Option(help="name members will use")],
                      layers: Annotated[str, typer.Option(help="all, coarse, middle or fine")] = "all",
                      out: Annotated[Optional[Path], typer.Option("--out", "-o")] = None, model: ModelOpt = None) -> None:
    """Import a direction saved by another tool (.npy of shape (w_dim,), (1, w_dim) or (num_ws, w_dim))."""
    import re

    from engine.checkpoints import DEFAULT_MODEL
    from engine.directions import DirectionError, import_npy, load_directions, save_directions

    if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name):
        fail("a direction name is 1-32 lower-case letters, digits or underscores.")
    G = load_model(model, "cpu")
    try:
        d = import_npy(npy, G, name, layers)
    except DirectionError as exc:
        fail(str(exc))
    path = out or (model or DEFAULT_MODEL).with_name((model or DEFAULT_MODEL).stem + ".directions.npz")
    keep = load_directions(path, G.model_id)
    keep[name] = d
    save_directions(list(keep.values()), path)
    typer.echo(f"imported {name} into {path}")


@app.command()
def demo(out: OutOpt = Path("out/demo"), steps: Annotated[int, typer.Option(min=1, max=2000)] = 200,
         model: ModelOpt = None, device: DeviceOpt = "cpu") -> None:
    """The main job, offline: project the two bundled photos, age one, blend them, morph them."""
    engine = _engine(model, device)
    assets = Path(__file__).resolve().parent / "assets"
    latents = {}
    for i, name in enumerate(("grace_hopper", "astronaut"), 1):
        typer.echo(f"{i}/5 projecting {name}.jpg ({steps} steps)…")
        r = _run(engine, "project", {"image": (assets / f"{name}.jpg").read_bytes(), "steps": steps}, {},
                 out / f"{i}_{name}", "projecting")
        latents[name] = kept_face(r)
        typer.echo(f"    likeness {r.figures['likeness']:.3f} (same person below 0.6), PSNR {r.figures['psnr']:.1f} dB")
    if "age" in engine.directions:
        typer.echo("3/5 ageing the astronaut (+3, and a strip from -3 to +3)…")
        _run(engine, "edit", {"direction": "age", "amount": 3}, {"a": latents["astronaut"]}, out / "3_age")
        _run(engine, "edit", {"direction": "age", "amount": 3, "strip": True}, {"a": latents["astronaut"]}, out / "3_age")
    else:
        typer.echo("3/5 (this model has no age direction; skipped)")
    typer.echo("4/5 blending the two…")
    _run(engine, "blend", {"ratio": 0.5}, {"a": latents["grace_hopper"], "b": latents["astronaut"]}, out / "4_blend")
    typer.echo("5/5 a morph through both and a person who does not exist…")
    other = kept_face(_run(engine, "random", {"seed": 7, "truncation": 0.7}, {}, out / "5_morph"))
    _run(engine, "morph", {"frames": 36}, {"0": latents["grace_hopper"], "1": latents["astronaut"], "2": other},
         out / "5_morph")
    typer.echo(f"done: see {out}/ (side_by_side.png, before_after.png, blend.png, morph.gif)")


@app.command()
def serve(config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config file")] = None,
          verbose: bool = False) -> None:
    """Run the Discord bot (the engine runs in its own process)."""
    import logging

    from bot.config import ConfigError, load_settings

    try:
        settings = load_settings(config)
        settings.token()
    except ConfigError as exc:
        fail(str(exc))
    logging.basicConfig(level=logging.DEBUG if verbose else getattr(logging, settings.logging.level),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    engine = settings.engine
    if engine.transport == "local" and engine.device != "cpu" and (problem := _device_problem_elsewhere(engine.device)):
        fail(problem.replace("--device", "engine.device ="))
    from bot.app import ServeError, run

    try:
        run(settings, config)
    except ServeError as exc:
        fail(str(exc))


def _device_problem_elsewhere(device: str) -> str | None:
    """:func:`engine.runtime.device_problem`, asked of a child process: the bot process
    never imports torch."""
    import subprocess
    import sys

    code = "import sys; from engine.runtime import device_problem; print(device_problem(sys.argv[1]) or '')"
    done = subprocess.run([sys.executable, "-c", code, device], capture_output=True, text=True, timeout=300)
    return done.stdout.strip() or (f"--device {device}: the engine cannot start ({done.stderr.strip()[-200:]})."
                                   if done.returncode else None)


@app.command()
def health(config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config file")] = None) -> None:
    """Exit 0 when the bot of this config is connected to Discord (its heartbeat is fresh); for HEALTHCHECK."""
    import json
    import time

    from bot.app import HEALTHY_WITHIN
    from bot.config import ConfigError, heartbeat_path, load_settings

    try:
        path = heartbeat_path(load_settings(config))
        beat = json.loads(path.read_text())
    except ConfigError as exc:
        fail(str(exc))
    except (OSError, ValueError):
        fail("unhealthy: the bot has not reported in yet (no heartbeat file).")
    age = time.time() - float(beat.get("time", 0))
    if age > HEALTHY_WITHIN:
        fail(f"unhealthy: the bot's last heartbeat is {age:.0f} s old.")
    typer.echo(f"healthy: heartbeat {age:.0f} s ago, engine {'ready' if beat.get('engine_ready') else 'starting'}.")


@app.command()
def worker(redis: Annotated[str, typer.Option("--redis", help="Redis URL, e.g. redis://gpu-box:6379/0")],
           model: ModelOpt = None,
           device: Annotated[Optional[str], typer.Option("--device", help="torch device (default: $WSPACE_DEVICE, else cpu)")] = None,
           threads: Annotated[Optional[int], typer.Option(min=1, help="torch CPU threads")] = None,
           claim_idle: Annotated[float, typer.Option(min=1, help="take over a job a dead worker left after this many seconds")] = 30.0,
           inline_max: Annotated[int, typer.Option(min=1024, help="results larger than this many bytes go beside the stream")] = 256 * 1024,
           prefix: Annotated[str, typer.Option(help="key prefix shared with the bot's engine.redis_prefix")] = "wspace",
           worker_id: Annotated[Optional[str], typer.Option("--id", help="worker name (default: host-pid)")] = None) -> None:
    """Run an engine worker that takes jobs from Redis (one per GPU; any number of hosts)."""
    from engine.checkpoints import CheckpointError
    from engine.redis_worker import serve_redis
    from bot.config import environment_device
    from engine.runtime import device_problem

    device = device or environment_device() or "cpu"
    if problem := device_problem(device):
        fail(problem)
    try:
        serve_redis(redis, str(model) if model else None, device, None, threads, worker_id, claim_idle, inline_max, prefix)
    except CheckpointError as exc:
        fail(str(exc))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
