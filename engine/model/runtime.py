"""Process-wide settings for a process that runs the generator (engine worker, CLI, benches).

glibc's malloc serves blocks above a *dynamic* threshold with fresh ``mmap`` calls and gives
them back with ``munmap``; a batch of 64-px activations (~17 MB) then page-faults in anew on
every layer of every call, and how often depends on what ran before (the threshold moves).
Fixing the threshold at its ceiling and keeping freed memory keeps those blocks in the heap,
where the next layer reuses them: measured 1.04x (batch 16, the CPU path) and 1.82x (the
grouped path) faster generation on this CPU, with far less spread between runs
(``python bench/generator.py``, both allocators side by side). Memory stays at its
high-water mark instead of going back to the OS, which is what a long-lived engine wants.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger("wspace.engine")

# <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_CEILING = 32 * 1024 * 1024  # glibc refuses more on 64-bit (4 MiB × sizeof(long))
KEEP_FREED_BYTES = 1 << 30


def tune_allocator() -> bool:
    """Keep large blocks in the heap (glibc only); returns whether it took effect."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, macOS, Windows: nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_CEILING)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES))
    if not ok:
        log.info("malloc tuning refused by this C library; generation may be slower")
    return ok


PR_SET_PDEATHSIG = 1  # <sys/prctl.h>


def die_with_parent(parent_pid: int) -> bool:
    """Ask Linux to SIGKILL this process when its parent dies, however the parent died
    (``kill -9`` included), and exit now if the parent is already gone. Returns whether
    the kernel took the request (not on macOS/Windows, where the engine relies on its
    queue's end-of-file and the bot's own shutdown instead)."""
    import signal

    ok = False
    name = ctypes.util.find_library("c")
    if name:
        try:
            prctl = ctypes.CDLL(name, use_errno=True).prctl
            ok = prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            ok = False
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(0)
    return ok


def prepare_process(threads: int | None = None) -> int:
    """Call once, first thing, in a process that will run the generator; returns its torch
    CPU threads now. ``threads`` fixes them (engine.threads in the config, ``--threads``);
    by default the process takes its share of the cores it may use with the other engines
    busy on this host, and keeps taking it as they come and go (engine/model/host.py)."""
    import torch

    from engine.model import host

    if host.SHARE is None:
        host.SHARE = host.HostShare(threads)
    host.SHARE.fixed = threads
    share = host.SHARE.share() if threads is None else threads
    torch.set_num_threads(share)
    host.SHARE.threads = share
    tune_allocator()
    return share


# TF32 on CUDA, deliberately (docs/benchmarks.md, "GPU"): on an H100 it made 1024-px
# projection steps 1.5× faster and 1024-px generation 1.5× faster at batch 16, for 5e-4
# relative difference from the reference codebases (1e-6 with it off): an eighth of one
# 8-bit level of a face. bf16 autocast was measured too and not chosen (1.16× more for a
# projection PSNR 0.08 dB lower, near the 0.1 dB limit).
CUDA_TF32 = True


def prepare_device(device: str) -> None:
    """Process-wide settings for the torch device the engine runs on."""
    import torch

    if device.split(":")[0] == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = CUDA_TF32


def device_problem(device: str) -> str | None:
    """One sentence when ``device`` cannot run here (a CUDA device with a CPU-only torch, …)."""
    import torch

    kind = device.split(":")[0]
    if kind == "cuda":
        if torch.version.cuda is None:
            return (f"--device {device}: this torch ({torch.__version__}) is a CPU-only build; "
                    "use cpu or install a CUDA build.")
        if not torch.cuda.is_available():
            return f"--device {device}: torch sees no CUDA GPU on this machine; use cpu."
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            return f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s)."
    elif kind == "mps":
        if not torch.backends.mps.is_available():
            return f"--device {device}: Apple's MPS is not available here; use cpu."
    elif kind != "cpu":
        return f"--device {device}: choose cpu, cuda, cuda:N or mps."
    return None
