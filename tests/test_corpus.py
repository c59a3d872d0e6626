"""beamlens.models.corpora.synthetic: the synthetic default corpus is COCO-valid, deterministic, streaming and exact."""

from __future__ import annotations

import copy
import gc
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from beamlens.models.corpora.coco import load_coco_captions
from beamlens.models.corpora.synthetic import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    CorpusOptions,
    caption_matches,
    load_ground_truth,
    write_corpus,
)
from beamlens.models.errors import BeamlensError

SMALL = CorpusOptions(num_images=120, image_size=64, val_fraction=0.25, seed=7)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "c"
    summary = write_corpus(out, SMALL)
    assert summary.created and summary.counts == {"train": 90, "val": 30}
    assert summary.caption_counts == {"train": 270, "val": 90}
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_layout_is_coco_and_read_back(corpus):
    seen_ids: set[str] = set()
    annotation_ids: set[int] = set()
    for split, count in (("train", 90), ("val", 30)):
        captions_file = corpus / "annotations" / f"captions_{split}.json"
        images = load_coco_captions(str(captions_file), check_files=True)  # default root: <corpus>/<split>
        assert len(images) == count
        assert all(Path(i.path).parent == corpus / split for i in images)
        assert [i.file_name for i in images][:1] == [f"{int(images[0].image_id):012d}.jpg"]
        assert all((i.width, i.height) == (64, 64) for i in images)
        assert all(Image.open(i.path).size == (64, 64) for i in images[:5])
        assert all(len(i.captions) == 3 and len(set(i.captions)) == 3 for i in images)
        assert not seen_ids & {i.image_id for i in images}
        seen_ids |= {i.image_id for i in images}
        raw = json.loads(captions_file.read_text())
        assert set(raw) == {"info", "licenses", "images", "annotations"}
        ids = {a["id"] for a in raw["annotations"]}
        assert len(ids) == len(raw["annotations"]) and not ids & annotation_ids
        annotation_ids |= ids
    assert seen_ids == {str(n) for n in range(1, 121)}
    assert sorted(p.name for p in (corpus / "val").iterdir())[0] == "000000000091.jpg"
    manifest = json.loads((corpus / "corpus.json").read_text())
    assert manifest["images"] == {"train": 90, "val": 30} and manifest["options"]["seed"] == 7


def test_two_runs_are_byte_identical_and_the_seed_matters(tmp_path):
    options = CorpusOptions(num_images=24, image_size=48, val_fraction=0.25, seed=3)
    write_corpus(tmp_path / "a", options)
    write_corpus(tmp_path / "b", options)
    first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(first) == 24 + 5 and first == second
    write_corpus(tmp_path / "c", CorpusOptions(num_images=24, image_size=48, val_fraction=0.25, seed=4))
    other = _files(tmp_path / "c")
    assert other.keys() == first.keys()
    assert sum(other[k] != first[k] for k in first if k.endswith(".jpg")) >= 20


def test_every_caption_matches_its_image_and_not_a_changed_one(corpus):
    for split in ("train", "val"):
        truth = load_ground_truth(corpus, split)
        assert len(truth.captions) == 3 * len(truth.images)
        for annotation_id, caption in truth.captions.items():
            own = truth.images[caption["image_id"]]
            assert caption_matches(caption["mentions"], own), caption
            changed = copy.deepcopy(own)  # every shape swapped for another: no caption may still fit
            for obj in changed["objects"]:
                obj["shape"] = SHAPES[(SHAPES.index(obj["shape"]) + 1) % len(SHAPES)]
            assert not caption_matches(caption["mentions"], changed), caption
            assert caption["image_id"] in truth.relevant_images(annotation_id)
        # captions are not all about everything: some leave out the background or the colours
        mentions = [c["mentions"] for c in truth.captions.values()]
        assert any(m["background"] is None for m in mentions) and any(m["background"] for m in mentions)
        assert any("colour" not in o for m in mentions for o in m["objects"])


def test_caption_matches_facts():
    image = {"background": "grey", "objects": [
        {"shape": "circle", "colour": "red", "size": "small", "position": "left"},
        {"shape": "square", "colour": "blue", "size": "large", "position": "right"},
    ]}
    red_left_of_blue = {"background": "grey", "count": None, "left_of": [[0, 1]], "objects": [
        {"shape": "circle", "colour": "red"}, {"shape": "square", "colour": "blue"}]}
    assert caption_matches(red_left_of_blue, image)
    assert not caption_matches({**red_left_of_blue, "left_of": [[1, 0]]}, image)
    assert not caption_matches({**red_left_of_blue, "background": "white"}, image)
    assert caption_matches({**red_left_of_blue, "count": 2}, image)
    assert not caption_matches({**red_left_of_blue, "count": 3}, image)
    two_circles = {"background": None, "count": None, "left_of": [], "objects": [
        {"shape": "circle"}, {"shape": "circle"}]}
    assert not caption_matches(two_circles, image)  # one image object cannot answer two mentions
    assert caption_matches({"background": None, "objects": [{"shape": "square", "size": "large", "position": "right"}]}, image)
    assert not caption_matches({"background": None, "objects": [{"shape": "square", "size": "small"}]}, image)


def test_ground_truth_agrees_with_the_pixels(corpus):
    for split in ("train", "val"):
        for image_id, attrs in load_ground_truth(corpus, split).images.items():
            pixels = np.asarray(Image.open(corpus / split / attrs["file_name"]).convert("RGB"), dtype=int)
            assert np.abs(pixels[1, 1] - BACKGROUNDS[attrs["background"]]).max() <= 40, (image_id, pixels[1, 1])
            assert 1 <= len(attrs["objects"]) <= 3
            positions = [o["position"] for o in attrs["objects"]]
            assert len(set(positions)) == len(positions)
            for obj in attrs["objects"]:
                x, y = (int(round(v)) for v in obj["center"])
                centre = pixels[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).mean(axis=0)
                nearest = min(COLOURS, key=lambda name: np.abs(centre - COLOURS[name]).sum())
                assert nearest == obj["colour"], (image_id, obj, centre)
                assert np.abs(centre - COLOURS[obj["colour"]]).max() <= 40, (image_id, obj, centre)


def test_attributes_cover_the_vocabulary(corpus):
    objects = [o for s in ("train", "val") for a in load_ground_truth(corpus, s).images.values() for o in a["objects"]]
    assert {o["shape"] for o in objects} == set(SHAPES)
    assert {o["colour"] for o in objects} == set(COLOURS)
    assert {o["size"] for o in objects} == {"small", "large"}
    assert {o["position"] for o in objects} == {"left", "center", "right"}


def test_memory_does_not_grow_with_the_corpus(tmp_path):
    """Live memory, sampled every 100 images after a collection, stays flat from 100 to 600 images."""
    samples: list[int] = []

    def sample(_line: str) -> None:
        gc.collect()
        samples.append(tracemalloc.get_traced_memory()[0])
        if len(samples) == 1:
            tracemalloc.reset_peak()  # imports and caches of the first images are behind us

    gc.collect()
    tracemalloc.start()
    try:
        write_corpus(tmp_path / "c", CorpusOptions(num_images=600, image_size=32), sample, progress_every=100)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(samples) == 6
    # Holding the JSON records would add > 700 bytes per image (> 350 kB here); what may move is
    # the write buffers of the eight part files (8 kB each).
    growth = max(samples[1:]) - samples[0]
    assert growth < 100_000, samples
    assert peak - samples[0] < 1_000_000, (peak, samples)  # incl. assembling the JSON files at the end


def test_rerun_is_idempotent_and_other_options_are_refused(tmp_path):
    out = tmp_path / "c"
    options = CorpusOptions(num_images=10, image_size=32, val_fraction=0.2)
    write_corpus(out, options)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    lines: list[str] = []
    again = write_corpus(out, CorpusOptions(num_images=10, image_size=32, val_fraction=0.2), lines.append)
    assert not again.created and again.counts == {"train": 8, "val": 2}
    assert lines == [f"{out}: a complete corpus with these options is already there; nothing to do"]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps

    with pytest.raises(BeamlensError) as caught:
        write_corpus(out, CorpusOptions(num_images=12, image_size=32, val_fraction=0.2))
    assert str(caught.value) == (f"{out} holds a corpus made with other options (num_images 10 there, 12 asked); "
                                 "choose another folder or use --force to replace it")
    forced = write_corpus(out, CorpusOptions(num_images=12, image_size=32, val_fraction=0.25), force=True)
    assert forced.created and forced.counts == {"train": 9, "val": 3}
    assert len(list((out / "train").iterdir())) == 9 and len(list((out / "val").iterdir())) == 3

    (out / "corpus.json").unlink()  # as if killed before the end
    with pytest.raises(BeamlensError, match=r"is not empty: it holds an unfinished corpus \(no corpus.json\)"):
        write_corpus(out, options)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(BeamlensError, match="is not empty: it holds other files"):
        write_corpus(other, options)
    with pytest.raises(BeamlensError, match="not a complete beamlens corpus"):
        load_ground_truth(out, "val")
    with pytest.raises(BeamlensError, match="unknown split 'test'"):
        load_ground_truth(out, "test")


def test_progress_reports_rate(tmp_path):
    lines: list[str] = []
    write_corpus(tmp_path / "c", CorpusOptions(num_images=20, image_size=32, val_fraction=0.5), lines.append, progress_every=10)
    assert [line.split(" (")[0] for line in lines] == ["10/20 images", "20/20 images"]
    assert all(line.endswith(" images/s)") for line in lines)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (CorpusOptions(num_images=1), "num_images must be at least 2"),
        (CorpusOptions(image_size=16), "image_size must be between 32 and 1024 pixels, got 16"),
        (CorpusOptions(val_fraction=1.0), "val_fraction must be between 0 and 1 (exclusive), got 1.0"),
        (CorpusOptions(seed=-1), "seed must be a non-negative integer, got -1"),
        (CorpusOptions(captions_per_image=1), "captions_per_image must be between 2 and 6, got 1"),
        (CorpusOptions(num_images=5, val_fraction=0.05), "val_fraction 0.05 of 5 images leaves an empty split"),
    ],
)
def test_bad_options(tmp_path, options, message):
    with pytest.raises(BeamlensError) as caught:
        write_corpus(tmp_path / "c", options)
    assert str(caught.value).startswith(message)
    assert not (tmp_path / "c").exists()  # nothing written


def test_two_captions_per_image(tmp_path):
    write_corpus(tmp_path / "c", CorpusOptions(num_images=30, image_size=32, captions_per_image=2))
    images = load_coco_captions(str(tmp_path / "c" / "annotations" / "captions_train.json"))
    assert len(images) == 27 and all(len(set(i.captions)) == 2 for i in images)
