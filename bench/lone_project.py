"""A lone member's projection: today's path against the one before it, side by side in one
run, printed as JSON (ratios: this machine is noisy).

* ``step``: milliseconds of one projection step (forward and backward, batch 1) on the two
  offline photos, each setting in a fresh process, alternated round by round, and whether the
  W+ they reach after ``--steps`` steps differs at all;
* ``project``: the wall time of a whole default ``wspace project`` (model load, face search,
  encoder, 300 steps, files written), each setting in its own process, alternated, and how far
  apart the kept latents are.

The setting compared is ``engine.model.modconv.NHWC_KERNELS`` (kernels kept channels-last
instead of copied at every convolution); ``before`` turns it off.

    python -m bench.lone_project [--rounds 3] [--steps 40] [--project-rounds 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.report import report
from engine.face.align import Framing, align_face
from engine.jobs.engine import Engine
from engine.latent.batch import Member
from engine.model import modconv
from engine.model.runtime import prepare_process
from tests.photos import astronaut, grace_hopper

SETTINGS = {"before": False, "now": True}
CHILD = ("import sys; import engine.model.modconv as m; m.NHWC_KERNELS = sys.argv.pop(1) == 'True'; "
         "from bot.cli import main; main()")


def step_ms(engine: Engine, target: np.ndarray, steps: int) -> tuple[float, np.ndarray]:
    """Median ms of a step after 5 warm-up steps, and the W+ reached after ``steps``."""
    batch = engine.new_batch()
    member = Member(target, steps=steps)
    batch.add(member)
    times, done = [], []
    while batch.members:
        t0 = time.perf_counter()
        done += batch.step()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times[5:]), np.asarray(done[0][1].ws)


def whole_project(photo: Path, out: Path, nhwc: bool) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", CHILD, str(nhwc), "project", str(photo), "-o", str(out)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def child_steps(nhwc: bool, steps: int, out: Path) -> None:
    """One setting in a fresh process (a process that ran the other setting first runs this one
    slower, whichever it is: measured), both photos; the W+ reached go to ``out``."""
    prepare_process()  # as an engine process is: its threads, the allocator tuned
    modconv.NHWC_KERNELS = nhwc
    engine = Engine()
    framing = Framing.from_dict(engine.G.provenance.get("framing"))
    ms, reached = [], {}
    for name, photo in (("grace_hopper", grace_hopper()), ("astronaut", astronaut())):
        t, reached[name] = step_ms(engine, align_face(photo, engine.G.resolution, framing).image, steps)
        ms.append(t)
    np.savez(out, **reached)
    print(json.dumps({"ms": ms}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--project-rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--child", choices=["True", "False"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child_steps(args.child == "True", args.steps, args.child_out)
    out: dict = {"threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ms: dict[str, list[float]] = {name: [] for name in SETTINGS}
        for r in range(args.rounds):
            for name, flag in SETTINGS.items():
                got = subprocess.run([sys.executable, "-m", "bench.lone_project", "--child", str(flag), "--steps",
                                      str(args.steps), "--child-out", str(tmp / f"{name}{r}.npz")],
                                     check=True, capture_output=True, text=True)
                ms[name] += json.loads(got.stdout.strip().splitlines()[-1])["ms"]
        reached = {name: np.load(tmp / f"{name}0.npz") for name in SETTINGS}
        step = {name: round(statistics.median(v), 2) for name, v in ms.items()}
        out.update(step_ms=step, step_now_over_before=round(step["now"] / step["before"], 3),
                   step_ws_max_diff=float(max(np.abs(reached["now"][k] - reached["before"][k]).max()
                                              for k in reached["now"].files)))
        if args.project_rounds:
            wall: dict[str, list[float]] = {name: [] for name in SETTINGS}
            photos = {"grace_hopper": grace_hopper(), "astronaut": astronaut()}
            for photo, img in photos.items():
                Image.fromarray(img).save(tmp / f"{photo}.png")
            for r in range(args.project_rounds):
                for name, flag in SETTINGS.items():
                    for photo in photos:
                        wall[name].append(whole_project(tmp / f"{photo}.png", tmp / f"{name}{r}{photo}", flag))
            latent = {name: np.load(tmp / f"{name}0grace_hopper" / "latent.npz") for name in SETTINGS}
            project = {name: round(statistics.median(v), 2) for name, v in wall.items()}
            out.update(project_s=project, project_now_over_before=round(project["now"] / project["before"], 3),
                       project_ws_max_diff=float(np.abs(latent["now"]["ws"] - latent["before"]["ws"]).max()))
    report(out, args.out)


if __name__ == "__main__":
    main()
