"""The whole protocol between the bot and an engine worker.

Plain dataclasses of builtins and numpy arrays, so any transport that pickles them (a
multiprocessing queue today, Redis later) carries the same objects. This module must
not import torch or discord: both sides import it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import numpy as np

# Job kinds and the arguments each takes (latents travel in ``Job.latents``).
KINDS = {
    "project": "image: bytes, steps: int",
    "render": "latents['a']",
    "blend": "latents['a'], latents['b'], ratio: float, layers: str",
    "average": "latents['0'..'n']",
    "mix": "latents['coarse'], latents['fine'], split: int | None",
    "edit": "latents['a'], direction: str, amount: float, strip: bool",
    "morph": "latents['0'..'n'], frames: int, format: 'gif' | 'mp4'",
    "loop": "latents['a'], frames: int",
    "random": "seed: int, truncation: float",
    "grid": "latents['a'], latents['b'], latents['c'], size: int",
}


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class Face:
    """A kept face (see ``engine/kept.py``): W+ and its packed float16 noise maps
    (``None``: the model's constant maps)."""

    ws: np.ndarray
    noise: np.ndarray | None = None


@dataclass
class Job:
    kind: str
    args: dict = field(default_factory=dict)
    latents: dict[str, Face | np.ndarray] = field(default_factory=dict)  # a bare array: W+ with constant noise
    model_id: str | None = None  # the model every latent in ``latents`` was made by
    max_bytes: int = 8 * 1024 * 1024  # the largest attachment the reply may carry
    id: str = field(default_factory=new_job_id)


@dataclass
class File:
    name: str
    data: bytes
    description: str = ""


@dataclass
class Progress:
    job_id: str
    step: int
    total: int
    message: str = ""
    preview_png: bytes | None = None


@dataclass
class Result:
    job_id: str
    files: list[File]
    latent: np.ndarray | None = None  # a new W+ latent the member may keep (project, random, …)
    noise: np.ndarray | None = None  # its packed float16 noise maps (None: the model's constant maps)
    model_id: str = ""
    figures: dict = field(default_factory=dict)
    text: str = ""


@dataclass
class JobFailed:
    job_id: str
    code: str  # a UserError code, or "internal"
    message: str  # one sentence for the member
    detail: str = ""  # traceback for the log, never shown to the member

    @property
    def user_error(self) -> bool:
        return self.code != "internal"


@dataclass
class WorkerReady:
    worker_id: str
    model_id: str
    resolution: int
    num_ws: int
    w_dim: int
    directions: list[str]
    device: str
    pid: int


Event = Progress | Result | JobFailed | WorkerReady
