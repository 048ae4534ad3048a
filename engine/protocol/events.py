"""What travels besides requests: kept faces, files, progress, results, failures, readiness.

Plain frozen dataclasses of builtins and numpy arrays; ``wire.py`` encodes exactly these.
No torch, no discord: both sides import this.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.protocol.errors import BadArgument, refunded

WS_DTYPE = np.dtype("<f4")
NOISE_DTYPE = np.dtype("<f2")
MAX_WS = 32  # a 1024-px StyleGAN2 has 18 style layers
MAX_W_DIM = 1024
MAX_NOISE_VALUES = 1 << 20  # a kept face's packed maps (up to 256 px: 174 776 values)
# The projector whose faces this release keeps: 2 keeps W+ near W and leaves the noise maps
# texture only (engine/latent/projector.py); faces kept before it (1) melt in blends and edits.
PROJECTOR = 2


@dataclass(frozen=True, eq=False)
class Face:
    """A kept face (``engine/latent/kept.py``): W+ ``[num_ws, w_dim]`` float32 and its packed float16
    noise maps (``None``: the model's constant maps, e.g. a /random face)."""

    ws: np.ndarray
    noise: np.ndarray | None = None

    def __repr__(self) -> str:
        def shape(a) -> str:
            return (
                f"{getattr(a, 'dtype', type(a).__name__)}{list(getattr(a, 'shape', ()))}" if a is not None else "None"
            )

        return f"Face(ws={shape(self.ws)}, noise={shape(self.noise)})"

    def validate(self, name: str = "face") -> None:
        ws = self.ws
        if not isinstance(ws, np.ndarray) or ws.dtype != WS_DTYPE or ws.ndim != 2:
            raise BadArgument(f"The {name} latent is not a float32 W+ array.")
        if not (0 < ws.shape[0] <= MAX_WS and 0 < ws.shape[1] <= MAX_W_DIM):
            raise BadArgument(f"The {name} latent has an impossible shape.")
        if not np.isfinite(ws).all():
            raise BadArgument("That latent is damaged (it holds non-numbers); project the photo again.")
        noise = self.noise
        if noise is not None:
            if not isinstance(noise, np.ndarray) or noise.dtype != NOISE_DTYPE or noise.ndim != 1:
                raise BadArgument(f"The {name}'s noise maps are not a float16 array.")
            if noise.size > MAX_NOISE_VALUES:
                raise BadArgument(f"The {name}'s noise maps are larger than any model's.")


def as_face(ws, noise=None) -> Face:
    """A Face from array-likes (a bare W+ array keeps the model's constant noise)."""
    noise = None if noise is None else np.ascontiguousarray(noise, NOISE_DTYPE).reshape(-1)
    return Face(np.ascontiguousarray(ws, WS_DTYPE), noise)


@dataclass(frozen=True)
class File:
    name: str
    data: bytes
    description: str = ""


@dataclass(frozen=True)
class Progress:
    job_id: str
    step: int
    total: int
    message: str = ""
    preview_png: bytes | None = None


@dataclass(frozen=True)
class Started:
    """The engine has begun the job: its wait in the queue ends here."""

    job_id: str


@dataclass(frozen=True)
class Rerun:
    """The engine died with this job in hand and runs it again, alone (the bot's transport says
    so; it never crosses the wire)."""

    job_id: str


@dataclass(frozen=True)
class Result:
    job_id: str
    files: tuple[File, ...] = ()
    faces: tuple[Face, ...] = ()  # new faces a member may keep (project, random, blend…; swap gives two)
    model_id: str = ""
    figures: dict = field(default_factory=dict)  # numbers and short strings, for the reply's text
    text: str = ""  # one or two sentences the member reads with the files
    choose: int = 0  # several faces found and none projected: the member picks one of these (0: a plain result)

    @property
    def face(self) -> Face | None:
        return self.faces[0] if self.faces else None


@dataclass(frozen=True)
class JobFailed:
    job_id: str
    code: str  # a UserError code, or "internal"
    message: str  # one sentence for the member
    detail: str = ""  # traceback for the log, never shown to the member

    @property
    def user_error(self) -> bool:
        return self.code != "internal"

    @property
    def refunded(self) -> bool:
        """Whether the job costs the member nothing (its error class says so)."""
        return refunded(self.code)


@dataclass(frozen=True)
class WorkerReady:
    worker_id: str
    model_id: str
    resolution: int
    num_ws: int
    w_dim: int
    directions: tuple[str, ...]
    device: str
    pid: int


Event = Progress | Started | Rerun | Result | JobFailed | WorkerReady
