"""1, 2 and 3 engines on one host, each projecting a photo at once, against one engine doing
the same projections in turn; printed as JSON (seconds and ratios from one run).

Each engine is a ``wspace project`` process (model load, face search and encoder included,
as a member's job or an operator's command runs). Two settings side by side:

* ``shared`` — the default: each engine takes its share of the cores among the engines busy
  on this host (engine/model/host.py);
* ``every_core`` — what every engine did before: a fixed ``--threads`` equal to the cores.

``in_turn`` is one engine at the default doing the N projections one after another. A ratio
``at_once / in_turn`` at or below 1.0 means adding engines did not lose throughput.

    python -m bench.engines_per_host [--steps 60] [--engines 1 2 3] [--out docs/engines_per_host.json]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.numerics import cpu_name
from bench.report import report
from engine.model.host import available_cores
from tests.photos import astronaut, grace_hopper


def photos(folder: Path, n: int) -> list[Path]:
    faces = [grace_hopper(), astronaut(), np.ascontiguousarray(grace_hopper()[:, ::-1])]
    out = []
    for k in range(n):
        path = folder / f"p{k}.png"
        Image.fromarray(faces[k % len(faces)]).save(path)
        out.append(path)
    return out


def command(photo: Path, out: Path, steps: int, threads: int | None) -> list[str]:
    head = [sys.executable, "-m", "bot.cli"] + (["--threads", str(threads)] if threads else [])
    return head + ["project", str(photo), "--steps", str(steps), "-o", str(out)]


def at_once(jobs: list[list[str]], env: dict) -> float:
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for cmd in jobs]
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"a projection failed: {err.strip()[-400:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--engines", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    cores = available_cores()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "WSPACE_ENGINES_DIR": str(tmp / "engines")}
        pics = photos(tmp, max(args.engines))
        runs = iter(range(10**6))

        def jobs(n: int, threads: int | None) -> list[list[str]]:
            return [command(pics[k], tmp / f"out{next(runs)}", args.steps, threads) for k in range(n)]

        rows = {}
        for n in args.engines:
            in_turn = sum(at_once([cmd], env) for cmd in jobs(n, None))
            shared = at_once(jobs(n, None), env)
            every_core = at_once(jobs(n, cores), env)
            rows[str(n)] = {"in_turn_s": round(in_turn, 2), "shared_s": round(shared, 2),
                            "every_core_s": round(every_core, 2),
                            "shared_vs_in_turn": round(shared / in_turn, 3),
                            "every_core_vs_in_turn": round(every_core / in_turn, 3)}
            print(n, rows[str(n)], flush=True, file=sys.stderr)
    report({"cores": cores, "cpu": cpu_name(), "steps": args.steps, "engines": rows}, args.out)


if __name__ == "__main__":
    main()
