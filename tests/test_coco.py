"""beamlens.models.corpora.coco: real COCO 2017 files, real photos, and every malformed-input message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from beamlens.models.corpora.coco import (
    CocoImage,
    default_image_root,
    load_coco_captions,
    parse_coco_captions,
    split_name_from_captions_file,
)
from beamlens.models.errors import BeamlensError
from tests.conftest import COCO_MINI, TFLITE_SUPPORT_DATA


def _doc(images=None, annotations=None) -> dict:
    return {
        "info": {"description": "hand-written"},
        "licenses": [{"id": 1, "name": "CC-BY"}],
        "images": images if images is not None else [
            {"id": 42, "file_name": "000000000042.jpg", "width": 64, "height": 48, "license": 1},
            {"id": 7, "file_name": "000000000007.jpg", "width": 32, "height": 32, "license": 1},
            {"id": 9, "file_name": "000000000009.jpg"},
        ],
        "annotations": annotations if annotations is not None else [
            {"id": 1, "image_id": 7, "caption": "  a cat on a mat \n"},
            {"id": 2, "image_id": 42, "caption": "a dog"},
            {"id": 3, "image_id": 7, "caption": "a sleepy cat."},
        ],
    }


def _parse(doc, source="caps.json", root="gs://bucket/imgs"):
    return parse_coco_captions(json.dumps(doc).encode(), source=source, image_root=root)


def test_parse_keeps_coco_order_strips_captions_and_joins_paths():
    images = _parse(_doc())
    assert images == [
        CocoImage("42", "000000000042.jpg", "gs://bucket/imgs/000000000042.jpg", ("a dog",), 64, 48),
        CocoImage("7", "000000000007.jpg", "gs://bucket/imgs/000000000007.jpg", ("a cat on a mat", "a sleepy cat."), 32, 32),
        CocoImage("9", "000000000009.jpg", "gs://bucket/imgs/000000000009.jpg", (), None, None),
    ]
    # str input and a trailing slash on the root give the same result
    again = parse_coco_captions(json.dumps(_doc()), source="x", image_root="gs://bucket/imgs/")
    assert [i.path for i in again] == [i.path for i in images]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"images": [], "annotations": [}', "caps.json: not valid JSON: Expecting value at line 1, column 32"),
        (b"[1, 2]", "caps.json: expected a JSON object"),
        (json.dumps({"annotations": []}).encode(), "caps.json: missing the 'images' key"),
        (json.dumps({"images": []}).encode(), "caps.json: missing the 'annotations' key"),
        (json.dumps({"images": {}, "annotations": []}).encode(), "caps.json: 'images' must be a list, got dict"),
        (b"\xff\xfe\x00garbage", "caps.json: not UTF-8 text"),
    ],
)
def test_malformed_files(data, message):
    with pytest.raises(BeamlensError) as caught:
        parse_coco_captions(data, source="caps.json", image_root="r")
    assert str(caught.value).startswith(message), str(caught.value)


@pytest.mark.parametrize(
    ("images", "annotations", "message"),
    [
        ([{"file_name": "a.jpg"}], [], "caps.json: images[0] has no valid 'id' (got None)"),
        ([{"id": True, "file_name": "a.jpg"}], [], "caps.json: images[0] has no valid 'id' (got True)"),
        ([{"id": 1, "file_name": "a.jpg"}, {"id": 5}], [], "caps.json: images[1] (id 5) has no 'file_name'"),
        ([{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": " "}], [], "caps.json: images[1] (id 2) has no 'file_name'"),
        (
            [{"id": 1, "file_name": "a.jpg"}, {"id": 3, "file_name": "b.jpg"}, {"id": 1, "file_name": "c.jpg"}],
            [],
            "caps.json: duplicate image id 1 (images[0] and images[2])",
        ),
        (
            [{"id": 1, "file_name": "a.jpg", "width": -3}],
            [],
            "caps.json: images[0] (id 1) has an invalid width -3",
        ),
        (
            [{"id": 1, "file_name": "a.jpg"}],
            [{"id": 10, "image_id": 1, "caption": "ok"}, {"id": 11, "image_id": 99, "caption": "orphan"}],
            "caps.json: annotation id 11 (annotations[1]) names image id 99, which is not in 'images'",
        ),
        (
            [{"id": 1, "file_name": "a.jpg"}],
            [{"id": 12, "image_id": 1, "caption": "   "}],
            "caps.json: annotation id 12 (annotations[0]) for image 1 has an empty caption",
        ),
        (
            [{"id": 1, "file_name": "a.jpg"}],
            [{"id": 13, "image_id": 1}],
            "caps.json: annotation id 13 (annotations[0]) for image 1 has no 'caption' text",
        ),
        (
            [{"id": 1, "file_name": "a.jpg"}],
            [{"id": 14, "caption": "x"}],
            "caps.json: annotation id 14 (annotations[0]) has no valid 'image_id' (got None)",
        ),
        ([{"id": 1, "file_name": "a.jpg"}], ["text"], "caps.json: annotations[0] is not an object"),
    ],
)
def test_bad_records_are_named(images, annotations, message):
    with pytest.raises(BeamlensError) as caught:
        _parse(_doc(images, annotations))
    assert str(caught.value).startswith(message), str(caught.value)


def test_split_name_and_default_root():
    assert split_name_from_captions_file("/d/annotations/captions_train2014.json") == "train2014"
    assert split_name_from_captions_file("gs://b/annotations/captions_val.json") == "val"
    assert split_name_from_captions_file("/d/instances_train2014.json") is None
    assert split_name_from_captions_file("/d/captions_.json") is None
    assert default_image_root("/d/annotations/captions_train2014.json") == "/d/train2014"
    assert default_image_root("gs://b/coco/annotations/captions_val2017.json") == "gs://b/coco/val2017"
    assert default_image_root("annotations/captions_val.json") == "val"
    with pytest.raises(BeamlensError, match=r"cannot guess the image folder of /d/my_caps\.json"):
        default_image_root("/d/my_caps.json")


def test_load_errors(tmp_path):
    with pytest.raises(BeamlensError, match=r"captions file not found: .*captions_none\.json"):
        load_coco_captions(str(tmp_path / "annotations" / "captions_none.json"))
    odd = tmp_path / "mine.json"
    odd.write_text(json.dumps(_doc()))
    with pytest.raises(BeamlensError, match="cannot guess the image folder"):
        load_coco_captions(str(odd))
    assert len(load_coco_captions(str(odd), image_root=str(tmp_path))) == 3
    broken = tmp_path / "annotations" / "captions_bad.json"
    broken.parent.mkdir()
    broken.write_text('{"images": [\n  {"id": 1,, "file_name": "a.jpg"}], "annotations": []}')
    with pytest.raises(BeamlensError) as caught:
        load_coco_captions(str(broken))
    assert str(caught.value) == f"{broken}: not valid JSON: Expecting property name enclosed in double quotes at line 2, column 12"


@pytest.mark.parametrize(("split", "count"), [("train2017", 29), ("val2017", 56)])
def test_real_coco_2017_files(split, count):
    captions_file = COCO_MINI / "annotations" / f"captions_{split}.json"
    images = load_coco_captions(str(captions_file), check_files=True)
    assert len(images) == count
    assert all(len(image.captions) == 5 for image in images)
    assert all(c and c == c.strip() for image in images for c in image.captions)
    assert len({image.image_id for image in images}) == count
    raw = json.loads(captions_file.read_text())
    assert [image.image_id for image in images] == [str(r["id"]) for r in raw["images"]]
    first = images[0]
    assert first.path == f"{COCO_MINI / split}/{first.file_name}"
    assert Path(first.path).is_file()
    assert (first.width, first.height) == (raw["images"][0]["width"], raw["images"][0]["height"])
    assert first.image_id.isdigit() and first.file_name == f"{int(first.image_id):012d}.jpg"


def test_hand_written_file_over_real_photos(tmp_path):
    photos = ["burger.jpg", "cats_and_dogs.jpg", "sparrow.png", "multi_objects.jpg"]
    root = tmp_path / "photos"
    root.mkdir()
    for name in photos:
        shutil.copy(TFLITE_SUPPORT_DATA / name, root / name)
    doc = _doc(
        [{"id": n + 1, "file_name": name} for n, name in enumerate(photos)],
        [
            {"id": 100, "image_id": 1, "caption": "a burger"},
            {"id": 101, "image_id": 2, "caption": "cats and dogs"},
            {"id": 102, "image_id": 3, "caption": "a sparrow"},
            {"id": 103, "image_id": 3, "caption": "a small bird on a branch"},
        ],
    )
    captions_file = tmp_path / "annotations" / "captions_photos.json"
    captions_file.parent.mkdir()
    captions_file.write_text(json.dumps(doc))
    images = load_coco_captions(str(captions_file), check_files=True)  # default root: <tmp>/photos
    assert [i.file_name for i in images] == photos
    assert [i.captions for i in images] == [("a burger",), ("cats and dogs",), ("a sparrow", "a small bird on a branch"), ()]
    assert all(Path(i.path).read_bytes() == (TFLITE_SUPPORT_DATA / i.file_name).read_bytes() for i in images)

    # every missing file is reported in one error: the first five named, the rest counted
    doc["images"] += [{"id": 10 + n, "file_name": f"gone_{n}.jpg"} for n in range(7)]
    captions_file.write_text(json.dumps(doc))
    with pytest.raises(BeamlensError) as caught:
        load_coco_captions(str(captions_file), check_files=True)
    message = str(caught.value)
    assert message.startswith(f"7 of 11 images listed in {captions_file} are missing under {root}: ")
    assert "gone_0.jpg (id 10), gone_1.jpg (id 11)" in message and "gone_4.jpg (id 14) and 2 more" in message
    assert "gone_5.jpg" not in message
    assert len(load_coco_captions(str(captions_file))) == 11  # without check_files the listing is the caller's
