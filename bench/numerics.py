"""How a member's face depends on the machine: thread count, CPU kernels (ISA) and who else
was in the batch. Prints JSON.

For each setting (``OMP_NUM_THREADS`` × kernels: ``native``, what the CPU offers; ``avx2``,
ATen's and oneDNN's kernels capped at AVX2, as on a CPU without AVX-512; ``default``, ATen's
unvectorised kernels) a child process measures, on the embedded model and faces it drew:

- ``batched``: members projected together (of different lengths, two joining midway) against
  each projected alone: the largest W+ difference, the largest pixel difference of the
  final faces (levels of 255), and the PSNR to the target of both (dB);
- ``drawn``: kept faces drawn together in one forward pass against each drawn alone
  (largest pixel difference), and a projection's final image against a redraw of what
  it keeps (``redraw_max_levels``: what a member is shown against what /me draws later).

It also runs the two offline photos as /project jobs alone and together through the
engine's scheduler (``photos``): W+ difference, likeness and PSNR of both.

    python -m bench.numerics [--threads 1 2 3] [--isa native avx2 default] [--steps 60] [--out F]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from bench.report import report

REPO = Path(__file__).resolve().parents[1]


def measure(steps: int, members: int, photo_steps: int) -> dict:
    """One setting, in this process: the figures described above."""
    import numpy as np
    import torch

    if os.environ.get("OMP_NUM_THREADS"):  # torch caps OMP_NUM_THREADS at the cores it sees; set as asked
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from engine.jobs.engine import Engine
    from engine.latent.batch import Member, ProjectionBatch, project
    from engine.latent.kept import pack_noise, unpack_noise

    engine = Engine(None, "cpu")
    G = engine.G
    from engine.model.images import to_uint8

    with torch.no_grad():
        faces = to_uint8(
            G(torch.randn(members, G.z_dim, generator=torch.Generator().manual_seed(7)), noise_mode="const")
        )
    lengths = [steps + 3 * i for i in range(members)]
    alone = [project(G, faces[i], lengths[i], seed=i) for i in range(members)]
    batch = ProjectionBatch(G)
    ms = [Member(faces[i], lengths[i], seed=i) for i in range(members)]
    half = members // 2
    for m in ms[:half]:
        batch.add(m)
    for _ in range(3):
        batch.step()
    for m in ms[half:]:
        batch.add(m)
    got = {id(m): p for m, p in batch.run()}
    together = [got[id(m)] for m in ms]
    ws_diff = max(float(np.abs(a.ws - b.ws).max()) for a, b in zip(alone, together))
    img_diff = max(int(np.abs(a.image.astype(int) - b.image).max()) for a, b in zip(alone, together))
    psnr_diff = max(abs(a.psnr - b.psnr) for a, b in zip(alone, together))

    res = [int(x.shape[0]) for x in alone[0].noise]
    kept = [(p.ws, unpack_noise(pack_noise(p.noise), res)) for p in alone]
    drawn_alone = [engine.render(ws[None], noise)[0] for ws, noise in kept]
    drawn_together = engine.draw_all([engine.plain(ws[None], noise) for ws, noise in kept])
    draw_diff = max(int(np.abs(a.astype(int) - b[0]).max()) for a, b in zip(drawn_alone, drawn_together))
    redraw = max(int(np.abs(p.image.astype(int) - d).max()) for p, d in zip(alone, drawn_alone))
    photos = photo_jobs(engine, photo_steps)
    return {
        "threads": torch.get_num_threads(),
        "isa": torch.backends.cpu.get_cpu_capability(),
        "photos": photos,
        "batched": {
            "members": members,
            "steps": lengths,
            "ws_max_diff": ws_diff,
            "image_max_levels": img_diff,
            "psnr_max_diff_db": round(psnr_diff, 3),
            "psnr_alone": [round(p.psnr, 2) for p in alone],
            "psnr_batched": [round(p.psnr, 2) for p in together],
        },
        "drawn": {"together_vs_alone_max_levels": draw_diff, "redraw_max_levels": redraw},
    }


def photo_jobs(engine, steps: int) -> dict:
    """The two offline photos as /project jobs (the encoder's start), each run alone and then
    both together through the engine's scheduler, as the batching engine runs members' jobs."""
    import queue

    import numpy as np

    from engine.protocol import ProjectRequest, Result, wire
    from engine.serving.scheduler import Scheduler
    from tests.photos import astronaut, encode, grace_hopper

    images = [encode(astronaut(), "JPEG"), encode(grace_hopper(), "JPEG")]

    def serve(requests, max_jobs):
        events, jobs = [], queue.Queue()
        for r in requests:
            jobs.put((r.id, wire.dumps(r)))
        jobs.put(None)
        Scheduler(engine, events.append, max_jobs=max_jobs).serve(jobs)
        answers = {e.job_id: e for e in events if isinstance(e, Result)}
        return [answers[r.id] for r in requests]

    alone = [serve([ProjectRequest(image=im, steps=steps)], 1)[0] for im in images]
    together = serve([ProjectRequest(image=im, steps=steps) for im in images], 4)
    ws = [float(np.abs(a.faces[0].ws - b.faces[0].ws).max()) for a, b in zip(alone, together)]
    return {
        "steps": steps,
        "ws_max_diff": max(ws),
        "likeness_alone": [a.figures["likeness"] for a in alone],
        "likeness_batched": [b.figures["likeness"] for b in together],
        "psnr_alone": [a.figures["psnr"] for a in alone],
        "psnr_batched": [b.figures["psnr"] for b in together],
    }


def isa_env(isa: str) -> dict:
    """The environment that caps the CPU kernels (tests/test_numerics.py uses the same)."""
    if isa == "native":
        return {}
    if isa == "avx2":
        return {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    return {"ATEN_CPU_CAPABILITY": isa}


def settings(threads: list[int], isas: list[str]) -> list[dict]:
    return [
        {"setting": f"{t} threads, {isa}", "env": {"OMP_NUM_THREADS": str(t), **isa_env(isa)}}
        for t in threads
        for isa in isas
    ]


def run_setting(setting: dict, steps: int, members: int, photo_steps: int) -> dict:
    env = {**os.environ, **setting["env"]}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.numerics",
            "--one",
            "--steps",
            str(steps),
            "--members",
            str(members),
            "--photo-steps",
            str(photo_steps),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=1800,
    )
    if proc.returncode != 0:
        return {**setting, "error": proc.stderr.strip().splitlines()[-1:]}
    return {**setting, **json.loads(proc.stdout)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument(
        "--isa", nargs="+", default=["native", "avx2", "default"], choices=["native", "avx2", "avx512", "default"]
    )
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--photo-steps", type=int, default=300, help="steps of the two photos' /project jobs")
    ap.add_argument("--one", action="store_true", help="measure the current setting in this process")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.steps, args.members, args.photo_steps)))
        return
    rows = [run_setting(s, args.steps, args.members, args.photo_steps) for s in settings(args.threads, args.isa)]
    report({"cpu": cpu_name(), "rows": rows}, args.out)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
