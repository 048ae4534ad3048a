"""What each round-four hostile upload costs, decode and face search, in CPU seconds; printed as
JSON. The cases are ``tests/hostile_images.py``'s ``round_four()``; the faint-faces tile is also
timed with the face search unbounded, for comparison.

    python -m bench.hostile_uploads [--out FILE]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.report import report
from engine.face import align
from engine.face.align import decode_image, faces_in
from engine.protocol.errors import UserError
from tests.hostile_images import round_four


def cost(data: bytes) -> dict:
    t = time.process_time()
    try:
        answer = f"{len(faces_in(decode_image(data)).faces)} faces"
    except UserError as exc:
        answer = str(exc)
    return {"cpu_s": round(time.process_time() - t, 3), "answer": answer}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    cases = dict(round_four())
    faces_in(decode_image(cases["faint faces tiled"]))  # dlib's models loaded first
    out = {name: cost(data) for name, data in cases.items()}
    align.MAX_CNN_CHECKS = align.MAX_DETECTIONS = 10**9
    out["faint faces tiled, search unbounded"] = cost(cases["faint faces tiled"])
    report(out, args.out)


if __name__ == "__main__":
    main()
