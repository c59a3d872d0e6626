"""beamlens.models.io.tfrecord reads exactly what TensorFlow's TFRecordWriter writes, and refuses damaged files."""

from __future__ import annotations

import pytest


def _write(path, records):
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


def test_reads_what_tensorflow_wrote(tmp_path):
    from beamlens.models.io.tfrecord import read_records

    records = [b"", b"x", bytes(range(256)) * 40, "ünïcode".encode()]
    _write(tmp_path / "a.tfrecord", records)
    assert list(read_records(str(tmp_path / "a.tfrecord"))) == records
    _write(tmp_path / "empty.tfrecord", [])
    assert list(read_records(str(tmp_path / "empty.tfrecord"))) == []


def test_masked_crc_matches_tensorflow_framing(tmp_path):
    import struct

    from beamlens.models.io.tfrecord import masked_crc32c

    _write(tmp_path / "one.tfrecord", [b"hello"])
    data = (tmp_path / "one.tfrecord").read_bytes()
    assert struct.unpack("<I", data[8:12])[0] == masked_crc32c(data[:8])
    assert struct.unpack("<I", data[-4:])[0] == masked_crc32c(b"hello")


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[:-3], "truncated in record 1"),
    (lambda data: data[:5], "truncated after 0 records"),
    (lambda data: data[:20] + bytes([data[20] ^ 0xFF]) + data[21:], "record 0: data checksum mismatch"),
    (lambda data: b"this is not a tfrecord file at all", "record 0: length checksum mismatch"),
])
def test_damaged_files_fail_with_the_file_and_record_named(tmp_path, damage, message):
    from beamlens.models.io.tfrecord import CorruptRecordError, read_records

    _write(tmp_path / "good.tfrecord", [b"first record bytes", b"second record"])
    bad = tmp_path / "bad.tfrecord"
    bad.write_bytes(damage((tmp_path / "good.tfrecord").read_bytes()))
    with pytest.raises(CorruptRecordError, match=message) as caught:
        list(read_records(str(bad)))
    assert str(bad) in str(caught.value)


def test_missing_file_is_a_clear_error(tmp_path):
    from beamlens.models.errors import BeamlensError
    from beamlens.models.io.tfrecord import read_records

    with pytest.raises(BeamlensError, match="cannot read .*nothing.tfrecord"):
        list(read_records(str(tmp_path / "nothing.tfrecord")))


def test_records_written_here_are_read_by_tf_data(tmp_path):
    """The shard writer's framing (models/io/tfrecord.write_record) is what TensorFlow reads."""
    import tensorflow as tf  # noqa: PLC0415

    from beamlens.models.io.files import atomic_stream  # noqa: PLC0415
    from beamlens.models.io.tfrecord import read_records, write_record  # noqa: PLC0415

    records = [b"", b"x", bytes(range(256)) * 40]
    path = str(tmp_path / "ours.tfrecord")
    with atomic_stream(path) as stream:
        for record in records:
            write_record(stream, record)
    assert [r.numpy() for r in tf.data.TFRecordDataset(path)] == records
    assert list(read_records(path)) == records
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours.tfrecord"]  # no temp file left
