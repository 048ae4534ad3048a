"""The protocol's objects as bytes: data only, typed field by field, bounded before allocation.

An object is one msgpack map ``{"type": <class name>, "v": 1, "body": {field: value}}``.
Values are msgpack's numbers, strings, booleans, nil, bytes, lists and maps; a numpy
array is ``{"dtype": "<f4" | "<f2", "shape": [...], "data": <raw little-endian bytes>}``
whose byte count must match its shape exactly. Decoding knows each class's field types
(its annotations) and refuses anything else: an unknown class or field, a wrong type, a
dtype outside the list, a shape that does not match its bytes. Nothing on the wire can
name code to run, and nothing decoded is larger than the bytes that came in: besides the
per-container caps, a message may hold at most ``MAX_OBJECTS`` lists, maps and their
items in all (counted while msgpack builds them), so nesting cannot turn 16 MiB of
one-byte empty lists into a gigabyte of Python objects.

Across hosts (Redis) a message is also sealed: encrypted and authenticated with
ChaCha20-Poly1305 under a key derived from the shared secret with scrypt (a guess costs
~0.1 s and 16 MiB: HKDF let a dictionary secret fall offline in 0.14 s), over a
timestamp, a random nonce and a *context* the caller names (the stream, entry id and job
id the message travels with), so someone who reaches Redis without the secret reads
nothing, and a sealed message moved to another entry, stream or key no longer opens.
Unsealed, forged, moved and stale messages are refused before anything is decoded.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import struct
import time
import types
import typing

import msgpack
import numpy as np

from engine.protocol import events, requests

VERSION = 1
MAX_MESSAGE_BYTES = 96 * 2**20  # a result: its largest file (≤ 25 MiB here), a progress GIF, a few PNGs
MAX_STR = 2**20
MAX_ITEMS = 4096  # list and map lengths (shapes, faces, files, figures)
MAX_DIMS = 4
MAX_OBJECTS = 65_536  # lists, maps and their items in one message (a 64-face morph uses ~1 000)
DTYPES = {"<f4": np.dtype("<f4"), "<f2": np.dtype("<f2")}
SEAL_MAGIC = b"WSS3"  # v3: the key is derived with scrypt
MIN_SECRET = 24  # characters of the shared secret
MIN_SECRET_BITS = 128  # its estimated strength (characters × their empirical entropy)
SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_SEAL_HEAD = struct.Struct(">4sd12s")  # magic, unix time of sealing, nonce; then ciphertext and 16-byte tag
SEAL_OVERHEAD = _SEAL_HEAD.size + 16

MESSAGES: dict[str, type] = {cls.__name__: cls for cls in (
    *requests.REQUESTS.values(), events.Progress, events.Started, events.Result, events.JobFailed, events.WorkerReady)}
_NESTED: dict[type, str] = {events.Face: "Face", events.File: "File"}


class WireError(ValueError):
    """Bytes that are not one of the protocol's messages; ``str`` is one sentence."""


# --- encode ------------------------------------------------------------------------------------


def dumps(obj) -> bytes:
    if type(obj).__name__ not in MESSAGES or MESSAGES[type(obj).__name__] is not type(obj):
        raise WireError(f"A {type(obj).__name__} is not a protocol message.")
    data = msgpack.packb({"type": type(obj).__name__, "v": VERSION, "body": _body(obj)}, use_bin_type=True)
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError(f"The message is larger than {MAX_MESSAGE_BYTES // 2**20} MiB.")
    return data


def _body(obj) -> dict:
    return {f.name: _value(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def _value(v):
    if isinstance(v, np.ndarray):
        a = np.ascontiguousarray(v, v.dtype.newbyteorder("<"))
        if a.dtype.str not in DTYPES:
            raise WireError(f"Arrays of {a.dtype} are not part of the protocol.")
        return {"dtype": a.dtype.str, "shape": list(a.shape), "data": a.tobytes()}
    if type(v) in _NESTED:
        return _body(v)
    if isinstance(v, (tuple, list)):
        return [_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _value(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, (bool, int, float, str, bytes)):
        return v
    raise WireError(f"A {type(v).__name__} cannot travel on the wire.")


# --- decode ------------------------------------------------------------------------------------


def loads(data: bytes, expect: type | tuple[type, ...] | None = None):
    """The message in ``data``; with ``expect``, it must be one of those classes."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) > MAX_MESSAGE_BYTES:
        raise WireError("The message is not bytes of an acceptable size.")
    budget = _Budget()
    try:
        doc = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True, max_str_len=MAX_STR,
                              max_bin_len=MAX_MESSAGE_BYTES, max_array_len=MAX_ITEMS, max_map_len=MAX_ITEMS,
                              max_ext_len=0, list_hook=budget.list, object_hook=budget.map)
    except _TooManyObjects:
        raise WireError(f"The message holds more than {MAX_OBJECTS} lists, maps and items.") from None
    except Exception as exc:  # noqa: BLE001 (msgpack raises several types for malformed bytes)
        raise WireError(f"The message is not readable ({type(exc).__name__}).") from None
    if not isinstance(doc, dict) or set(doc) != {"type", "v", "body"} or doc["v"] != VERSION:
        raise WireError("The message is not a protocol envelope of this version.")
    cls = MESSAGES.get(doc["type"]) if isinstance(doc["type"], str) else None
    if cls is None:
        raise WireError("The message is of no protocol type.")
    if expect is not None and not issubclass(cls, expect):
        raise WireError(f"A {cls.__name__} is not expected here.")
    return _build(cls, doc["body"])


class _TooManyObjects(Exception):
    pass


class _Budget:
    """Counts the containers msgpack builds (and their items) and stops it past ``MAX_OBJECTS``:
    each container is capped at ``MAX_ITEMS``, so at most that many are built past the budget."""

    def __init__(self) -> None:
        self.left = MAX_OBJECTS

    def _spend(self, n: int) -> None:
        self.left -= 1 + n
        if self.left < 0:
            raise _TooManyObjects

    def list(self, items: list) -> list:
        self._spend(len(items))
        return items

    def map(self, pairs: dict) -> dict:
        self._spend(len(pairs))
        return pairs


def _build(cls: type, body):
    if not isinstance(body, dict):
        raise WireError(f"A {cls.__name__} must be a map of its fields.")
    hints = _hints(cls)
    if not set(body) <= set(hints):
        raise WireError(f"A {cls.__name__} has no field {sorted(set(body) - set(hints))[0][:40]!r}.")
    kwargs = {name: _decode(value, hints[name], f"{cls.__name__}.{name}") for name, value in body.items()}
    try:
        return cls(**kwargs)
    except TypeError:
        raise WireError(f"A {cls.__name__} is missing a field.") from None


_HINTS: dict[type, dict] = {}


def _hints(cls: type) -> dict:
    if cls not in _HINTS:
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        _HINTS[cls] = {k: v for k, v in typing.get_type_hints(cls).items() if k in names}
    return _HINTS[cls]


def _decode(value, hint, where: str):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _decode(value, inner, where)
    if origin is tuple:
        if not isinstance(value, list):
            raise WireError(f"{where} must be a list.")
        return tuple(_decode(v, args[0], where) for v in value)
    if hint is np.ndarray:
        return _array(value, where)
    if hint in _NESTED:
        return _build(hint, value)
    if hint is dict or origin is dict:
        return _figures(value, where)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (str, int, float, bool, bytes) and type(value) is hint:
        return value
    raise WireError(f"{where} has the wrong type.")


def _array(value, where: str) -> np.ndarray:
    if not isinstance(value, dict) or set(value) != {"dtype", "shape", "data"}:
        raise WireError(f"{where} is not an array.")
    dtype = DTYPES.get(value["dtype"]) if isinstance(value["dtype"], str) else None
    shape, data = value["shape"], value["data"]
    if dtype is None:
        raise WireError(f"{where} has a dtype outside the protocol's (float32, float16).")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(
            type(n) is int and 0 <= n <= MAX_MESSAGE_BYTES for n in shape):
        raise WireError(f"{where} has an impossible shape.")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize * int(np.prod(shape, dtype=object)):
        raise WireError(f"{where}'s bytes do not match its shape.")
    return np.frombuffer(data, dtype).reshape(shape).copy()


def _figures(value, where: str) -> dict:
    """A figures map: short names to numbers, strings, booleans, nil or short lists of them."""
    if not isinstance(value, dict) or len(value) > 256:
        raise WireError(f"{where} is not a small map.")
    scalar = (type(None), bool, int, float, str)
    for k, v in value.items():
        items = v if isinstance(v, list) else [v]
        if len(k) > 64 or len(items) > 64 or not all(isinstance(x, scalar) for x in items):
            raise WireError(f"{where} holds something other than plain figures.")
    return dict(value)


# --- seal (across hosts) -------------------------------------------------------------------------


def secret_bits(secret: str) -> float:
    """A rough strength of a shared secret: its length times the empirical entropy of its
    characters (a random 64-hex-digit secret: ~250; a dictionary phrase: well under 128)."""
    import collections
    import math

    if not secret:
        return 0.0
    counts = collections.Counter(secret)
    per_char = -sum(c / len(secret) * math.log2(c / len(secret)) for c in counts.values())
    return per_char * len(secret)


def weak_secret(secret: str) -> str | None:
    """Why ``secret`` may not seal the wire, as the end of a sentence; None when it may."""
    if len(secret) < MIN_SECRET:
        return f"must hold at least {MIN_SECRET} characters"
    repeated = any(secret.count(secret[i:i + 6]) > 1 for i in range(len(secret) - 5))
    if repeated or secret_bits(secret) < MIN_SECRET_BITS:
        return "looks guessable; generate one with `openssl rand -hex 32`"
    return None


@functools.lru_cache(maxsize=8)
def _cipher(key: bytes):
    import hashlib

    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    derived = hashlib.scrypt(key, salt=b"wspace wire seal v3", dklen=32, maxmem=64 * 2**20, **SCRYPT)
    return ChaCha20Poly1305(derived)


def seal(payload: bytes, key: bytes, context: bytes = b"", now: float | None = None) -> bytes:
    """``payload`` encrypted and authenticated under ``key``, with the time of sealing and
    ``context`` (not stored: the reader must name the same) bound to it."""
    stamp = time.time() if now is None else now
    head = _SEAL_HEAD.pack(SEAL_MAGIC, stamp, os.urandom(12))
    return head + _cipher(key).encrypt(head[-12:], payload, head + context)


def unseal(data: bytes, key: bytes, max_age: float, context: bytes = b"", now: float | None = None,
           skew: float = 60.0) -> bytes:
    """The payload of a sealed message, if ``key`` sealed it for ``context`` less than ``max_age`` seconds ago."""
    from cryptography.exceptions import InvalidTag

    if not isinstance(data, bytes) or len(data) < SEAL_OVERHEAD or len(data) > MAX_MESSAGE_BYTES + SEAL_OVERHEAD:
        raise WireError("The message is not sealed.")
    magic, stamp, nonce = _SEAL_HEAD.unpack_from(data)
    if magic != SEAL_MAGIC:
        raise WireError("The message is not sealed.")
    try:
        payload = _cipher(key).decrypt(nonce, data[_SEAL_HEAD.size:], data[:_SEAL_HEAD.size] + context)
    except InvalidTag:
        raise WireError("The message's seal is not ours (another key, or moved from where it was sent).") from None
    age = (time.time() if now is None else now) - stamp
    if not -skew <= age <= max_age:  # NaN fails both
        raise WireError("The message is too old (or from the future).")
    return payload
