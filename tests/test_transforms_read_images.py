"""Listing (COCO / glob), numbering, exact batching and byte reading, with TestPipeline + assert_that."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beamlens.models.errors import BeamlensError
from tests import embed_helpers as h
from beamlens.transforms.listing import BatchImageRefs, ListImages, ListPosition, iter_image_refs
from beamlens.transforms.read_images import ImageReadError, ImageRef, ImageSource, read_image_bytes



def test_coco_listing_numbers_images_with_captions(tmp_path):
    photos = h.real_photos()[:3]
    captions, images, _ = h.write_coco_corpus(tmp_path, photos)
    source = ImageSource(captions_file=str(captions), image_root=str(images))
    expected = [
        (ListPosition(0, n - 1), ImageRef(str(n), f"{images}/{n:012d}{p.suffix}", (f"photo number {n} ({p.stem})",)))
        for n, p in enumerate(photos, 1)
    ]
    with TestPipeline(runner="FnApiRunner") as pipeline:
        assert_that(pipeline | ListImages(source), equal_to(expected))


def test_coco_image_root_defaults_to_the_split_folder(tmp_path):
    captions, images, _ = h.write_coco_corpus(tmp_path, h.real_photos()[:1])
    refs = list(iter_image_refs(ImageSource(captions_file=str(captions))))
    assert refs[0].uri == f"{images}/000000000001.jpg"


def test_glob_listing_is_sorted_paths(tmp_path):
    for name in ("b.jpg", "a.jpg", "c.png"):
        (tmp_path / name).write_bytes(b"x")
    refs = list(iter_image_refs(ImageSource(input_glob=str(tmp_path / "*.jpg"))))
    assert refs == [ImageRef(str(tmp_path / "a.jpg"), str(tmp_path / "a.jpg")), ImageRef(str(tmp_path / "b.jpg"), str(tmp_path / "b.jpg"))]


def test_source_needs_exactly_one_input():
    with pytest.raises(BeamlensError, match="either --captions"):
        ImageSource()
    with pytest.raises(BeamlensError, match="either --captions"):
        ImageSource(captions_file="a.json", input_glob="*.jpg")


def test_batches_are_exact_and_ordered():
    indexed = [(ListPosition(0, i), ImageRef(str(i), f"/x/{i}.jpg")) for i in range(10)]
    with TestPipeline(runner="FnApiRunner") as pipeline:
        batches = pipeline | beam.Create(indexed) | BatchImageRefs(4) | beam.Map(lambda b: [r.image_id for r in b])
        assert_that(batches, equal_to([["0", "1", "2", "3"], ["4", "5", "6", "7"], ["8", "9"]]))


def test_read_image_bytes_and_missing_file(tmp_path):
    photo = h.real_photos()[0]
    assert read_image_bytes(str(photo)) == photo.read_bytes()
    with pytest.raises(ImageReadError) as caught:
        read_image_bytes(str(tmp_path / "nope.jpg"))
    assert caught.value.reason == "file not found"
