"""Milliseconds per projection step with 1 and with 8 members in the batch (embedded model).

Members project random targets from ``w_avg`` (1000-step schedules, so none finishes);
5 warm-up steps, then ``--steps`` timed, alternating the batch sizes for ``--rounds``
rounds. Prints JSON: every round's figure, the best of each, and the step-level ratio
``8 × best(1) / best(8)`` (how much batching 8 members can gain on the steps alone).

    python -m bench.batch_step [--rounds 3] [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    from engine.model.runtime import prepare_process

    prepare_process(None)
    from engine.jobs.engine import Engine
    from engine.latent.batch import Member

    engine = Engine()
    G = engine.G
    rng = np.random.default_rng(0)
    ms: dict[int, list[float]] = {1: [], 8: []}
    for _ in range(args.rounds):
        for n in ms:
            batch = engine.new_batch()
            for i in range(n):
                batch.add(
                    Member((rng.random((G.resolution, G.resolution, 3)) * 255).astype(np.uint8), steps=1000, seed=i)
                )
            for _ in range(5):
                batch.step()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                batch.step()
            ms[n].append(round((time.perf_counter() - t0) / args.steps * 1000, 2))
    best = {n: min(v) for n, v in ms.items()}
    print(
        json.dumps(
            {
                "ms_per_step": {str(n): v for n, v in ms.items()},
                "best": {str(n): b for n, b in best.items()},
                "step_ratio_8": round(8 * best[1] / best[8], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
