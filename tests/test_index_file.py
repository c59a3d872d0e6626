"""The streamed index file writer: byte-identical to tflite-support's own index builder (uncompressed),
read by the Task Library (Snappy), and its two helpers (metadata lines, lexicographic ids)."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest

from beamlens.models import compat
from beamlens.models.searcher.index_file import MetadataLines, lexicographic, write_index
from beamlens.models.searcher.sstable import Table
from beamlens.models.searcher.table_writer import TableWriter
from beamlens.models.searcher.wire import encode_ondevice_config


def test_lexicographic_is_the_order_of_the_decimal_strings():
    for count in (0, 1, 9, 10, 11, 100, 101, 1234):
        assert list(lexicographic(count)) == sorted(range(count), key=str)


def test_metadata_lines_by_number(tmp_path):
    (tmp_path / "a").write_bytes(b'{"id":"1"}\n\n{"id":"\xc3\xa9"}\n')
    (tmp_path / "b").write_bytes(b"x\ny")  # no final newline
    (tmp_path / "c").write_bytes(b"")
    a, b, c = (MetadataLines(str(tmp_path / n)) for n in "abc")
    fd = os.open(tmp_path / "a", os.O_RDONLY)
    try:
        assert (a.count, a.total_bytes) == (3, 10 + 0 + 11)
        assert [a.line(fd, i) for i in range(3)] == [b'{"id":"1"}', b"", b'{"id":"\xc3\xa9"}']
    finally:
        os.close(fd)
    assert (b.count, b.total_bytes, c.count, c.total_bytes) == (2, 2, 0, 0)


def test_keys_must_increase():
    writer = TableWriter(io.BytesIO())
    writer.add(b"E_1", b"")
    with pytest.raises(ValueError, match="table keys must increase"):
        writer.add(b"E_0", b"")


def _both(seed: int, n: int, leaves: int, ah: bool, compression: bool, folder: str) -> tuple[bytes, bytes]:
    """(tflite-support's index_builder table, ours) for the same random index."""
    from tensorflow_lite_support.scann_ondevice.cc.python import index_builder  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    d = 16
    centroids = rng.normal(size=(leaves, d)).astype(np.float32)
    assignment = rng.integers(0, leaves, n)
    assignment[assignment == min(2, leaves - 1)] = 0  # an empty leaf (when there are 3+)
    metadata = [json.dumps({"id": str(i), "uri": f"file:///{i}.jpg", "captions": [f"caption {i}"]}) for i in range(n)]
    with open(f"{folder}/m.jsonl", "w", encoding="utf-8") as stream:
        stream.write("\n".join(metadata) + "\n")
    if ah:
        books = [rng.normal(size=(256, 2)).astype(np.float32) for _ in range(d // 2)]
        database = rng.integers(0, 256, (n, d // 2)).astype(np.uint8)
        config = encode_ondevice_config("dot_product", centroids, 0.25, books, "int16")
        kwargs = {"hashed_database": database.ravel()}
    else:
        database = rng.normal(size=(n, d)).astype(np.float32)
        config = encode_ondevice_config("dot_product", centroids, 0.25, None, "int8")
        kwargs = {"float_database": database.ravel()}
    reference = index_builder.create_serialized_index_file(
        database.shape[1], config, "user info", assignment.astype(np.uint32), [m.encode() for m in metadata],
        compression=compression, **kwargs)
    ours = io.BytesIO()
    write_index(ours, config, database, assignment, leaves, MetadataLines(f"{folder}/m.jsonl"), "user info", compression)
    return reference, ours.getvalue()


@pytest.mark.parametrize("n, leaves, ah", [(3000, 23, True), (1500, 1, False), (2000, 12, False), (700, 5, True)])
def test_uncompressed_tables_are_byte_identical_to_index_builder(tmp_path, n, leaves, ah):
    reference, ours = compat.call_tflite(_both, n, n, leaves, ah, False, str(tmp_path))
    assert len(ours) == len(reference) and ours == reference


def test_snappy_tables_hold_the_same_entries(tmp_path):
    reference, ours = compat.call_tflite(_both, 7, 5000, 37, True, True, str(tmp_path))
    assert len(ours) < 0.9 * 5000 * 60  # compressed: the metadata alone is ~60 bytes an item
    ref, mine = Table(reference), Table(ours)
    keys = [b"INDEX_CONFIG", b"USER_INFO", b"E_0", b"E_36", b"E_2", b"M_0", b"M_4999", b"M_123"]
    assert [mine.get(k) for k in keys] == [ref.get(k) for k in keys]
