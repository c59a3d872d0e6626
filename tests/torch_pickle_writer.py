"""Write PyTorch ``.pth`` files (legacy and zip layouts) without PyTorch, for the reader's tests.

The pickles name the same globals PyTorch writes (``torch._utils._rebuild_tensor_v2``,
``torch.FloatStorage`` ...): stand-in modules named ``torch`` / ``torch._utils`` are put in
``sys.modules`` only while pickling, so ``pickle`` can resolve the names it writes.
"""

from __future__ import annotations

import collections
import contextlib
import io
import pickle
import struct
import sys
import types
import zipfile
from typing import Any, Iterator

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_NAMES = {np.dtype("f4"): "FloatStorage", np.dtype("f8"): "DoubleStorage", np.dtype("i8"): "LongStorage",
                 np.dtype("i4"): "IntStorage", np.dtype("u1"): "ByteStorage", np.dtype("f2"): "HalfStorage"}


class FakeTensor:
    """A tensor over ``storage`` (a 1-D array) with PyTorch's offset / size / stride."""

    def __init__(self, storage: np.ndarray, offset: int, size: tuple, stride: tuple, key: str) -> None:
        self.storage, self.offset, self.size, self.stride, self.key = storage, offset, size, stride, key

    @classmethod
    def of(cls, array: np.ndarray, key: str) -> "FakeTensor":
        array = np.ascontiguousarray(array)
        stride = tuple(s // array.itemsize for s in array.strides)
        return cls(array.ravel(), 0, array.shape, stride, key)


class _StorageRef:
    def __init__(self, tensor: FakeTensor) -> None:
        self.tensor = tensor


@contextlib.contextmanager
def _fake_torch() -> Iterator[types.ModuleType]:
    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args: Any) -> None:  # never called: only its name is pickled
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    for name in set(STORAGE_NAMES.values()):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    try:
        yield torch
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


class _Pickler(pickle.Pickler):
    def __init__(self, stream, torch, legacy: bool) -> None:
        super().__init__(stream, protocol=2)
        self._torch, self._legacy, self.storages = torch, legacy, collections.OrderedDict()

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, FakeTensor):
            hooks = collections.OrderedDict()
            return (self._torch._utils._rebuild_tensor_v2,
                    (_StorageRef(obj), obj.offset, tuple(obj.size), tuple(obj.stride), False, hooks))
        return NotImplemented

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _StorageRef):
            tensor = obj.tensor
            self.storages.setdefault(tensor.key, tensor.storage)
            storage_type = getattr(self._torch, STORAGE_NAMES[tensor.storage.dtype])
            if self._legacy:
                return ("storage", storage_type, tensor.key, "cpu", tensor.storage.size, None)
            return ("storage", storage_type, tensor.key, "cpu", tensor.storage.size)
        return None


def legacy_bytes(obj: Any, sys_info: dict | None = None, magic: int = MAGIC) -> bytes:
    """The legacy layout: magic, protocol, sys info, object, storage keys, raw storages."""
    stream = io.BytesIO()
    for header in (magic, 1001, sys_info or {"protocol_version": 1001, "little_endian": True,
                                              "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(header, stream, protocol=2)
    with _fake_torch() as torch:
        pickler = _Pickler(stream, torch, legacy=True)
        pickler.dump(obj)
    pickle.dump(list(pickler.storages), stream, protocol=2)
    for storage in pickler.storages.values():
        stream.write(struct.pack("<q", storage.size))
        stream.write(storage.astype(storage.dtype.newbyteorder("<")).tobytes())
    return stream.getvalue()


def zip_bytes(obj: Any, prefix: str = "archive") -> bytes:
    """The zip layout: <prefix>/data.pkl and <prefix>/data/<key>."""
    pkl = io.BytesIO()
    with _fake_torch() as torch:
        pickler = _Pickler(pkl, torch, legacy=False)
        pickler.dump(obj)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{prefix}/data.pkl", pkl.getvalue())
        archive.writestr(f"{prefix}/byteorder", "little")
        for key, storage in pickler.storages.items():
            archive.writestr(f"{prefix}/data/{key}", storage.astype(storage.dtype.newbyteorder("<")).tobytes())
    return out.getvalue()
