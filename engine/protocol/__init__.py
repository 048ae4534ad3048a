"""The one contract between the bot and the engine (no torch, no discord).

- ``requests``: a frozen dataclass per request kind, its bounds, one ``validate``;
- ``events``: kept faces, files, progress, results (several faces allowed), failures, readiness;
- ``errors``: the typed errors a member can cause, each one sentence;
- ``wire``: these types as data-only bytes (msgpack + raw arrays), sealed across hosts;
- ``redis_keys``: the Redis transport's key layout and limits.
"""

from engine.protocol.errors import (
    BadArgument,
    CraftedUpload,
    EngineRestarted,
    ImageTooLarge,
    ModelMismatch,
    NoFaceFound,
    NotAnImage,
    Stopped,
    UnknownDirection,
    UserError,
)
from engine.protocol.events import (
    PROJECTOR,
    Event,
    Face,
    File,
    JobFailed,
    Progress,
    Rerun,
    Result,
    Started,
    WorkerReady,
    as_face,
)
from engine.protocol.requests import (
    REQUESTS,
    AverageRequest,
    BlendRequest,
    EditRequest,
    FacesRequest,
    GridRequest,
    LookalikeRequest,
    LoopRequest,
    MixRequest,
    MorphRequest,
    ProjectRequest,
    RandomRequest,
    RenderRequest,
    Request,
    StrangerRequest,
    SwapRequest,
    TeamRequest,
)

__all__ = [
    "BadArgument", "CraftedUpload", "EngineRestarted", "ImageTooLarge", "ModelMismatch", "NoFaceFound", "NotAnImage",
    "Stopped", "UnknownDirection", "UserError",
    "PROJECTOR", "Event", "Face", "File", "JobFailed", "Progress", "Rerun", "Result", "Started", "WorkerReady",
    "as_face",
    "REQUESTS", "Request", "AverageRequest", "BlendRequest", "EditRequest", "FacesRequest", "GridRequest",
    "LookalikeRequest", "LoopRequest", "MixRequest", "MorphRequest", "ProjectRequest", "RandomRequest", "RenderRequest",
    "StrangerRequest", "SwapRequest", "TeamRequest",
]
