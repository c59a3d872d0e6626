"""The shard sink, its per-shard summaries and the count check built on them, and a lossy run that must not get a manifest."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beamlens.pipelines import embed_images
from tests import embed_helpers as h
from beamlens.transforms import inference
from beamlens.models.shards.records import EmbeddingRecord
from beamlens.transforms.read_images import ImageError
from beamlens.transforms import write_shards
from beamlens.transforms.write_shards import CountMismatchError, Listed, WriteEmbeddingsAndErrors, read_outputs, reconcile, shard_of


def _record(i: int) -> EmbeddingRecord:
    v = np.zeros(4, np.float32)
    v[i % 4] = 1
    return EmbeddingRecord(str(i), f"/x/{i}.jpg", v, (f"c{i}",), "fp", f"h{i}")


def _write(folder, outcomes, shards: int = 3):
    with TestPipeline(runner="FnApiRunner") as pipeline:
        counts = pipeline | beam.Create(outcomes) | WriteEmbeddingsAndErrors(str(folder), shards)
        expected = {}
        ids = {o.image_id for o in outcomes if isinstance(o, EmbeddingRecord)}
        errors = {o.image_id for o in outcomes if isinstance(o, ImageError)}
        for i in range(shards):
            expected[i] = (sum(shard_of(n, shards) == i for n in ids), sum(shard_of(n, shards) == i for n in errors))
        assert_that(counts, equal_to([(i, *expected[i]) for i in range(shards)]))


def test_sink_writes_every_shard_and_drops_duplicates(tmp_path):
    listed = [Listed(str(i)) for i in range(7)] + [Listed("e1"), Listed("3")]  # a listing may repeat an id
    outcomes = listed + [_record(i) for i in range(7)] + [_record(3), _record(5)] + [ImageError("e1", "/x/e1", "empty file", "decode")] * 2
    _write(tmp_path, outcomes)
    summary = read_outputs(str(tmp_path), 3, "fp")
    assert (summary.listed, summary.embedded, summary.failed) == (8, 7, 1)
    assert summary.dimension == 4 and summary.duplicates_dropped == 3 and summary.reasons == {"decode": 1}
    assert summary.shards == [f"embeddings-0000{i}-of-00003.tfrecord" for i in range(3)]
    assert sorted(p.name for p in tmp_path.glob("summary-*")) == [f"summary-0000{i}-of-00003.json" for i in range(3)]
    reconcile(summary)
    with pytest.raises(CountMismatchError, match="model fingerprint \\['fp'\\], expected 'other'"):
        reconcile(read_outputs(str(tmp_path), 3, "other"))
    with pytest.raises(CountMismatchError, match="expected 4 files"):
        read_outputs(str(tmp_path), 4, "fp")


def test_each_shard_accounts_for_lost_unknown_and_doubly_written_ids(tmp_path):
    outcomes = ([Listed(str(i)) for i in range(4)] + [Listed("lost")] + [_record(i) for i in range(5)]
                + [ImageError("2", "/x/2", "bad", "decode")])
    _write(tmp_path, outcomes)
    summary = read_outputs(str(tmp_path), 3, "fp")
    assert (summary.listed, summary.embedded, summary.failed) == (5, 5, 1)
    with pytest.raises(CountMismatchError) as raised:
        reconcile(summary)
    message = str(raised.value)
    assert message.startswith("counts do not reconcile: read 5 images, wrote 5 embeddings + 1 errors; ")
    for expected in ("missing ['lost']", "unknown ['4']", "both embedded and failed ['2']"):
        assert expected in message


def test_a_shard_file_changed_after_its_writer_finished_fails_the_run(tmp_path):
    _write(tmp_path, [Listed(str(i)) for i in range(6)] + [_record(i) for i in range(6)])
    reconcile(read_outputs(str(tmp_path), 3, "fp"))
    shard = sorted(tmp_path.glob("embeddings-*"))[1]
    shard.write_bytes(shard.read_bytes()[:-10])  # truncated by someone else
    with pytest.raises(CountMismatchError, match=f"{shard.name}: .* bytes on disk, its writer wrote"):
        reconcile(read_outputs(str(tmp_path), 3, "fp"))


def test_the_launcher_reads_summaries_not_records(tmp_path, monkeypatch):
    """O(shards) accounting: reconciling a finished output opens no shard record."""
    _write(tmp_path, [Listed(str(i)) for i in range(6)] + [_record(i) for i in range(6)])
    from beamlens.models.shards import reader

    def no_records(*_args, **_kwargs):
        raise AssertionError("the launcher read a record")

    monkeypatch.setattr(reader, "shard_records", no_records)
    monkeypatch.setattr(write_shards, "decode_record", no_records)
    reconcile(read_outputs(str(tmp_path), 3, "fp"))


def test_a_runner_that_loses_an_embedding_fails_loudly(tmp_path, monkeypatch):
    encoder = h.build_tiny_encoder(tmp_path / "enc.keras")
    captions, images, _ = h.write_coco_corpus(tmp_path / "c", h.real_photos()[:3])
    original = inference.ToEmbeddingRecord.process

    def lossy(self, element):
        for record in original(self, element):
            if record.image_id != "2":
                yield record

    monkeypatch.setattr(inference.ToEmbeddingRecord, "process", lossy)
    out = tmp_path / "out"
    with pytest.raises(CountMismatchError, match=r"read 3 images, wrote 2 embeddings \+ 0 errors; shard \d: missing \['2'\], unknown \[\]"):
        embed_images.run(["--runner", "FnApiRunner", "--captions", str(captions), "--images", str(images),
                          "--model", str(encoder), "--output", str(out)], save_main_session=False)
    assert not (out / "manifest.json").exists()
