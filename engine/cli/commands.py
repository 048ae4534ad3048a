"""The engine's command line: every operation on local files, model tools, and
``wspace worker`` (an engine fed through Redis). ``engine.cli.entry.compose`` joins it with the
bot's own commands (``serve``, ``health``, …) into the one ``wspace`` command.

Each command builds one typed request (``engine/protocol``) and runs it through the same
``engine.jobs.dispatch.run`` the workers' scheduler uses; option ranges are the protocol's bounds. Torch is
imported when a command runs, so ``wspace --help`` is quick.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Optional

import typer

from engine.cli.tools import (
    THREADS,
    DeviceOpt,
    EncoderOpt,
    ModelOpt,
    OutOpt,
    directions_app,
    encoder_app,
    fail,
    generate,
    loaded,
    model_app,
)
from engine.latent.kept import KeptFaceError, load_npz, save_npz
from engine.protocol import (
    BlendRequest,
    EditRequest,
    Face,
    FacesRequest,
    GridRequest,
    LoopRequest,
    MixRequest,
    MorphRequest,
    ProjectRequest,
    RandomRequest,
    RenderRequest,
    Request,
    Result,
    StrangerRequest,
    SwapRequest,
    TeamRequest,
    UserError,
    as_face,
    wire,
)
from engine.protocol.requests import MAX_ATTACHMENT_BYTES, MAX_PHOTO_BYTES

CLI_MAX_BYTES = MAX_ATTACHMENT_BYTES  # files on disk: the largest the protocol carries

# The engine's commands; engine.cli.entry joins them with the bot's.
HELP = "wspace: StyleGAN2 latent-space toys for a Discord community, and the same engine on local files."
commands = typer.Typer(rich_markup_mode=None, help=HELP, no_args_is_help=True, add_completion=False)


def options(
    threads: Annotated[
        Optional[int],
        typer.Option(
            "--threads",
            min=1,
            max=512,
            help="fix torch's CPU threads for engine commands (default: this engine's share of the "
            "cores it may use, among the engines busy on this host)",
        ),
    ] = None,
) -> None:
    """wspace: StyleGAN2 latent-space toys for a Discord community, and the same engine on local files."""
    THREADS["threads"] = threads


commands.add_typer(model_app, name="model")
commands.add_typer(directions_app, name="directions")
commands.add_typer(encoder_app, name="encoder")
commands.command()(generate)


def _engine(model: Path | None, device: str, encoder: Path | None = None):
    from engine.jobs.engine import Engine

    return loaded(lambda m, d: Engine(m, d, encoder_path=encoder), model, device)


def _run(engine, request: Request, out: Path, label: str = "") -> Result:
    """Run one request locally with a progress bar; write its files (and the faces it keeps) into ``out``."""
    import time

    from tqdm import tqdm

    from engine.jobs import dispatch

    bars = []
    started = time.time()  # tqdm's own clock

    def progress(p) -> None:
        if not p.total:
            return
        if not bars:  # the clock starts with the job, not with its first report (else "729444 step/s")
            unit = "frame" if p.message.startswith("frame") else "step"
            bars.append(tqdm(total=p.total, desc=label or request.kind, unit=unit, leave=False))
            bars[0].start_t = started
        bars[0].update(min(p.step, p.total) - bars[0].n)

    request = dataclasses.replace(request, model_id=engine.model_id, max_bytes=CLI_MAX_BYTES)
    try:
        result = dispatch.run(engine, request, progress)
    except UserError as exc:
        fail(str(exc))
    finally:
        for bar in bars:
            bar.close()
    out.mkdir(parents=True, exist_ok=True)  # only now: a command that failed leaves no empty folder
    for f in result.files:
        (out / f.name).write_bytes(f.data)
    names = ["latent.npz"] if len(result.faces) == 1 else [f"latent_{i + 1}.npz" for i in range(len(result.faces))]
    for name, face in zip(names, result.faces):
        save_npz(out / name, face.ws, face.noise, result.model_id)
    return result


def terminal(text: str) -> str:
    """A result's text as a terminal shows it: no Discord markup, the details in brackets."""
    words, _, details = text.partition("\n-# details: ")
    words = words.replace("**", "")
    return f"{words} ({details.rstrip('.')})" if details else words


def read_latent(path: Path, engine) -> Face:
    """A latent file as the kept face every command starts from."""
    if not path.is_file():
        fail(f"no latent file at {path}.")
    try:
        ws, noise, model_id = load_npz(path)
    except KeptFaceError as exc:
        fail(f"{path}: {exc}")
    if model_id != engine.model_id:
        fail(f"{path} was made by model {model_id}, not by the loaded model {engine.model_id}.")
    return as_face(ws, noise)


def read_photo(photo: Path) -> bytes:
    """The photo's bytes, checked before the model loads (a missing or non-image file is told at once)."""
    from engine.face.align import sniff_format

    if not photo.is_file():
        fail(f"no file at {photo}.")
    if photo.stat().st_size > MAX_PHOTO_BYTES:
        fail(f"{photo} is larger than {MAX_PHOTO_BYTES // 2**20} MiB.")
    data = photo.read_bytes()
    if sniff_format(data) is None:
        fail(f"{photo} is not an image I can read (PNG, JPEG, WebP or GIF).")
    return data


@commands.command()
def faces(
    photo: Annotated[Path, typer.Argument(help="A photo with one or more faces")],
    out: OutOpt = Path("out/faces"),
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Every face of a photo, numbered from the largest: faces.png (the montage) and face_N.png (aligned crops)."""
    data = read_photo(photo)
    engine = _engine(model, device)
    r = _run(engine, FacesRequest(image=data, max_image_bytes=MAX_PHOTO_BYTES), out)
    typer.echo(
        f"{terminal(r.text)} Wrote {out}/faces.png and face_1.png … face_{r.figures['faces']}.png; "
        "`wspace project PHOTO --face N` projects face N."
    )


@commands.command()
def project(
    photo: Annotated[Path, typer.Argument(help="A photo with a face")],
    steps: Annotated[
        int, typer.Option(min=ProjectRequest.STEPS[0], max=ProjectRequest.STEPS[1],
                          help="optimisation steps: more is closer to the photo, and slower")
    ] = ProjectRequest.DEFAULT_STEPS,
    face: Annotated[
        Optional[int],
        typer.Option(
            min=ProjectRequest.FACE[0],
            max=ProjectRequest.FACE[1],
            help="which face, as numbered by `wspace faces` (default: the largest)",
        ),
    ] = None,
    no_encoder: Annotated[
        bool, typer.Option("--no-encoder", help="Start from the average face, not the encoder's guess")
    ] = False,
    out: OutOpt = Path("out/project"), model: ModelOpt = None, device: DeviceOpt = "cpu", encoder: EncoderOpt = None,
) -> None:
    """Find the face, align it, project it into W+: aligned.png, projected.png, side_by_side.png,
    progress.gif, latent.npz."""
    data = read_photo(photo)
    engine = _engine(model, device, encoder)
    request = ProjectRequest(image=data, steps=steps, encoder=not no_encoder, face=face,
                             max_image_bytes=MAX_PHOTO_BYTES)
    r = _run(engine, request, out, "projecting")
    f = r.figures
    seen = f["faces_found"]
    typer.echo(
        f"saw {seen} face{'s' if seen != 1 else ''}; used {'it' if seen == 1 else f['face_used']}"
        + (" (choose another with --face N; `wspace faces` numbers them)." if seen > 1 and face is None else ".")
    )
    typer.echo(
        f"likeness {f['likeness']:.3f} (same person below 0.6), PSNR {f['psnr']:.2f} dB, "
        f"{f['steps']} steps from {f['start']} in {f['seconds']:.1f} s, loss {f['loss']}; wrote {out}/ "
        "(projected.png is the kept face latent.npz redraws)"
    )


@commands.command()
def team(
    photo: Annotated[Path, typer.Argument(help="A group photo")],
    steps: Annotated[
        int, typer.Option(min=TeamRequest.STEPS[0], max=TeamRequest.STEPS[1], help="steps per face")
    ] = 150,
    frames: Annotated[Optional[int], typer.Option(min=TeamRequest.FRAMES[0], max=TeamRequest.FRAMES[1],
                                                  help="frames in the whole loop (default: by the faces)")] = None,
    fmt: Annotated[str, typer.Option("--format", help=" or ".join(TeamRequest.FORMATS))] = "gif",
    out: OutOpt = Path("out/team"), model: ModelOpt = None, device: DeviceOpt = "cpu", encoder: EncoderOpt = None,
) -> None:
    """Every face of a group photo projected, and a looping morph through them all: team.gif,
    team_faces.png, latent_N.npz."""
    data = read_photo(photo)
    engine = _engine(model, device, encoder)
    request = TeamRequest(image=data, steps=steps, frames=frames, format=fmt,
                          max_image_bytes=MAX_PHOTO_BYTES)
    r = _run(engine, request, out, "projecting the team")
    typer.echo(f"{terminal(r.text)} Wrote {out}/team.{fmt}, team_faces.png and a latent file per face.")


@commands.command()
def lookalike(
    target: Annotated[Path, typer.Argument(help="a latent .npz (a kept face) or a photo")],
    seconds: Annotated[
        float,
        typer.Option(min=StrangerRequest.SECONDS[0], max=StrangerRequest.SECONDS[1], help="time budget of the search"),
    ] = 45.0,
    seed: int = 0,
    out: OutOpt = Path("out/lookalike"),
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
    encoder: EncoderOpt = None,
) -> None:
    """Search the generator for a stranger who looks like a face: stranger.png, search_curve.png, latent.npz."""
    photo = None if target.suffix.lower() == ".npz" else read_photo(target)
    engine = _engine(model, device, encoder)
    if photo is None:
        request = StrangerRequest(face=read_latent(target, engine), seconds=seconds, seed=seed)
    else:
        request = StrangerRequest(image=photo, seconds=seconds, seed=seed, max_image_bytes=MAX_PHOTO_BYTES)
    r = _run(engine, request, out, "searching")
    typer.echo(f"{terminal(r.text)} Wrote {out}/stranger.png and search_curve.png.")


@commands.command()
def render(
    latent: Annotated[
        Path, typer.Argument(help="A latent .npz from `wspace project` (or any command that keeps a face)")
    ],
    out: OutOpt = Path("out/render"),
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Draw a kept face exactly as every command starts from it: face.png (same size as projected.png)."""
    engine = _engine(model, device)
    _run(engine, RenderRequest(face=read_latent(latent, engine)), out)
    typer.echo(f"wrote {out}/face.png")


@commands.command()
def blend(
    a: Path,
    b: Path,
    ratio: Annotated[
        float,
        typer.Option(min=BlendRequest.RATIO[0], max=BlendRequest.RATIO[1], help="0 = a, 1 = b; outside extrapolates"),
    ] = 0.5,
    layers: Annotated[str, typer.Option(help="all, coarse, middle, fine, or a style range like 1-3")] = "all",
    out: OutOpt = Path("out/blend"),
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Blend two latents (.npz from `wspace project`)."""
    engine = _engine(model, device)
    _run(engine, BlendRequest(a=read_latent(a, engine), b=read_latent(b, engine), ratio=ratio, layers=layers), out)
    typer.echo(f"wrote {out}/blend.png")


@commands.command()
def edit(
    latent: Path,
    direction: Annotated[str, typer.Option(help="age, gender, smile, yaw, …")] = "age",
    amount: Annotated[float, typer.Option(min=EditRequest.AMOUNT[0], max=EditRequest.AMOUNT[1],
                                          help="how far along the direction (- for the other way)")] = 2.0,
    strip: Annotated[bool, typer.Option(help="five faces from -amount to +amount instead of one")] = False,
    out: OutOpt = Path("out/edit"),
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Move a latent along a learned direction."""
    engine = _engine(model, device)
    r = _run(
        engine, EditRequest(face=read_latent(latent, engine), direction=direction, amount=amount, strip=strip), out
    )
    if r.text:
        typer.echo(terminal(r.text))
    typer.echo(f"wrote {out}/")


@commands.command()
def morph(
    latents: Annotated[list[Path], typer.Argument(help="Two or more latent .npz files")],
    frames: Annotated[int, typer.Option(min=MorphRequest.FRAMES[0], max=MorphRequest.FRAMES[1],
                                        help="frames in the whole loop")] = 48,
    fmt: Annotated[str, typer.Option("--format", help=" or ".join(MorphRequest.FORMATS))] = "gif",
    out: OutOpt = Path("out/morph"),
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """A looping morph through several latents."""
    engine = _engine(model, device)
    _run(engine, MorphRequest(faces=tuple(read_latent(p, engine) for p in latents), frames=frames, format=fmt), out)
    typer.echo(f"wrote {out}/morph.{fmt}")


SplitOpt = Annotated[
    Optional[int],
    typer.Option(min=MixRequest.SPLIT[0], max=MixRequest.SPLIT[1],
                 help="style index where the second face takes over (default: the model's coarse/fine boundary)"),
]


@commands.command()
def mix(coarse: Path, fine: Path, split: SplitOpt = None, out: OutOpt = Path("out/mix"), model: ModelOpt = None,
        device: DeviceOpt = "cpu") -> None:
    """Style mixing: pose and shape from one latent, colours and texture from another."""
    engine = _engine(model, device)
    _run(engine, MixRequest(coarse=read_latent(coarse, engine), fine=read_latent(fine, engine), split=split), out)
    typer.echo(f"wrote {out}/mix.png")


@commands.command()
def swap(a: Path, b: Path, split: SplitOpt = None, out: OutOpt = Path("out/swap"), model: ModelOpt = None,
         device: DeviceOpt = "cpu") -> None:
    """Two latents swap their fine styles: swap.png, latent_1.npz (a's shape, b's finish), latent_2.npz."""
    engine = _engine(model, device)
    r = _run(engine, SwapRequest(a=read_latent(a, engine), b=read_latent(b, engine), split=split), out)
    typer.echo(f"{terminal(r.text)} Wrote {out}/swap.png, latent_1.npz and latent_2.npz")


@commands.command()
def loop(
    latent: Path,
    layers: Annotated[str, typer.Option(help="coarse, middle, fine, all, or a style range like 1-3")] = "middle",
    frames: Annotated[int, typer.Option(min=LoopRequest.FRAMES[0], max=LoopRequest.FRAMES[1],
                                        help="frames in the loop")] = 48,
    out: OutOpt = Path("out/loop"),
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """A seamless face-deform loop GIF."""
    engine = _engine(model, device)
    _run(engine, LoopRequest(face=read_latent(latent, engine), layers=layers, frames=frames), out)
    typer.echo(f"wrote {out}/loop.gif")


@commands.command()
def grid(
    a: Path,
    b: Path,
    c: Path,
    size: Annotated[int, typer.Option(min=GridRequest.SIZE[0], max=GridRequest.SIZE[1],
                                      help="faces along each side of the grid")] = 5,
    out: OutOpt = Path("out/grid"),
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """A montage of the plane through three latents."""
    engine = _engine(model, device)
    _run(
        engine,
        GridRequest(a=read_latent(a, engine), b=read_latent(b, engine), c=read_latent(c, engine), size=size),
        out,
    )
    typer.echo(f"wrote {out}/grid.png")


@commands.command()
def demo(
    out: OutOpt = Path("out/demo"),
    steps: Annotated[int, typer.Option(min=ProjectRequest.STEPS[0], max=ProjectRequest.STEPS[1],
                                       help="projection steps per photo")] = 200,
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """The main job, offline: project the two bundled photos, age one, blend them, morph them."""
    engine = _engine(model, device)
    assets = Path(__file__).resolve().parent / "assets"
    faces, shown = {}, []
    for i, name in enumerate(("grace_hopper", "astronaut"), 1):
        typer.echo(f"{i}/5 projecting {name}.jpg ({steps} steps)…")
        r = _run(
            engine,
            ProjectRequest(image=(assets / f"{name}.jpg").read_bytes(), steps=steps),
            out / f"{i}_{name}",
            "projecting",
        )
        shown.append(out / f"{i}_{name}" / r.files[0].name)
        faces[name] = r.face
        typer.echo(f"    likeness {r.figures['likeness']:.3f} (same person below 0.6), PSNR {r.figures['psnr']:.1f} dB")
    if "age" in engine.directions:
        typer.echo("3/5 ageing the astronaut (+3, and a strip from -3 to +3)…")
        _run(engine, EditRequest(face=faces["astronaut"], direction="age", amount=3.0), out / "3_age")
        strip = _run(
            engine, EditRequest(face=faces["astronaut"], direction="age", amount=3.0, strip=True), out / "3_age"
        )
        shown.append(out / "3_age" / strip.files[0].name)
    else:
        typer.echo("3/5 (this model has no age direction; skipped)")
    typer.echo("4/5 blending the two…")
    blend = _run(engine, BlendRequest(a=faces["grace_hopper"], b=faces["astronaut"]), out / "4_blend")
    shown.append(out / "4_blend" / blend.files[0].name)
    typer.echo("5/5 a morph through both and a person who does not exist…")
    other = _run(engine, RandomRequest(seed=7, truncation=0.7), out / "5_morph").face
    morph = _run(
        engine, MorphRequest(faces=(faces["grace_hopper"], faces["astronaut"], other), frames=36), out / "5_morph"
    )
    shown.append(out / "5_morph" / morph.files[0].name)
    typer.echo("done: " + ", ".join(str(path) for path in shown))


@commands.command()
def worker(
    redis: Annotated[str, typer.Option("--redis", help="Redis URL, e.g. redis://gpu-box:6379/0")],
    secret: Annotated[
        str,
        typer.Option(
            "--secret",
            envvar="WSPACE_REDIS_SECRET",
            show_default=False,
            help="the secret shared with the bot (engine.redis_secret); best from $WSPACE_REDIS_SECRET",
        ),
    ],
    model: ModelOpt = None,
    directions: Annotated[
        Optional[Path], typer.Option("--directions", help="directions .npz (default: the model's)")
    ] = None,
    device: Annotated[str, typer.Option("--device", envvar="WSPACE_DEVICE", help="torch device")] = "cpu",
    threads: Annotated[Optional[int], typer.Option(
        min=1, help="fix torch's CPU threads (default: a share of the cores among this host's busy engines)")] = None,
    claim_idle: Annotated[
        float, typer.Option(min=1, help="take over a job a dead worker left after this many seconds")
    ] = 30.0,
    inline_max: Annotated[
        int, typer.Option(min=1024, help="results larger than this many bytes go beside the stream")
    ] = 256 * 1024,
    prefix: Annotated[str, typer.Option(help="key prefix shared with the bot's engine.redis_prefix")] = "wspace",
    worker_id: Annotated[Optional[str], typer.Option("--id", help="worker name (default: host-pid)")] = None,
    batch: Annotated[int, typer.Option(min=1, max=64, help="jobs at once, their projections as one batch")] = 1,
    metrics: Annotated[
        str,
        typer.Option(help="serve Prometheus metrics at host:port (port 0: any free one; the bot lists it); empty: off"),
    ] = "",
    encoder: EncoderOpt = None,
) -> None:
    """Run an engine worker that takes jobs from Redis (one per GPU; any number of hosts)."""
    from engine.model.checkpoints import CheckpointError
    from engine.model.runtime import device_problem
    from engine.protocol.spec import EngineSpec
    from engine.serving.redis_worker import RedisLink, serve_redis

    if why := wire.weak_secret(secret):
        fail(f"--secret (or WSPACE_REDIS_SECRET) {why}.")
    if problem := device_problem(device):
        fail(problem)
    host, sep, port = metrics.rpartition(":")
    if metrics and (not sep or not port.isdigit() or int(port) > 65535):
        fail('--metrics must be host:port, e.g. "0.0.0.0:9109".')
    spec = EngineSpec(model=_text(model), device=device, directions=_text(directions), encoder=_text(encoder),
                      threads=threads, batch=batch, worker_id=worker_id)
    link = RedisLink(redis, secret.encode(), prefix, claim_idle, inline_max, metrics)
    try:
        serve_redis(spec, link)
    except CheckpointError as exc:
        fail(str(exc))


# the engine's commands alone
app = typer.Typer(rich_markup_mode=None, help=HELP, no_args_is_help=True, add_completion=False)
app.callback()(options)
app.add_typer(commands)


def main() -> None:
    app()


if __name__ == "__main__":
    main()


def _text(path) -> str | None:
    return None if path is None else str(path)
