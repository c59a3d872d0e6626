"""The shard sink, the read-back count check, and a lossy run that must not get a manifest."""

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
from beamlens.transforms.write_shards import CountMismatchError, WriteEmbeddingsAndErrors, read_outputs, reconcile, shard_of


def _record(i: int) -> EmbeddingRecord:
    v = np.zeros(4, np.float32)
    v[i % 4] = 1
    return EmbeddingRecord(str(i), f"/x/{i}.jpg", v, (f"c{i}",), "fp", f"h{i}")


def test_sink_writes_every_shard_and_drops_duplicates(tmp_path):
    outcomes = [_record(i) for i in range(7)] + [_record(3), _record(5)] + [ImageError("e1", "/x/e1", "empty file", "decode")] * 2
    with TestPipeline(runner="FnApiRunner") as pipeline:
        counts = pipeline | beam.Create(outcomes) | WriteEmbeddingsAndErrors(str(tmp_path), 3)
        expected = {}
        for i in range(3):
            expected[i] = (sum(shard_of(str(n), 3) == i for n in range(7)), int(shard_of("e1", 3) == i))
        assert_that(counts, equal_to([(i, *expected[i]) for i in range(3)]))
    summary = read_outputs(str(tmp_path), 3, "fp")
    assert summary.embedded_ids == {str(i) for i in range(7)} and summary.error_ids == {"e1"}
    assert summary.dimension == 4 and summary.duplicates_dropped == 0
    assert summary.shards == [f"embeddings-0000{i}-of-00003.tfrecord" for i in range(3)]
    reconcile(summary, {str(i) for i in range(7)} | {"e1"})
    with pytest.raises(CountMismatchError, match=r"read 9 images, wrote 7 embeddings \+ 1 errors; missing 1 \['lost'\]"):
        reconcile(summary, {str(i) for i in range(7)} | {"e1", "lost"})
    with pytest.raises(CountMismatchError, match="model fingerprint 'fp', expected 'other'"):
        read_outputs(str(tmp_path), 3, "other")
    with pytest.raises(CountMismatchError, match="expected 4 files"):
        read_outputs(str(tmp_path), 4, "fp")


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
    with pytest.raises(CountMismatchError, match=r"read 3 images, wrote 2 embeddings \+ 0 errors; missing 1 \['2'\]"):
        embed_images.run(["--runner", "FnApiRunner", "--captions", str(captions), "--images", str(images),
                          "--model", str(encoder), "--output", str(out)], save_main_session=False)
    assert not (out / "manifest.json").exists()
