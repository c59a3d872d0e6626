"""DecodeBatch: good images become one batch of shared-preprocessing pixels, bad ones dead letters."""

from __future__ import annotations

import hashlib

import apache_beam as beam
import numpy as np
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beamlens.models.encoders.preprocessing import preprocess_image_bytes
from tests import embed_helpers as h
from beamlens.transforms.decode import DecodeBatch, ImageBatch, only
from beamlens.transforms.read_images import ImageError, ImageRef


def test_decode_batch_splits_good_and_bad(tmp_path):
    good = h.real_photos()[:2]
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    data = good[0].read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    refs = [ImageRef("g0", str(good[0]), ("a cap",)), ImageRef("e", str(tmp_path / "empty.jpg")),
            ImageRef("g1", str(good[1])), ImageRef("t", str(tmp_path / "text.jpg")),
            ImageRef("c", str(tmp_path / "cut.jpg")), ImageRef("m", str(tmp_path / "missing.jpg"))]

    def summarize(batch: ImageBatch):
        for meta, pixels in batch.items:
            expected = preprocess_image_bytes(open(meta.uri, "rb").read(), 16)
            yield (meta.image_id, meta.captions, pixels.shape, pixels.dtype.name, bool(np.array_equal(pixels, expected)),
                   meta.content_hash == hashlib.sha256(open(meta.uri, "rb").read()).hexdigest())

    with TestPipeline(runner="FnApiRunner") as pipeline:
        outcomes = pipeline | beam.Create([refs]) | beam.ParDo(DecodeBatch(16))
        batches = outcomes | "B" >> beam.FlatMap(only(ImageBatch)) | beam.FlatMap(summarize)
        errors = outcomes | "E" >> beam.FlatMap(only(ImageError)) | beam.Map(lambda e: (e.image_id, e.stage, e.reason.split(":")[0]))
        assert_that(batches, equal_to([("g0", ("a cap",), (16, 16, 3), "float32", True, True),
                                       ("g1", (), (16, 16, 3), "float32", True, True)]), label="batches")
        assert_that(errors, equal_to([("e", "decode", "empty file (0 bytes)"), ("t", "decode", "not an image (unrecognised format)"),
                                      ("c", "decode", "corrupt or truncated image"), ("m", "read", "file not found")]), label="errors")


def test_all_bad_batch_emits_no_empty_batch(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with TestPipeline(runner="FnApiRunner") as pipeline:
        outcomes = pipeline | beam.Create([[ImageRef("e", str(tmp_path / "empty.jpg"))]]) | beam.ParDo(DecodeBatch(8))
        assert_that(outcomes | beam.Map(lambda o: type(o).__name__), equal_to(["ImageError"]))
