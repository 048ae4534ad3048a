"""The protocol objects of ``engine/jobs.py`` as bytes, for transports that leave the process.

Pickle keeps numpy arrays and bytes exact and fast, but reading a pickle can run code, and
a Redis server is a place other programs can write to. So reading goes through an
unpickler that builds only the protocol's own dataclasses, numpy arrays and builtins;
anything else in the bytes is refused with :class:`WireError`.
"""

from __future__ import annotations

import io
import pickle

from engine import jobs

PROTOCOL = 5
_ALLOWED = {
    ("engine.jobs", name) for name in ("Job", "Face", "File", "Progress", "Result", "JobFailed", "WorkerReady")
} | {
    ("numpy", "dtype"), ("numpy", "ndarray"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"),
}


class WireError(ValueError):
    """Bytes that are not one of the protocol's objects."""


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise WireError(f"refused {module}.{name}: not part of the job protocol")
        return super().find_class(module, name)

    def persistent_load(self, pid):
        raise WireError("persistent ids are not part of the job protocol")


def dumps(obj) -> bytes:
    return pickle.dumps(obj, protocol=PROTOCOL)


def loads(data: bytes):
    try:
        obj = _Unpickler(io.BytesIO(data)).load()
    except WireError:
        raise
    except Exception as exc:
        raise WireError(f"unreadable message ({type(exc).__name__})") from None
    if not isinstance(obj, (jobs.Job, jobs.Progress, jobs.Result, jobs.JobFailed, jobs.WorkerReady)):
        raise WireError(f"a {type(obj).__name__} is not a protocol message")
    return obj
