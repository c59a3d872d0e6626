"""A streaming LevelDB table (SSTable) writer: the on-device index written key by key to a file.

Why: tflite-support's ``index_builder.create_serialized_index_file`` takes every code, every
metadata string and returns the whole table as one ``bytes``, so a 10M-item build held the
metadata three times over (a Python list, its C++ copy, the table) and peaked at 5.7 GB. This
writer produces the same table from entries added in key order, holding one 4 KB block and the
block index, so memory is the codes and the per-item offsets, not the content.

It is leveldb's ``TableBuilder`` with the options the index builder uses (block size 4096,
restart interval 16, the index block restarting at every entry, no filter): uncompressed tables
come out byte-identical to ``index_builder``'s (tested), and Snappy blocks are kept only when
they save 1/8, as leveldb does (Snappy from pyarrow, already installed with Apache Beam; any valid
Snappy stream decodes the same, so compressed tables are checked by the Task Library reading them).
"""

from __future__ import annotations

from typing import BinaryIO

from beamlens.models.searcher.sstable import (
    NO_COMPRESSION,
    SNAPPY_COMPRESSION,
    BlockBuilder,
    BlockHandle,
    block_trailer,
    footer,
)

BLOCK_SIZE = 4096
RESTART_INTERVAL = 16


def _shortest_separator(start: bytes, limit: bytes) -> bytes:
    """leveldb's BytewiseComparator::FindShortestSeparator."""
    common = 0
    while common < min(len(start), len(limit)) and start[common] == limit[common]:
        common += 1
    if common < min(len(start), len(limit)):
        byte = start[common]
        if byte < 0xFF and byte + 1 < limit[common]:
            return start[:common] + bytes([byte + 1])
    return start


def _short_successor(key: bytes) -> bytes:
    """leveldb's BytewiseComparator::FindShortSuccessor."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


def _snappy(data: bytes) -> bytes:
    import pyarrow  # noqa: PLC0415

    return pyarrow.compress(data, codec="snappy", asbytes=True)


class TableWriter:
    """Add (key, value) pairs in strictly increasing key order, then :meth:`finish`."""

    def __init__(self, stream: BinaryIO, compression: bool = True) -> None:
        self.stream = stream
        self.compression = compression
        self.offset = 0
        self.data = BlockBuilder(RESTART_INTERVAL)
        self.index = BlockBuilder(1)
        self.last_key = b""
        self.pending_handle: BlockHandle | None = None
        self.entries = 0

    def add(self, key: bytes, value: bytes) -> None:
        if self.entries and key <= self.last_key:
            raise ValueError(f"table keys must increase: {key!r} after {self.last_key!r}")
        if self.pending_handle is not None:
            self.index.add(_shortest_separator(self.last_key, key), self.pending_handle.encode())
            self.pending_handle = None
        self.last_key = key
        self.entries += 1
        self.data.add(key, value)
        if self.data.size_estimate() >= BLOCK_SIZE:
            self._flush()

    def _flush(self) -> None:
        if self.data.empty:
            return
        self.pending_handle = self._write_block(self.data)

    def _write_block(self, block: BlockBuilder) -> BlockHandle:
        raw = block.finish()
        block.reset()
        contents, kind = raw, NO_COMPRESSION
        if self.compression:
            packed = _snappy(raw)
            if len(packed) < len(raw) - len(raw) // 8:
                contents, kind = packed, SNAPPY_COMPRESSION
        handle = BlockHandle(self.offset, len(contents))
        trailer = block_trailer(contents, kind)
        self.stream.write(contents)
        self.stream.write(trailer)
        self.offset += len(contents) + len(trailer)
        return handle

    def finish(self) -> int:
        """Write the last block, the (empty) meta-index, the index and the footer; return the size."""
        self._flush()
        metaindex = self._write_block(BlockBuilder(RESTART_INTERVAL))
        if self.pending_handle is not None:
            self.index.add(_short_successor(self.last_key), self.pending_handle.encode())
            self.pending_handle = None
        index = self._write_block(self.index)
        tail = footer(metaindex, index)
        self.stream.write(tail)
        self.offset += len(tail)
        return self.offset
