"""A restricted unpickler for NVIDIA stylegan2-ada-pytorch network pickles.

Those pickles rebuild each network through
``torch_utils.persistence._reconstruct_persistent_obj(meta)``, where ``meta`` carries
the module's *source code*. Loading them naively imports and executes that source:
a pickle from the internet could run anything. Here nothing is imported or executed:
``find_class`` answers from a short allowlist of pure data constructors, persistent
objects come back as inert :class:`PersistentRecord` values holding their pickled
state, and tensor storages are decoded with ``torch.load(weights_only=True)``.
Anything else in the file is refused with :class:`UnsafePickle`.

Two opcodes are narrowed further (Python's own unpickler, whose opcode table can be
changed, does the reading): ``BUILD`` may only restate a numpy dtype as it already is
(the one use in a snapshot), so a pickle cannot set attributes on the loader's functions
or on the values they built; and a tensor view must lie inside its storage with no
element twice (a stride-0 view can declare gigabytes over a few bytes).
"""

from __future__ import annotations

import collections
import encodings.ascii  # noqa: F401  the codecs the Python unpickler decodes text with, imported
import encodings.latin_1  # noqa: F401  here so that no pickle makes the loader import anything
import encodings.raw_unicode_escape  # noqa: F401
import encodings.utf_8  # noqa: F401
import io
import pickle
import warnings
import zipfile
from dataclasses import dataclass

import numpy as np
import torch

MAX_DIMS = 8  # a network's tensors have at most 5 dimensions
MAX_EXTENT = 1 << 40  # elements along one dimension, or an offset or a stride


class UnsafePickle(ValueError):
    """The pickle holds something outside the structure of a network snapshot."""


@dataclass
class PersistentRecord:
    """What ``_reconstruct_persistent_obj`` would have built, kept as data."""

    class_name: str
    state: dict
    module_src_len: int


def _reconstruct_persistent_obj(meta) -> PersistentRecord:
    if not isinstance(meta, dict) or not isinstance(meta.get("state"), dict):
        raise UnsafePickle("persistent object without a state dictionary")
    if meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise UnsafePickle("persistent object of an unexpected type")
    src = meta.get("module_src", "")
    return PersistentRecord(meta["class_name"], meta["state"], len(src) if isinstance(src, str) else -1)


def _check_storage_archive(data: bytes) -> None:
    """A storage saved in torch's zip format holds its bytes stored, never compressed: a deflated
    entry could inflate to gigabytes from a few kilobytes before anything is refused."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return  # torch's legacy format (what a snapshot holds): read as it lies
    try:
        entries = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, ValueError, OSError):
        raise UnsafePickle("tensor storage in a damaged archive") from None
    if any(e.compress_type != zipfile.ZIP_STORED for e in entries) or sum(e.file_size for e in entries) > len(data):
        raise UnsafePickle("tensor storage that is compressed (torch never writes one so)")


def _load_storage_from_bytes(data):
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickle("tensor storage that is not bytes")
    _check_storage_archive(bytes(data))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            storage = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 (torch's own unpickler refused it)
        raise UnsafePickle(f"tensor storage refused: {exc}") from None
    dtype = getattr(storage, "dtype", None)
    if dtype is not None and (dtype.is_complex or dtype in (torch.quint8, torch.qint8, torch.qint32)):
        kind = str(dtype).removeprefix("torch.")
        raise UnsafePickle(f"tensor storage of {kind} numbers, which a network never holds")
    return storage


def check_view(storage_elements: int, offset, size, stride) -> None:
    """Refuse a tensor view that reaches past its storage or reads an element twice."""
    if not (
        isinstance(offset, int)
        and isinstance(size, tuple)
        and isinstance(stride, tuple)
        and len(size) == len(stride) <= MAX_DIMS
        and all(type(n) is int and 0 <= n < MAX_EXTENT for n in (offset, *size, *stride))
    ):  # bounded before any product: a size of huge integers would cost quadratic time to multiply
        raise UnsafePickle("tensor with a malformed shape")
    numel = 1
    for n in size:
        numel *= n
    if numel and (
        any(st == 0 for n, st in zip(size, stride) if n > 1)
        or offset + sum((n - 1) * st for n, st in zip(size, stride)) >= storage_elements
        or numel > storage_elements
    ):
        raise UnsafePickle("tensor whose shape does not fit its storage")


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, torch.storage.TypedStorage | torch.UntypedStorage):
        raise UnsafePickle("tensor without a storage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage.size() is deprecated, and what torch.load hands us
        elements = storage.size() if isinstance(storage, torch.storage.TypedStorage) else storage.nbytes()
    check_view(elements, offset, size, stride)
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, collections.OrderedDict())


def check_tensor(t: torch.Tensor, where: str) -> None:
    """Refuse a loaded tensor whose view reaches past its storage or reads an element twice."""
    try:
        check_view(
            t.untyped_storage().nbytes() // t.element_size(), t.storage_offset(), tuple(t.shape), tuple(t.stride())
        )
    except UnsafePickle:
        raise UnsafePickle(f"{where} has a shape that does not fit its storage") from None


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, torch.Tensor):
        raise UnsafePickle("parameter without tensor data")
    return data


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf" or not isinstance(data, bytes):
        raise UnsafePickle("numpy scalar of an unexpected type")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _numpy_dtype(name, align=False, copy=False):
    if not isinstance(name, str) or name.lstrip("<>=|") not in {
        "f2",
        "f4",
        "f8",
        "i1",
        "i2",
        "i4",
        "i8",
        "u1",
        "b1",
        "?",
    }:
        raise UnsafePickle(f"numpy dtype {name!r} is not allowed")
    return np.dtype(name)


_ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
    ("builtins", "set"): set,
}


class SnapshotUnpickler(pickle._Unpickler):  # the Python unpickler: its opcode table can be narrowed
    dispatch = dict(pickle._Unpickler.dispatch)

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if not (isinstance(inst, np.dtype) and state == inst.__reduce__()[2]):
            raise UnsafePickle(
                f"the pickle sets the state of a {type(inst).__name__}, which a network snapshot never does"
            )

    dispatch[pickle.BUILD[0]] = load_build

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickle(f"the pickle asks for {module}.{name}, which a network snapshot never needs") from None

    def persistent_load(self, pid):
        raise UnsafePickle("the pickle uses persistent ids, which a network snapshot never needs")


def load_snapshot(data: bytes) -> dict:
    """Decode an ada network pickle into plain data, never running code from it."""
    try:
        obj = SnapshotUnpickler(io.BytesIO(data)).load()
    except UnsafePickle:
        raise
    except RecursionError:
        raise UnsafePickle("the pickle nests too deeply") from None
    except Exception as exc:  # noqa: BLE001 (the unpickler raises many types for a damaged file)
        raise UnsafePickle(f"not a readable network pickle ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise UnsafePickle("the pickle does not hold a snapshot dictionary")
    return obj
