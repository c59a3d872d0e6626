"""An N x d ``.npy`` matrix on disk, read in row ranges with plain file reads.

Why not ``np.load(mmap_mode="r")``: every page of a memory map that is touched counts in the
process's resident memory until the map goes away, so one streamed pass over a 10M x 128 float32
matrix (5 GB) makes the index builder look, and under a container's memory limit act, as if it
held all of it (a 1M build peaked at 1.56 GB RSS with the map, 0.5 GB of it the matrix). Reads
through this class leave the bytes in the page cache, which the kernel reclaims, not in the process.

It offers what the builder's streaming code uses of an array (``shape``, ``ndim``, ``dtype``,
``len``, ``m[a:b]``, ``m[rows]`` for sorted or unsorted row indices), so the same functions take
an in-memory array or this.
"""

from __future__ import annotations

import os
from typing import Union

import numpy as np

from beamlens.models.errors import BeamlensError

#: Rows read per pass when gathering many scattered rows (a sample): one sequential scan.
SCAN_ROWS = 65536


class NpyRows:
    """Row access to a C-order 2-d ``.npy`` file without mapping it."""

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, "rb") as stream:
            try:
                version = np.lib.format.read_magic(stream)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(stream)
            except ValueError as error:
                raise BeamlensError(f"{path}: not a .npy file ({error})") from None
            self._offset = stream.tell()
        if fortran or len(shape) != 2:
            raise BeamlensError(f"{path}: expected a C-order 2-d matrix, got shape {shape}"
                                + (" in Fortran order" if fortran else ""))
        self.shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self._row_bytes = self.shape[1] * self.dtype.itemsize
        expected = self._offset + self.shape[0] * self._row_bytes
        if os.path.getsize(path) < expected:
            raise BeamlensError(f"{path}: truncated ({os.path.getsize(path)} bytes, the header promises {expected})")

    ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, start: int, stop: int) -> np.ndarray:
        count = max(0, stop - start)
        with open(self.path, "rb") as stream:
            stream.seek(self._offset + start * self._row_bytes)
            data = np.fromfile(stream, dtype=self.dtype, count=count * self.shape[1])
        return data.reshape(count, self.shape[1])

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        """Scattered rows in the order asked: one sequential pass when there are many."""
        out = np.empty((len(rows), self.shape[1]), self.dtype)
        if len(rows) <= 1024:
            for position, row in enumerate(rows):
                out[position] = self._read(int(row), int(row) + 1)[0]
            return out
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        for start in range(0, self.shape[0], SCAN_ROWS):
            lo, hi = np.searchsorted(ordered, [start, start + SCAN_ROWS])
            if hi > lo:
                out[order[lo:hi]] = self._read(start, min(start + SCAN_ROWS, self.shape[0]))[ordered[lo:hi] - start]
        return out

    def __getitem__(self, key: Union[slice, np.ndarray, list]) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step != 1:
                raise BeamlensError("NpyRows reads contiguous row ranges (step 1) or row indices")
            return self._read(start, stop)
        rows = np.asarray(key, np.int64)
        if rows.ndim != 1 or (len(rows) and (rows.min() < 0 or rows.max() >= self.shape[0])):
            raise BeamlensError(f"row indices out of range for {self.shape[0]} rows")
        return self._gather(rows)
