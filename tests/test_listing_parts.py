"""A listing split into parts that workers list side by side (transforms/listing.py).

The parts of a local glob must list exactly what the whole glob matches (none twice, none lost),
in a stable order; each worker sorts only its part; batches never mix parts; what cannot be split
(a flat folder, a remote glob, a COCO file, ``max_parts=1``) is one part, as before.
"""

from __future__ import annotations

import os
from collections import Counter

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beamlens.models.errors import BeamlensError
from beamlens.transforms import listing
from beamlens.transforms.listing import (
    BatchImageRefs,
    ListImages,
    ListingPart,
    iter_image_refs,
    iter_part_refs,
    match_entries,
    plan_parts,
)
from beamlens.transforms.read_images import ImageSource
from tests import embed_helpers as h

TREE = ["a.jpg", "b.png", "s0/x.jpg", "s0/deep/y.jpg", "s1/z.jpg", "s1/deep2/w.jpg", "s1/deep2/v.jpg", "s1/deep2/notes.txt"]


@pytest.fixture()
def tree(tmp_path):
    for name in TREE:
        path = tmp_path / "root" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (tmp_path / "root" / "s2").mkdir()  # an empty folder is a part that lists nothing
    return tmp_path / "root"


def _folders(parts: list[ListingPart], root) -> list[tuple[str, bool]]:
    return [(os.path.relpath(part.folder, root), part.deep) for part in parts]


def test_a_deep_glob_splits_breadth_first_and_its_parts_list_exactly_the_glob(tree):
    source = ImageSource(input_glob=str(tree / "**.jpg"))
    two = plan_parts(source, max_parts=2)
    assert _folders(two, tree) == [(".", False), ("s0", True), ("s1", True), ("s2", True)]
    four = plan_parts(source, max_parts=4)
    assert _folders(four, tree) == [(".", False), ("s0", False), ("s1", False), ("s2", False),
                                    ("s0/deep", True), ("s1/deep2", True)]
    assert [part.number for part in four] == list(range(6))
    whole = sorted(match_entries(str(tree / "**.jpg")))
    assert len(whole) == 6
    for parts in (two, four):
        listed = [ref.uri for part in parts for ref in iter_part_refs(part)]
        assert sorted(listed) == whole and len(set(listed)) == len(listed)  # none lost, none twice
    by_part = [[os.path.relpath(ref.uri, tree) for ref in iter_part_refs(part)] for part in four]
    assert by_part == [["a.jpg"], ["s0/x.jpg"], ["s1/z.jpg"], [], ["s0/deep/y.jpg"], ["s1/deep2/v.jpg", "s1/deep2/w.jpg"]]
    assert [ref.uri for ref in iter_image_refs(source, max_parts=4)] == [str(tree / p) for parts in by_part for p in parts]


def test_a_glob_that_cannot_reach_deeper_folders_does_not_split_past_them(tree):
    one_level = ImageSource(input_glob=str(tree / "*" / "*.jpg"))
    parts = plan_parts(one_level, max_parts=8)
    assert _folders(parts, tree) == [(".", False), ("s0", True), ("s1", True), ("s2", True)]
    assert sorted(ref.uri for ref in iter_image_refs(one_level)) == [str(tree / "s0/x.jpg"), str(tree / "s1/z.jpg")]
    flat = ImageSource(input_glob=str(tree / "*.jpg"))  # "*" stays in the folder: nothing to split
    assert _folders(plan_parts(flat), tree) == [(".", True)]
    assert [ref.uri for ref in iter_image_refs(flat)] == [str(tree / "a.jpg")]


def test_what_cannot_be_split_is_one_part_over_the_whole_source(tree):
    deep = ImageSource(input_glob=str(tree / "**.jpg"))
    assert plan_parts(deep, max_parts=1) == [ListingPart(0, deep)]
    remote = ImageSource(input_glob="gs://bucket/photos/**.jpg")
    assert plan_parts(remote) == [ListingPart(0, remote)]
    coco = ImageSource(captions_file=str(tree / "captions_val2017.json"), image_root=str(tree))
    assert plan_parts(coco) == [ListingPart(0, coco)]
    missing = ImageSource(input_glob=str(tree / "nowhere" / "**.jpg"))
    assert plan_parts(missing) == [ListingPart(0, missing)]
    assert list(iter_image_refs(missing)) == []


def test_the_pipeline_numbers_within_parts_and_batches_never_mix_parts(tree):
    source = ImageSource(input_glob=str(tree / "**.jpg"))
    with TestPipeline(runner="FnApiRunner") as pipeline:
        listed = pipeline | ListImages(source, max_parts=4)
        positions = listed | "Positions" >> beam.Map(lambda item: tuple(item[0]))
        assert_that(positions, equal_to([(0, 0), (1, 0), (2, 0), (4, 0), (5, 0), (5, 1)]), label="positions")
        uris = listed | "Uris" >> beam.Map(lambda item: os.path.relpath(item[1].uri, tree))
        assert_that(uris, equal_to(["a.jpg", "s0/x.jpg", "s0/deep/y.jpg", "s1/z.jpg", "s1/deep2/v.jpg", "s1/deep2/w.jpg"]),
                    label="uris")
        batches = listed | BatchImageRefs(4) | beam.Map(lambda batch: [os.path.relpath(ref.uri, tree) for ref in batch])
        # Batches of at most 4 within each part: 6 images in 5 batches, the two of s1/deep2 together.
        assert_that(batches, equal_to([["a.jpg"], ["s0/x.jpg"], ["s0/deep/y.jpg"], ["s1/z.jpg"],
                                       ["s1/deep2/v.jpg", "s1/deep2/w.jpg"]]), label="batches")


def test_a_subfolder_that_cannot_be_listed_fails_the_plan_with_its_name(tree, monkeypatch):
    h.deny_listing(monkeypatch, "s1")
    with pytest.raises(BeamlensError, match=r"cannot list .*s1: Permission denied.* cannot be counted"):
        plan_parts(ImageSource(input_glob=str(tree / "**.jpg")), max_parts=8)


def test_planning_reads_only_the_folders_above_the_last_level(tmp_path, monkeypatch):
    """Planning a corpus laid out in 300 folders of 20 files reads the root's 300 names, not 6,000."""
    root = tmp_path / "corpus"
    for folder in range(300):
        (root / f"{folder:03d}").mkdir(parents=True)
        for n in range(20):
            (root / f"{folder:03d}" / f"{n}.jpg").write_bytes(b"x")
    read: Counter = Counter()
    real_scandir = os.scandir

    def scandir(path):
        read[os.path.relpath(path, root)] += 1
        return real_scandir(path)

    monkeypatch.setattr(listing.os, "scandir", scandir)
    parts = plan_parts(ImageSource(input_glob=str(root / "**")))
    assert len(parts) == 301 and parts[0].folder == str(root) and not parts[0].deep
    assert read == Counter({".": 1})
    assert sum(1 for part in parts[1:3] for _ in iter_part_refs(part)) == 40
