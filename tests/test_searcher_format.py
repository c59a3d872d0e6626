"""The pure-Python side of the searcher files: LevelDB table, IndexConfig wire format, leaves math."""

from __future__ import annotations

import numpy as np
import pytest

from beamlens.models.errors import BeamlensError
from beamlens.models.searcher import read_searcher
from beamlens.models.searcher.sstable import Table, TableError, block_entries, encode_block, replace_value, snappy_decompress
from beamlens.models.searcher.wire import (
    decode_index_config,
    fraction_for_leaves,
    leaves_from_fraction,
    parse_fields,
    with_search_fraction,
)
from tests.conftest import TFLITE_SUPPORT_DATA

SENTENCES = [
    "It was a sunny day.",
    "The weather was excellent.",
    "The sun was shining on that day.",
    "The cat is chasing after the mouse.",
    "He was very happy with his newly bought car.",
]


def test_reads_model_maker_text_index():
    info = read_searcher(str(TFLITE_SUPPORT_DATA / "regex_index.ldb"))
    assert info.kind == "index"
    assert (info.embedding_type, info.embedding_dim, info.query_dimension) == ("FLOAT", 16, 16)
    assert info.distance_measure == "squared_l2"
    assert info.num_items == 5 and info.num_leaves == 0
    assert info.first_items == SENTENCES
    assert info.user_info == "userinfo"


def test_reads_model_maker_image_index_and_searcher():
    info = read_searcher(str(TFLITE_SUPPORT_DATA / "searcher_index.ldb"))
    assert info.embedding_dim == 1024
    assert info.first_items == ["bird", "burger", "car", "cat", "dog"]
    searcher = read_searcher(str(TFLITE_SUPPORT_DATA / "regex_searcher.tflite"), first_items=10)
    assert searcher.kind == "tflite" and searcher.index_name == "index.ldb"
    assert searcher.first_items == SENTENCES
    assert searcher.inputs[0]["type"] == "int32" and searcher.outputs[0]["shape"][-1] == 16
    assert set(searcher.packed_files) == {"vocab.txt", "index.ldb"}


def test_not_an_index_is_refused(tmp_path):
    bad = tmp_path / "bad.ldb"
    bad.write_bytes(b"x" * 100)
    with pytest.raises(BeamlensError, match="not a LevelDB table"):
        read_searcher(str(bad))
    with pytest.raises(BeamlensError, match="without an attached ScaNN index"):
        read_searcher(str(TFLITE_SUPPORT_DATA / "regex_one_embedding_with_metadata.tflite"))
    with pytest.raises(BeamlensError, match="file not found"):
        read_searcher(str(tmp_path / "missing.tflite"))


def test_snappy_literals_and_overlapping_copies():
    # varint length 10; literal "ab" (tag (2-1)<<2); copy-1 len 8 offset 2 (tag ((8-4)<<2)|1, offset byte 2).
    data = bytes([10, (2 - 1) << 2]) + b"ab" + bytes([((8 - 4) << 2) | 1, 2])
    assert snappy_decompress(data) == b"ababababab"
    with pytest.raises(TableError):
        snappy_decompress(bytes([5, 0]) + b"a")


@pytest.mark.parametrize("num_leaves", [1, 2, 7, 141, 350, 351, 1000, 3162])
def test_search_fraction_gives_exactly_the_leaves(num_leaves):
    for leaves in sorted({1, 2, 3, 4, 8, 16, 32, num_leaves // 2 or 1, num_leaves}):
        if leaves > num_leaves:
            continue
        assert leaves_from_fraction(num_leaves, fraction_for_leaves(num_leaves, leaves)) == leaves


def test_naive_fraction_would_search_one_leaf_too_many():
    # Why fraction_for_leaves exists: L/n rounded to float32 can land above L/n.
    overshoots = [(n, L) for n in range(2, 400) for L in range(1, n) if leaves_from_fraction(n, L / n) != L]
    assert overshoots, "float32 L/n never overshoots: the (L - 0.5)/n guard would be unnecessary"


def test_block_round_trip_and_value_replacement():
    entries = [(f"E_{i}".encode(), bytes([i]) * (i + 1)) for i in range(40)]
    entries.sort()
    assert block_entries(encode_block(entries)) == entries
    # replace_value on a real (Model Maker) table keeps every other entry.
    data = (TFLITE_SUPPORT_DATA / "searcher_index.ldb").read_bytes()
    table = Table(data)
    before = dict(table.items())
    config = before[b"INDEX_CONFIG"]
    new_data = replace_value(data, b"USER_INFO", b"changed")
    after = dict(Table(new_data).items())
    assert after.pop(b"USER_INFO") == b"changed"
    before.pop(b"USER_INFO")
    assert after == before
    assert decode_index_config(after[b"INDEX_CONFIG"]) == decode_index_config(config)


def test_with_search_fraction_edits_only_that_field():
    # A hand-made IndexConfig: partitioner with two 2-d leaves, search_fraction 1.0.
    from beamlens.models.searcher.wire import encode_fields  # noqa: PLC0415

    leaf = lambda xs: (1, 2, encode_fields([(1, 2, np.asarray(xs, "<f4").tobytes())]))  # noqa: E731
    partitioner = encode_fields([leaf([1, 0]), leaf([0, 1]), (2, 5, int(np.array([1.0], "<f4").view("<u4")[0])), (3, 0, 1)])
    scann = encode_fields([(1, 0, 1), (3, 2, partitioner)])
    config = encode_fields([(1, 2, scann), (2, 0, 1), (3, 0, 2), (4, 2, bytes([0, 5]))])
    decoded = decode_index_config(config)
    assert decoded["partitioner"]["num_leaves"] == 2 and decoded["partitioner"]["num_leaves_to_search"] == 2
    edited = decode_index_config(with_search_fraction(config, fraction_for_leaves(2, 1)))
    assert edited["partitioner"]["num_leaves_to_search"] == 1
    assert edited["global_partition_offsets"] == [0, 5] and edited["embedding_dim"] == 2
    assert parse_fields(config)[1:] == parse_fields(with_search_fraction(config, 0.25))[1:]
