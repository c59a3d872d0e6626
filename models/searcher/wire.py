"""Hand-rolled protobuf wire format for the on-device index protos (pure Python).

tflite-support 0.4.4 ships no ``_pb2`` for ``tflite.scann_ondevice.IndexConfig`` and its
``serialized_searcher_pb2`` only imports in a process prepared for tflite-support. Reading and
editing these few messages by hand keeps ``inspect`` and the leaves rewrite usable anywhere
(also in TensorFlow processes). Field numbers (SEARCHER_FORMAT.md section 2):

IndexConfig: 1 scann_config (ScannOnDeviceConfig), 2 embedding_type (0 UNSPECIFIED, 1 FLOAT,
2 UINT8), 3 embedding_dim, 4 global_partition_offsets (packed uint32).
ScannOnDeviceConfig: 1 query_distance, 2 indexer (IndexerProto: 1 asymmetric_hashing),
3 partitioner. PartitionerProto: 1 leaf (Leaf: 1 packed float dimension), 2 search_fraction
(float), 3 query_distance. AsymmetricHashingProto: 1 subspace (2: entry: 1 packed float
dimension), 2 query_distance, 3 lookup_type.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

DISTANCE_NAMES = {0: "squared_l2", 1: "dot_product", 2: "unspecified"}
EMBEDDING_TYPES = {0: "UNSPECIFIED", 1: "FLOAT", 2: "UINT8"}
LOOKUP_NAMES = {0: "float", 1: "int16", 2: "int8", 3: "int8_lut16"}

Field = tuple[int, int, Any]  # (number, wire type, value: int for varint/fixed, bytes for len)


def read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def parse_fields(data: bytes) -> list[Field]:
    """Split a serialized message into its top-level fields (order kept)."""
    fields: list[Field] = []
    pos, end = 0, len(data)
    while pos < end:
        key, pos = read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(data, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", data, pos)[0], pos + 8
        elif wire == 2:
            size, pos = read_varint(data, pos)
            value, pos = bytes(data[pos : pos + size]), pos + size
        elif wire == 5:
            value, pos = struct.unpack_from("<I", data, pos)[0], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire} for field {number}")
        fields.append((number, wire, value))
    if pos != end:
        raise ValueError("truncated message")
    return fields


def encode_fields(fields: list[Field]) -> bytes:
    out = bytearray()
    for number, wire, value in fields:
        out += encode_varint((number << 3) | wire)
        if wire == 0:
            out += encode_varint(value)
        elif wire == 1:
            out += struct.pack("<Q", value)
        elif wire == 2:
            out += encode_varint(len(value)) + value
        elif wire == 5:
            out += struct.pack("<I", value)
    return bytes(out)


def _floats(fields: list[Field], number: int) -> np.ndarray:
    chunks = []
    for n, wire, value in fields:
        if n != number:
            continue
        if wire == 2:
            chunks.append(np.frombuffer(value, "<f4"))
        elif wire == 5:
            chunks.append(np.array([value], "<u4").view("<f4"))
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def _packed_varints(fields: list[Field], number: int) -> list[int]:
    out: list[int] = []
    for n, wire, value in fields:
        if n != number:
            continue
        if wire == 0:
            out.append(value)
        elif wire == 2:
            pos = 0
            while pos < len(value):
                item, pos = read_varint(value, pos)
                out.append(item)
    return out


def _first(fields: list[Field], number: int, default: Any = None) -> Any:
    for n, _, value in fields:
        if n == number:
            return value
    return default


def _float_of(bits: int | None, default: float) -> float:
    return default if bits is None else float(np.array([bits], "<u4").view("<f4")[0])


def decode_index_config(data: bytes, with_arrays: bool = False) -> dict[str, Any]:
    """IndexConfig bytes -> plain dict (centroids/codebooks only with ``with_arrays``)."""
    top = parse_fields(data)
    scann = parse_fields(_first(top, 1, b""))
    result: dict[str, Any] = {
        "embedding_type": EMBEDDING_TYPES.get(_first(top, 2, 0), str(_first(top, 2))),
        "embedding_dim": _first(top, 3, 0),
        "global_partition_offsets": _packed_varints(top, 4),
        "query_distance": DISTANCE_NAMES.get(_first(scann, 1, 2), "unspecified"),
        "partitioner": None,
        "asymmetric_hashing": None,
    }
    part_bytes = _first(scann, 3)
    if part_bytes is not None:
        part = parse_fields(part_bytes)
        leaves = [parse_fields(v) for n, _, v in part if n == 1]
        num_leaves = len(leaves)
        fraction = _float_of(_first(part, 2), 1.0)
        info: dict[str, Any] = {
            "num_leaves": num_leaves,
            "search_fraction": fraction,
            "num_leaves_to_search": leaves_from_fraction(num_leaves, fraction),
            "query_distance": DISTANCE_NAMES.get(_first(part, 3, 0), "?"),
            "leaf_dimension": int(_floats(leaves[0], 1).size) if leaves else 0,
        }
        if with_arrays:
            info["centroids"] = np.stack([_floats(leaf, 1) for leaf in leaves]) if leaves else None
        result["partitioner"] = info
    indexer_bytes = _first(scann, 2)
    if indexer_bytes is not None:
        ah_bytes = _first(parse_fields(indexer_bytes), 1)
        if ah_bytes is not None:
            ah = parse_fields(ah_bytes)
            subspaces = [[_floats(parse_fields(e), 1) for n, _, e in parse_fields(s) if n == 1] for n, _, s in ah if n == 1]
            widths = [int(s[0].size) if s else 0 for s in subspaces]
            info = {
                "num_blocks": len(subspaces),
                "codes_per_block": len(subspaces[0]) if subspaces else 0,
                "dimensions_per_block": sorted(set(widths)),
                "query_distance": DISTANCE_NAMES.get(_first(ah, 2, 0), "?"),
                "lookup_type": LOOKUP_NAMES.get(_first(ah, 3, 0), "?"),
            }
            if with_arrays:
                info["codebooks"] = [np.stack(s) for s in subspaces]
            result["asymmetric_hashing"] = info
    return result


def leaves_from_fraction(num_leaves: int, fraction: float) -> int:
    """What the Task Library computes: min(ceilf(num_leaves * search_fraction), num_leaves)."""
    product = np.float32(num_leaves) * np.float32(fraction)
    return int(min(int(np.ceil(product)), num_leaves))


def fraction_for_leaves(num_leaves: int, leaves_to_search: int) -> float:
    """A float32 search_fraction that the Task Library turns back into exactly ``leaves_to_search``.

    L / n itself can land a hair above L after float32 rounding (ceil then searches L + 1), so
    the fraction aims at the middle of the interval: (L - 0.5) / n, and 1.0 for all leaves.
    """
    if leaves_to_search >= num_leaves:
        return 1.0
    fraction = float(np.float32((leaves_to_search - 0.5) / num_leaves))
    assert leaves_from_fraction(num_leaves, fraction) == leaves_to_search
    return fraction


def with_search_fraction(index_config: bytes, fraction: float) -> bytes:
    """Return IndexConfig bytes with partitioner.search_fraction replaced (all else byte-identical)."""
    top = parse_fields(index_config)
    new_top: list[Field] = []
    found = False
    for number, wire, value in top:
        if number == 1 and wire == 2:
            scann = parse_fields(value)
            new_scann: list[Field] = []
            for n2, w2, v2 in scann:
                if n2 == 3 and w2 == 2:
                    found = True
                    part = [f for f in parse_fields(v2) if f[0] != 2]
                    bits = int(np.array([fraction], "<f4").view("<u4")[0])
                    part.append((2, 5, bits))
                    v2 = encode_fields(part)
                new_scann.append((n2, w2, v2))
            value = encode_fields(new_scann)
        new_top.append((number, wire, value))
    if not found:
        raise ValueError("the index has no partitioner: there is no leaves-to-search setting to change")
    return encode_fields(new_top)
