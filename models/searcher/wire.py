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


def encode_index_config(scann_config: bytes, embedding_type: int, embedding_dim: int, offsets: Any) -> bytes:
    """IndexConfig bytes (what :func:`decode_index_config` reads): the ScannOnDeviceConfig, the
    embedding type (1 FLOAT, 2 UINT8) and width, and each partition's first global id, packed."""
    packed = b"".join(encode_varint(int(v)) for v in offsets)
    return encode_fields([(1, 2, scann_config), (2, 0, embedding_type), (3, 0, embedding_dim), (4, 2, packed)])


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


# ---- writing ScannOnDeviceConfig, reading scann's serialized artifacts (fast, no pb2 needed) ----
DISTANCE_NUMBERS = {"squared_l2": 0, "dot_product": 1}
LOOKUP_NUMBERS = {"float": 0, "int16": 1, "int8": 2}


def _packed_floats(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values, "<f4").tobytes()


def encode_ondevice_config(distance: str, centroids: np.ndarray, search_fraction: float,
                           codebooks: list[np.ndarray] | None = None, lookup_type: str = "int8") -> bytes:
    """Serialized tflite.scann_ondevice.core.ScannOnDeviceConfig (what index_builder takes)."""
    measure = DISTANCE_NUMBERS[distance]
    leaves = [(1, 2, encode_fields([(1, 2, _packed_floats(c))])) for c in np.asarray(centroids, np.float32)]
    fraction_bits = int(np.array([search_fraction], "<f4").view("<u4")[0])
    partitioner = encode_fields(leaves + [(2, 5, fraction_bits), (3, 0, measure)])
    fields: list[Field] = [(1, 0, measure)]
    if codebooks is not None:
        subspaces = []
        for book in codebooks:
            entries = [(1, 2, encode_fields([(1, 2, _packed_floats(row))])) for row in np.asarray(book, np.float32)]
            subspaces.append((1, 2, encode_fields(entries)))
        ah = encode_fields(subspaces + [(2, 0, measure), (3, 0, LOOKUP_NUMBERS[lookup_type])])
        fields.append((2, 2, encode_fields([(1, 2, ah)])))
    fields.append((3, 2, partitioner))
    return encode_fields(fields)


def _center_values(center: bytes) -> np.ndarray:
    """scann SerializedKMeansTree.Center: 1 dimension (double), 2 float_dimension (float)."""
    fields = parse_fields(center)
    doubles = [np.frombuffer(v, "<f8") if w == 2 else np.array([v], "<u8").view("<f8") for n, w, v in fields if n == 1]
    if doubles:
        return np.concatenate(doubles).astype(np.float32)
    return _floats(fields, 2)


def read_scann_partitioner_centroids(data: bytes) -> np.ndarray:
    """Leaf centroids of scann's serialized_partitioner.pb (kmeans.kmeans_tree.root.centers), in leaf order."""
    kmeans = _first(parse_fields(data), 2)
    tree = _first(parse_fields(kmeans), 1)
    root = parse_fields(_first(parse_fields(tree), 1))
    centers = [_center_values(v) for n, _, v in root if n == 1]
    leaf_ids = [_first(parse_fields(v), 5, 0) for n, _, v in root if n == 3]
    if leaf_ids and leaf_ids != list(range(len(centers))):
        raise ValueError("unexpected kmeans tree: leaf ids are not 0..k-1 in order")
    return np.stack(centers)


def read_scann_codebooks(data: bytes) -> list[np.ndarray]:
    """Per-block [codes x width] centers of scann's ah_codebook.pb (feature_value_float / _double)."""
    books = []
    for n, _, subspace in parse_fields(data):
        if n != 1:
            continue
        rows = []
        for m, _, center in parse_fields(subspace):
            if m != 1:
                continue
            fields = parse_fields(center)
            values = _floats(fields, 4)
            if values.size == 0:
                doubles = [np.frombuffer(v, "<f8") for k, w, v in fields if k == 5 and w == 2]
                values = np.concatenate(doubles).astype(np.float32) if doubles else values
            rows.append(values)
        books.append(np.stack(rows))
    return books
