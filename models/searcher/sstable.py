"""A small pure-Python LevelDB table (SSTable) reader, and a cheap in-place value rewrite.

The on-device ScaNN index is one LevelDB *table* file (what ``leveldb::TableBuilder`` writes):
data blocks of prefix-compressed entries, each followed by a 5-byte trailer (compression type,
masked CRC32C), an index block whose values are block handles, and a 48-byte footer. Model
Maker's files use Snappy block compression, so a tiny Snappy decompressor is included rather than
a new dependency. Reading is lazy: only the blocks that hold the keys asked for are decoded, so
inspecting a 100 MB index costs milliseconds.

:func:`replace_value` rebuilds only the block that holds one key (stored uncompressed), shifts the
later block handles and rewrites the index block and footer: how ``rewrite_leaves_to_search``
changes the ``INDEX_CONFIG`` of a big index without touching its vectors.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass
from typing import Iterator

from beamlens.models.searcher.wire import encode_varint, read_varint
from beamlens.models.io.tfrecord import masked_crc32c  # LevelDB blocks use the same checksum as TFRecord

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
TRAILER_SIZE = 5
NO_COMPRESSION = 0
SNAPPY_COMPRESSION = 1


class TableError(ValueError):
    """The bytes are not a LevelDB table this reader understands."""


def snappy_decompress(data: bytes) -> bytes:
    """Decompress one raw Snappy block (the format LevelDB uses for its blocks)."""
    length, pos = read_varint(data, 0)
    out = bytearray()
    end = len(data)
    while pos < end:
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal
            size = tag >> 2
            if size >= 60:
                extra = size - 59
                size = int.from_bytes(data[pos : pos + extra], "little")
                pos += extra
            size += 1
            out += data[pos : pos + size]
            pos += size
            continue
        if kind == 1:
            size = ((tag >> 2) & 7) + 4
            offset = ((tag >> 5) << 8) | data[pos]
            pos += 1
        elif kind == 2:
            size = (tag >> 2) + 1
            offset = int.from_bytes(data[pos : pos + 2], "little")
            pos += 2
        else:
            size = (tag >> 2) + 1
            offset = int.from_bytes(data[pos : pos + 4], "little")
            pos += 4
        if offset == 0 or offset > len(out):
            raise TableError("corrupt Snappy data (bad copy offset)")
        start = len(out) - offset
        if offset >= size:
            out += out[start : start + size]
        else:  # overlapping copy: repeat the pattern
            while size > 0:
                chunk = out[start : start + min(size, offset)]
                out += chunk
                size -= len(chunk)
    if len(out) != length:
        raise TableError(f"corrupt Snappy data: {len(out)} bytes, expected {length}")
    return bytes(out)


@dataclass(frozen=True)
class BlockHandle:
    offset: int
    size: int

    def encode(self) -> bytes:
        return encode_varint(self.offset) + encode_varint(self.size)


def _decode_handle(data: bytes, pos: int = 0) -> tuple[BlockHandle, int]:
    offset, pos = read_varint(data, pos)
    size, pos = read_varint(data, pos)
    return BlockHandle(offset, size), pos


def block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """All (key, value) pairs of a decoded block (keys rebuilt from their shared prefixes)."""
    if len(block) < 4:
        raise TableError("block too short")
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 - 4 * num_restarts
    entries: list[tuple[bytes, bytes]] = []
    pos, key = 0, b""
    while pos < limit:
        shared, pos = read_varint(block, pos)
        non_shared, pos = read_varint(block, pos)
        value_len, pos = read_varint(block, pos)
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        entries.append((key, block[pos : pos + value_len]))
        pos += value_len
    return entries


class BlockBuilder:
    """One block as leveldb's BlockBuilder writes it: prefix-compressed entries, a restart point
    every ``restart_interval`` entries, then the restart offsets and their count."""

    def __init__(self, restart_interval: int = 16) -> None:
        self.restart_interval = restart_interval
        self.reset()

    def reset(self) -> None:
        self.buffer = bytearray()
        self.restarts = [0]
        self.counter = 0
        self.last_key = b""

    @property
    def empty(self) -> bool:
        return not self.buffer

    def size_estimate(self) -> int:
        return len(self.buffer) + 4 * len(self.restarts) + 4

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.counter < self.restart_interval:
            limit = min(len(self.last_key), len(key))
            while shared < limit and self.last_key[shared] == key[shared]:
                shared += 1
        else:
            self.restarts.append(len(self.buffer))
            self.counter = 0
        self.buffer += encode_varint(shared) + encode_varint(len(key) - shared) + encode_varint(len(value))
        self.buffer += key[shared:]
        self.buffer += value
        self.last_key = key
        self.counter += 1

    def finish(self) -> bytes:
        tail = b"".join(struct.pack("<I", r) for r in self.restarts) + struct.pack("<I", len(self.restarts))
        return bytes(self.buffer) + tail


def encode_block(entries: list[tuple[bytes, bytes]], restart_interval: int = 16) -> bytes:
    block = BlockBuilder(restart_interval)
    for key, value in entries:
        block.add(key, value)
    return block.finish()


def block_trailer(contents: bytes, kind: int) -> bytes:
    """The 5 bytes after a block: its compression type and the masked CRC32C of contents + type."""
    return bytes([kind]) + struct.pack("<I", masked_crc32c(contents + bytes([kind])))


def footer(metaindex: "BlockHandle", index: "BlockHandle") -> bytes:
    """The 48-byte table footer: the two handles padded to 40 bytes, then the magic number."""
    handles = metaindex.encode() + index.encode()
    return handles + b"\x00" * (FOOTER_SIZE - 8 - len(handles)) + struct.pack("<Q", TABLE_MAGIC)


class Table:
    """Read-only view of a LevelDB table held in memory (``bytes``)."""

    def __init__(self, data: bytes, name: str = "index") -> None:
        self.data = data
        self.name = name
        if len(data) < FOOTER_SIZE:
            raise TableError(f"{name} is too short to be a LevelDB table ({len(data)} bytes)")
        footer = data[-FOOTER_SIZE:]
        (magic,) = struct.unpack_from("<Q", footer, 40)
        if magic != TABLE_MAGIC:
            raise TableError(f"{name} is not a LevelDB table (bad magic number)")
        self.metaindex_handle, pos = _decode_handle(footer, 0)
        self.index_handle, _ = _decode_handle(footer, pos)
        self.index = [(k, _decode_handle(v)[0]) for k, v in block_entries(self.read_block(self.index_handle))]
        self._separators = [k for k, _ in self.index]
        self.compression_types = None

    def read_block(self, handle: BlockHandle) -> bytes:
        end = handle.offset + handle.size
        if end + TRAILER_SIZE > len(self.data):
            raise TableError(f"{self.name}: block handle past the end of the file")
        raw = self.data[handle.offset : end]
        kind = self.data[end]
        if kind == NO_COMPRESSION:
            return bytes(raw)
        if kind == SNAPPY_COMPRESSION:
            return snappy_decompress(bytes(raw))
        raise TableError(f"{self.name}: unknown block compression type {kind}")

    def block_type(self, handle: BlockHandle) -> int:
        return self.data[handle.offset + handle.size]

    def _block_index_for(self, key: bytes) -> int:
        return bisect.bisect_left(self._separators, key)

    def get(self, key: bytes) -> bytes | None:
        i = self._block_index_for(key)
        if i >= len(self.index):
            return None
        for k, v in block_entries(self.read_block(self.index[i][1])):
            if k == key:
                return v
        return None

    def items(self, start: bytes = b"", stop: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) for start <= key < stop, in key order, decoding blocks as needed."""
        for i in range(self._block_index_for(start), len(self.index)):
            for k, v in block_entries(self.read_block(self.index[i][1])):
                if k < start:
                    continue
                if stop is not None and k >= stop:
                    return
                yield k, v

    def compressed(self) -> bool:
        return any(self.block_type(h) == SNAPPY_COMPRESSION for _, h in self.index)


def replace_value(data: bytes, key: bytes, value: bytes) -> bytes:
    """A copy of the table ``data`` with the value of existing ``key`` replaced.

    Only the block holding ``key`` is re-encoded (uncompressed, fresh CRC); every other data block
    is copied byte for byte with its handle shifted, then the index block and footer are rebuilt.
    """
    table = Table(data)
    target = table._block_index_for(key)
    if target >= len(table.index):
        raise KeyError(key)
    target_handle = table.index[target][1]
    entries = block_entries(table.read_block(target_handle))
    if key not in {k for k, _ in entries}:
        raise KeyError(key)
    entries = [(k, value if k == key else v) for k, v in entries]
    new_block = encode_block(entries)
    new_block_full = new_block + block_trailer(new_block, NO_COMPRESSION)
    old_full_size = target_handle.size + TRAILER_SIZE
    delta = len(new_block_full) - old_full_size

    out = bytearray(data[: target_handle.offset])
    out += new_block_full
    # Everything after the changed block up to the index/metaindex blocks keeps its bytes.
    tail_start = target_handle.offset + old_full_size
    meta_start = min(table.metaindex_handle.offset, table.index_handle.offset)
    out += data[tail_start:meta_start]

    def shift(handle: BlockHandle) -> BlockHandle:
        if handle.offset > target_handle.offset:
            return BlockHandle(handle.offset + delta, handle.size)
        if handle.offset == target_handle.offset:
            return BlockHandle(handle.offset, len(new_block))
        return handle

    # Metaindex block (LevelDB writes it before the index block): copy as is.
    meta_handle = BlockHandle(len(out), table.metaindex_handle.size)
    m = table.metaindex_handle
    out += data[m.offset : m.offset + m.size + TRAILER_SIZE]
    index_block = encode_block([(k, shift(h).encode()) for k, h in table.index], restart_interval=1)
    index_handle = BlockHandle(len(out), len(index_block))
    out += index_block + block_trailer(index_block, NO_COMPRESSION)
    out += footer(meta_handle, index_handle)
    return bytes(out)
