"""Write the on-device ScaNN index file (one LevelDB table) streamed, in the Task Library's layout.

The layout (SEARCHER_FORMAT.md, what ``index_builder.create_serialized_index_file`` writes), keys
in bytewise order: ``E_<leaf>`` for every leaf (leaves sorted as strings: E_0, E_1, E_10, ...),
the codes or float vectors of its items in dataset order; ``INDEX_CONFIG``, an IndexConfig proto
(the ScannOnDeviceConfig, the embedding type and width, each leaf's first global id); ``M_<id>``
for every item renumbered leaf by leaf (ids sorted as strings), its metadata bytes;
``USER_INFO``.

Streamed: one leaf's codes, one metadata line and one 4 KB block at a time go through
:class:`models.searcher.table_writer.TableWriter`; the metadata file is read through its line
offsets, never as a list of 10M strings.
"""

from __future__ import annotations

import os
from typing import BinaryIO, Iterator

import numpy as np

from beamlens.models.errors import BeamlensError
from beamlens.models.searcher.table_writer import TableWriter
from beamlens.models.searcher.wire import encode_index_config

FLOAT, UINT8 = 1, 2  # IndexConfig.Type
_READ_CHUNK = 1 << 24


class MetadataLines:
    """The lines of a metadata file, by number, through their byte offsets (8 bytes a line)."""

    def __init__(self, path: str) -> None:
        self.path = path
        starts = [np.zeros(1, np.int64)]
        size = 0
        with open(path, "rb") as stream:
            while chunk := stream.read(_READ_CHUNK):
                starts.append(np.flatnonzero(np.frombuffer(chunk, np.uint8) == 10).astype(np.int64) + size + 1)
                size += len(chunk)
        ends = np.concatenate(starts)
        if ends[-1] != size:  # a last line without its newline
            ends = np.append(ends, size + 1)
        self._bounds = ends
        self.count = len(ends) - 1
        self.total_bytes = int(ends[-1] - ends[0] - self.count)  # without the newlines

    def line(self, fd: int, number: int) -> bytes:
        start, end = int(self._bounds[number]), int(self._bounds[number + 1]) - 1
        return os.pread(fd, end - start, start)


def lexicographic(count: int) -> Iterator[int]:
    """0 .. count-1 in the order of their decimal strings ("0", "1", "10", "100", ..., "2", ...)."""
    if count <= 0:
        return
    yield 0
    current = 1
    for _ in range(count - 1):
        yield current
        if current * 10 < count:
            current *= 10
        else:
            if current >= count - 1:
                current //= 10
            current += 1
            while current % 10 == 0:
                current //= 10


def group_by_leaf(assignment: np.ndarray, num_leaves: int) -> tuple[np.ndarray, np.ndarray]:
    """(item rows ordered leaf by leaf, dataset order kept inside a leaf; starts[l]: leaf l's
    first position, starts[-1] = N): the device's renumbering of items, its E_/M_ layout."""
    rows = np.argsort(assignment, kind="stable")
    return rows, np.concatenate([[0], np.cumsum(np.bincount(assignment, minlength=num_leaves))])


def write_index(stream: BinaryIO, config: bytes, database: np.ndarray, assignment: np.ndarray, num_leaves: int,
                metadata: MetadataLines, userinfo: str, compression: bool = True) -> int:
    """Write the table for ``database`` ([N, blocks] uint8 codes or [N, d] float32) to ``stream``."""
    n = database.shape[0]
    if metadata.count != n or len(assignment) != n:
        raise BeamlensError(f"{metadata.count} metadata lines and {len(assignment)} leaf assignments for {n} items")
    if n and (assignment.min() < 0 or assignment.max() >= num_leaves):
        raise BeamlensError(f"leaf assignment outside 0..{num_leaves - 1}")
    embedding_type = UINT8 if database.dtype == np.uint8 else FLOAT
    rows_by_leaf, starts = group_by_leaf(assignment, num_leaves)
    writer = TableWriter(stream, compression)
    for leaf in sorted(range(num_leaves), key=str):
        members = rows_by_leaf[starts[leaf] : starts[leaf + 1]]
        writer.add(b"E_%d" % leaf, np.ascontiguousarray(database[members]).tobytes())
    width = database.shape[1]
    writer.add(b"INDEX_CONFIG", encode_index_config(config, embedding_type, width, starts[:-1]))
    fd = os.open(metadata.path, os.O_RDONLY)
    try:
        for item in lexicographic(n):
            writer.add(b"M_%d" % item, metadata.line(fd, int(rows_by_leaf[item])))
    finally:
        os.close(fd)
    writer.add(b"USER_INFO", userinfo.encode("utf-8"))
    return writer.finish()
