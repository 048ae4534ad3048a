"""The numerics tests again, the way other machines differ: thread counts and CPU kernels.

A user's CPU may have fewer or more cores than ours, no AVX-512, or another vendor's
kernels; each changes how oneDNN and ATen split and round a batch. So the tests that compare
a member's face alone and in a batch, and the kept face with what was shown, run again in
child processes under every setting below. The closeness they hold a batch to is in
tests/closeness.py; what was measured under each setting is in docs/benchmarks.md
(``bench/numerics.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.numerics import isa_env
from tests.conftest import THREADS_ENV

REPO = Path(__file__).resolve().parents[1]
CHILD_FLAG = "WSPACE_NUMERICS_CHILD"
# The tests each setting reruns: batched against alone, redraw against shown, draws together.
TESTS = ["tests/test_batch.py", "tests/test_kept.py",
         "tests/test_batching.py::test_renders_edits_and_blends_of_several_jobs_are_drawn_together_as_they_would_be_alone"]


def isa_settings() -> list[str]:
    """``native`` (what the CPU offers); ``default`` (ATen's unvectorised kernels, on any CPU);
    and ``avx2`` (ATen and oneDNN capped at AVX2) on an x86 CPU that has more, so that a
    machine without AVX-512 is exercised too."""
    out = ["native", "default"]
    if torch.backends.cpu.get_cpu_capability() in ("AVX512", "AMX") or "avx512" in cpu_flags():
        out.append("avx2")
    return out


def cpu_flags() -> str:
    try:
        return next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return ""


def child_env(threads: int, isa: str) -> dict[str, str]:
    env = {**os.environ, CHILD_FLAG: "1", "OMP_NUM_THREADS": str(threads), THREADS_ENV: str(threads)}
    for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"):
        env.pop(name, None)
    return {**env, **isa_env(isa)}


SETTINGS = [(t, isa) for t in (1, 2, 3) for isa in isa_settings()]


@pytest.mark.skipif(os.environ.get(CHILD_FLAG) == "1", reason="already inside a numerics setting")
@pytest.mark.parametrize(("threads", "isa"), SETTINGS, ids=[f"{t}threads-{isa}" for t, isa in SETTINGS])
def test_batch_and_redraw_tests_hold_under_this_setting(threads, isa):
    """The tests pass, at this many torch threads and with these kernels (the child checks it got them)."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *TESTS],
                          capture_output=True, text=True, cwd=REPO, env=child_env(threads, isa), timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout
