"""tf.data input and bad input of ``beamlens train``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.errors import BeamlensError
from tests.conftest import COCO_MINI


def _coco(tmp_path, images, annotations):
    path = tmp_path / "annotations" / "captions_x.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


def test_dataset_pairs_each_image_with_one_of_its_captions():
    from models.encoders import EncoderConfig
    from models.text_tokenizer import build_vocabulary
    from models.training import load_split, make_dataset

    split = load_split("val", str(COCO_MINI / "annotations" / "captions_val2017.json"), None, 32)
    vocab = build_vocabulary(c for im in split.images for c in im.captions)
    config = EncoderConfig(image_size=32, max_tokens=12, vocab_size=vocab.size)
    batches = list(make_dataset(split, vocab, config, batch_size=8, seed=0, shuffle=False))
    assert sum(len(b[0]["ids"]) for b in batches) == len(split.images)
    first = batches[0][0]
    assert first["image"].shape == (8, 32, 32, 3) and first["ids"].shape == (8, 12)
    assert float(np.max(first["image"])) > 1.0  # raw 0..255 pixels
    possible = {tuple(vocab.encode(c, 12)) for c in split.images[0].captions}
    assert tuple(first["ids"][0].numpy()) in possible


def test_undecodable_images_are_skipped_and_counted(tmp_path, capsys):
    from models.training import load_split

    (tmp_path / "x").mkdir()
    good = (COCO_MINI / "val2017").glob("*.jpg").__next__()
    (tmp_path / "x" / "good.jpg").write_bytes(good.read_bytes())
    (tmp_path / "x" / "bad.jpg").write_bytes(b"not a jpeg")
    path = _coco(tmp_path, [{"id": 1, "file_name": "good.jpg"}, {"id": 2, "file_name": "bad.jpg"}],
                 [{"id": 10, "image_id": 1, "caption": "a photo"}, {"id": 11, "image_id": 2, "caption": "broken"}])
    split = load_split("train", str(path), str(tmp_path / "x"), 32)
    assert [im.file_name for im in split.images] == ["good.jpg"] and len(split.skipped) == 1
    assert "skipped 1 of 2 images" in capsys.readouterr().err


def test_bad_input_gets_clear_errors(tmp_path):
    from pipelines import train

    empty = _coco(tmp_path, [], [])
    with pytest.raises(BeamlensError, match="split is empty"):
        train.main(["--captions", str(empty), "--images", str(tmp_path), "--out", str(tmp_path / "m")])
    nocaps = _coco(tmp_path, [{"id": 1, "file_name": "a.jpg"}], [])
    with pytest.raises(BeamlensError, match="no captioned images"):
        train.main(["--captions", str(nocaps), "--images", str(tmp_path), "--out", str(tmp_path / "m")])
    assert not (tmp_path / "m").exists()
