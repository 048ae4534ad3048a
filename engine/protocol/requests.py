"""Every request a member (or the CLI) can make of the engine: one frozen dataclass per kind.

Each kind's bounds are class constants, read by the bot's option ranges, the CLI's options
and the engine alike; ``validate()`` is the one place they are checked (the engine checks
what depends on the loaded model: style-layer counts and direction names). A request
that fails gets one sentence (:class:`BadArgument`).

To add a kind: a dataclass here (with ``kind`` and ``check``), one handler in
``engine/jobs/handlers.py``, one command. The wire needs nothing more.
"""

from __future__ import annotations

import functools
import math
import numbers
import re
import typing
import uuid
from dataclasses import dataclass, field, fields
from typing import ClassVar

from engine.protocol.errors import BadArgument
from engine.protocol.events import MAX_WS, Face

LAYER_GROUPS = ("all", "coarse", "middle", "fine")
MAX_SEED = 2**32 - 1
DEFAULT_MAX_BYTES = 8 * 2**20
MAX_ATTACHMENT_BYTES = 100 * 2**20  # Discord's largest upload (boosted servers, Nitro)
MAX_PHOTO_BYTES = 32 * 2**20
JOB_ID = re.compile(r"[0-9a-f]{12}")


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True, kw_only=True, eq=False)
class Request:
    """What every request carries: its job id, the model its faces were made with, and the
    largest attachment the reply may hold."""

    kind: ClassVar[str] = ""
    # What the bot needs to know of each kind lives here, beside its bounds:
    cost: ClassVar[float] = 1.0  # rate-limit cost in projection-equivalents (limits.costs may override it)
    stoppable: ClassVar[bool] = False  # long enough to deserve a Stop button
    reply: ClassVar[str] = "{text}"  # the bot's answer around the engine's sentences
    id: str = field(default_factory=new_job_id)
    model_id: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES

    def validate(self) -> None:
        if not isinstance(self.id, str) or not JOB_ID.fullmatch(self.id):
            raise BadArgument("That request has no valid job id.")
        if self.model_id is not None and (not isinstance(self.model_id, str) or len(self.model_id) > 128):
            raise BadArgument("That request names no valid model.")
        integer(self.max_bytes, "max_bytes", 1024, MAX_ATTACHMENT_BYTES)
        self.check()
        for name, face in self.named_faces().items():
            if not isinstance(face, Face):
                raise BadArgument(f"This request needs a face '{name}'.")
            face.validate(name)

    def check(self) -> None:
        """The kind's own bounds (overridden per kind)."""

    def named_faces(self) -> dict[str, object]:
        """Every face this request carries (its fields typed ``Face`` or ``tuple[Face, ...]``),
        by a name a member can read."""
        out = {}
        single, many = _face_fields(type(self))
        for name in single:
            out[name] = getattr(self, name)
        for name in many:
            value = getattr(self, name)
            if not isinstance(value, tuple):
                raise BadArgument("This request needs a list of faces.")
            out.update({f"face {i + 1}": v for i, v in enumerate(value)})
        return out


@functools.cache
def _face_fields(cls: type) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The fields of a request class typed ``Face``, and those typed ``tuple[Face, ...]`` (by
    their resolved types, not their annotations' spelling)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    return (tuple(n for n in names if hints[n] is Face), tuple(n for n in names if hints[n] == tuple[Face, ...]))


# --- the kinds -------------------------------------------------------------------------------


MAX_FACES = 32  # faces of one photo a member may choose from (a team)


def photo(image, max_image_bytes) -> None:
    if not isinstance(image, bytes):
        raise BadArgument("This request needs a photo.")
    integer(max_image_bytes, "max_image_bytes", 1024, MAX_PHOTO_BYTES)


@dataclass(frozen=True, kw_only=True, eq=False)
class ProjectRequest(Request):
    kind: ClassVar[str] = "project"
    stoppable: ClassVar[bool] = True
    reply: ClassVar[str] = "Your face, as the generator draws it: {text}\nIt is yours now for /blend, /age, /morph…"
    STEPS: ClassVar[tuple[int, int]] = (1, 2000)
    DEFAULT_STEPS: ClassVar[int] = 300
    FACE: ClassVar[tuple[int, int]] = (1, MAX_FACES)
    image: bytes
    steps: int = DEFAULT_STEPS
    encoder: bool = True  # start from the model's encoder guess when it has one
    max_image_bytes: int = 10 * 2**20
    face: int | None = None  # which face of the photo, 1 = the largest (the default)
    ask_if_several: bool = False  # with no face given and several found: answer with the numbered faces instead

    def check(self) -> None:
        photo(self.image, self.max_image_bytes)
        integer(self.steps, "steps", *self.STEPS)
        boolean(self.encoder, "encoder")
        boolean(self.ask_if_several, "ask_if_several")
        if self.face is not None:
            integer(self.face, "face", *self.FACE)


@dataclass(frozen=True, kw_only=True, eq=False)
class FacesRequest(Request):
    """Every face of a photo, numbered largest first: a montage and the aligned crops."""

    kind: ClassVar[str] = "faces"
    cost: ClassVar[float] = 0.0
    stoppable: ClassVar[bool] = True
    image: bytes
    max_image_bytes: int = 10 * 2**20

    def check(self) -> None:
        photo(self.image, self.max_image_bytes)


@dataclass(frozen=True, kw_only=True, eq=False)
class TeamRequest(Request):
    """Every face of a group photo projected, and a looping morph through them all."""

    kind: ClassVar[str] = "team"
    cost: ClassVar[float] = 3.0
    stoppable: ClassVar[bool] = True
    STEPS: ClassVar[tuple[int, int]] = ProjectRequest.STEPS
    FRAMES: ClassVar[tuple[int, int]] = (8, 240)
    FORMATS: ClassVar[tuple[str, ...]] = ("gif", "mp4")
    image: bytes
    steps: int = 150
    frames: int | None = None  # default: 12 per face
    format: str = "gif"
    max_image_bytes: int = 10 * 2**20

    def check(self) -> None:
        photo(self.image, self.max_image_bytes)
        integer(self.steps, "steps", *self.STEPS)
        if self.frames is not None:
            integer(self.frames, "frames", *self.FRAMES)
        if self.format not in self.FORMATS:
            raise BadArgument(f"format must be one of {', '.join(self.FORMATS)}.")


@dataclass(frozen=True, kw_only=True, eq=False)
class LookalikeRequest(Request):
    """How near each of ``others`` is to ``face`` by dlib descriptor distance."""

    kind: ClassVar[str] = "lookalike"
    cost: ClassVar[float] = 0.1
    OTHERS: ClassVar[tuple[int, int]] = (1, 256)
    face: Face
    others: tuple[Face, ...]

    def check(self) -> None:
        count(self.others, "A look-alike search", *self.OTHERS)

    def named_faces(self) -> dict[str, object]:
        out = {"face": self.face}
        if not isinstance(self.others, tuple):
            raise BadArgument("This request needs a list of faces.")
        out.update({f"member {i + 1}": f for i, f in enumerate(self.others)})
        return out


@dataclass(frozen=True, kw_only=True, eq=False)
class StrangerRequest(Request):
    """Search the generator for the person (not in any photo) who looks most like ``face``,
    or like the face in ``image`` when a photo is given instead."""

    kind: ClassVar[str] = "stranger"
    stoppable: ClassVar[bool] = True
    SECONDS: ClassVar[tuple[float, float]] = (5.0, 300.0)
    face: Face | None = None
    image: bytes | None = None
    seconds: float = 45.0
    seed: int = 0
    max_image_bytes: int = 10 * 2**20

    def check(self) -> None:
        if (self.face is None) == (self.image is None):
            raise BadArgument("Give either a face or a photo to look for.")
        if self.image is not None:
            photo(self.image, self.max_image_bytes)
        number(self.seconds, "seconds", *self.SECONDS)
        integer(self.seed, "seed", 0, MAX_SEED)

    def named_faces(self) -> dict[str, object]:
        return {} if self.face is None else {"face": self.face}


@dataclass(frozen=True, kw_only=True, eq=False)
class RenderRequest(Request):
    kind: ClassVar[str] = "render"
    cost: ClassVar[float] = 0.0
    face: Face


@dataclass(frozen=True, kw_only=True, eq=False)
class BlendRequest(Request):
    kind: ClassVar[str] = "blend"
    cost: ClassVar[float] = 0.1
    RATIO: ClassVar[tuple[float, float]] = (-2.0, 3.0)
    a: Face
    b: Face
    ratio: float = 0.5
    layers: str = "all"

    def check(self) -> None:
        number(self.ratio, "ratio", *self.RATIO)
        layer_group(self.layers)


@dataclass(frozen=True, kw_only=True, eq=False)
class AverageRequest(Request):
    kind: ClassVar[str] = "average"
    cost: ClassVar[float] = 0.2
    FACES: ClassVar[tuple[int, int]] = (2, 64)
    faces: tuple[Face, ...]

    def check(self) -> None:
        count(self.faces, "An average", *self.FACES)


@dataclass(frozen=True, kw_only=True, eq=False)
class MixRequest(Request):
    """Coarse styles (pose, face shape) of one face, the rest of the other."""

    kind: ClassVar[str] = "mix"
    cost: ClassVar[float] = 0.1
    SPLIT: ClassVar[tuple[int, int]] = (1, MAX_WS - 1)  # the engine narrows it to the model's styles
    coarse: Face
    fine: Face
    split: int | None = None  # the first style taken from ``fine`` (default: where the middle styles start)

    def check(self) -> None:
        if self.split is not None:
            integer(self.split, "split", *self.SPLIT)


@dataclass(frozen=True, kw_only=True, eq=False)
class SwapRequest(Request):
    """Two members swap their fine styles: a's shape with b's finish, and b's shape with a's."""

    kind: ClassVar[str] = "swap"
    cost: ClassVar[float] = 0.1
    SPLIT: ClassVar[tuple[int, int]] = MixRequest.SPLIT
    a: Face
    b: Face
    split: int | None = None  # as for MixRequest

    check = MixRequest.check


@dataclass(frozen=True, kw_only=True, eq=False)
class EditRequest(Request):
    kind: ClassVar[str] = "edit"
    cost: ClassVar[float] = 0.1
    AMOUNT: ClassVar[tuple[float, float]] = (-5.0, 5.0)
    DIRECTION_MAX: ClassVar[int] = 64  # characters of a direction's name
    face: Face
    direction: str
    amount: float = 1.0
    strip: bool = False  # five faces from -amount to +amount instead of one

    def check(self) -> None:
        if not isinstance(self.direction, str) or not 0 < len(self.direction) <= self.DIRECTION_MAX:
            raise BadArgument("Name an attribute to edit.")
        number(self.amount, "amount", *self.AMOUNT)
        boolean(self.strip, "strip")


@dataclass(frozen=True, kw_only=True, eq=False)
class MorphRequest(Request):
    kind: ClassVar[str] = "morph"
    cost: ClassVar[float] = 0.25
    stoppable: ClassVar[bool] = True
    FACES: ClassVar[tuple[int, int]] = (2, 64)
    FRAMES: ClassVar[tuple[int, int]] = (8, 240)
    FRAMES_PER_FACE: ClassVar[int] = 12
    FORMATS: ClassVar[tuple[str, ...]] = ("gif", "mp4")
    faces: tuple[Face, ...]
    frames: int | None = None  # default: FRAMES_PER_FACE per face, within FRAMES
    format: str = "gif"

    def check(self) -> None:
        count(self.faces, "A morph", *self.FACES)
        if self.frames is not None:
            integer(self.frames, "frames", *self.FRAMES)
        if self.format not in self.FORMATS:
            raise BadArgument(f"format must be one of {', '.join(self.FORMATS)}.")

    @property
    def frame_count(self) -> int:
        if self.frames is not None:
            return self.frames
        lo, hi = self.FRAMES
        return max(lo, min(hi, self.FRAMES_PER_FACE * len(self.faces)))


@dataclass(frozen=True, kw_only=True, eq=False)
class LoopRequest(Request):
    """A seamless loop that sways one face's styles (``layers``) and comes back."""

    kind: ClassVar[str] = "loop"
    cost: ClassVar[float] = 0.25
    stoppable: ClassVar[bool] = True
    FRAMES: ClassVar[tuple[int, int]] = (8, 240)
    face: Face
    frames: int = 48
    layers: str = "middle"
    seed: int = 0

    def check(self) -> None:
        integer(self.frames, "frames", *self.FRAMES)
        layer_group(self.layers)
        integer(self.seed, "seed", 0, MAX_SEED)


@dataclass(frozen=True, kw_only=True, eq=False)
class RandomRequest(Request):
    kind: ClassVar[str] = "random"
    cost: ClassVar[float] = 0.1
    reply: ClassVar[str] = "{text} /adopt keeps it as yours."
    TRUNCATION: ClassVar[tuple[float, float]] = (0.0, 1.0)
    seed: int = 0
    truncation: float = 0.7

    def check(self) -> None:
        integer(self.seed, "seed", 0, MAX_SEED)
        number(self.truncation, "truncation", *self.TRUNCATION)


@dataclass(frozen=True, kw_only=True, eq=False)
class GridRequest(Request):
    """The plane through three faces, as a size × size grid."""

    kind: ClassVar[str] = "grid"
    cost: ClassVar[float] = 0.2
    SIZE: ClassVar[tuple[int, int]] = (2, 9)
    a: Face
    b: Face
    c: Face
    size: int = 5

    def check(self) -> None:
        integer(self.size, "size", *self.SIZE)


REQUESTS: dict[str, type[Request]] = {cls.kind: cls for cls in (
    ProjectRequest, FacesRequest, TeamRequest, RenderRequest, BlendRequest, AverageRequest, MixRequest, SwapRequest,
    EditRequest, MorphRequest, LoopRequest, RandomRequest, GridRequest, LookalikeRequest, StrangerRequest)}


# --- checks, each with its one sentence -----------------------------------------------------------


def number(value, name: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise BadArgument(f"{name} must be a number.")
    x = float(value)
    if not math.isfinite(x):
        raise BadArgument(f"{name} must be a finite number.")
    if not lo <= x <= hi:
        raise BadArgument(f"{name} must lie between {plain(lo)} and {plain(hi)}.")
    return x


def integer(value, name: str, lo: int, hi: int) -> int:
    x = number(value, name, lo, hi)
    if not x.is_integer():
        raise BadArgument(f"{name} must be a whole number.")
    return int(x)


def boolean(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise BadArgument(f"{name} must be true or false.")
    return value


def count(faces, what: str, lo: int, hi: int) -> None:
    if not isinstance(faces, tuple) or len(faces) < lo:
        raise BadArgument(f"{what} needs at least {lo} faces.")
    if len(faces) > hi:
        raise BadArgument(f"{what} can take at most {hi} faces.")


def layer_group(layers) -> str:
    """A style group name or an inclusive style range ``A-B`` (checked against the model later)."""
    if isinstance(layers, str):
        if layers in LAYER_GROUPS:
            return layers
        first, sep, last = layers.partition("-")
        if sep and first.isdigit() and last.isdigit() and len(layers) <= 5 and int(first) <= int(last) < MAX_WS:
            return layers
    raise BadArgument(f"layers must be one of {', '.join(LAYER_GROUPS)}, or a style range such as 1-3.")


def plain(x: float) -> str:
    """A bound as a member reads it: whole numbers in full (4294967295, not 4.29497e+09)."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"
