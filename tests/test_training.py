"""tf.data input and bad input of ``beamlens train``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from beamlens.models.errors import BeamlensError
from tests.conftest import COCO_MINI


def _coco(tmp_path, images, annotations):
    path = tmp_path / "annotations" / "captions_x.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


def test_dataset_has_one_example_per_caption_and_reads_the_cache_on_later_epochs(tmp_path):
    from beamlens.models.encoders.towers import EncoderConfig
    from beamlens.models.encoders.regex_tokenizer import build_vocabulary
    from beamlens.models.training.end_to_end import load_split, make_dataset

    split = load_split("val", str(COCO_MINI / "annotations" / "captions_val2017.json"), None, 32)
    vocab = build_vocabulary(c for im in split.images for c in im.captions)
    config = EncoderConfig(image_size=32, max_tokens=12, vocab_size=vocab.size)
    cache = tmp_path / "cache"
    dataset = make_dataset(split, vocab, config, batch_size=8, seed=0, cache_path=str(cache))
    first_epoch = list(dataset)
    captions = sum(len(im.captions) for im in split.images)
    assert sum(len(b[0]["ids"]) for b in first_epoch) == captions
    first = first_epoch[0][0]
    assert first["image"].shape == (8, 32, 32, 3) and first["ids"].shape == (8, 12)
    assert first["image"].dtype.name == "float32" and float(np.max(first["image"])) > 1.0  # raw 0..255
    # Every example pairs an image with one of ITS captions: find the image by its pixels.
    from beamlens.models.io.files import read_bytes as read_file
    from beamlens.models.encoders.preprocessing import preprocess_image_bytes

    by_pixels = {preprocess_image_bytes(read_file(im.path), 32).tobytes(): im for im in split.images}
    for pixels, ids in zip(first["image"].numpy(), first["ids"].numpy()):
        image = by_pixels[pixels.tobytes()]
        assert tuple(ids) in {tuple(vocab.encode(c, 12)) for c in image.captions}
    assert list(tmp_path.glob("cache*")), "decoded pixels were not cached to disk"
    # A second epoch comes from the cache (the images may be gone) and is reshuffled.
    second_epoch = list(make_dataset(split, vocab, config, batch_size=8, seed=0, cache_path=str(cache)))
    assert sum(len(b[0]["ids"]) for b in second_epoch) == captions


def test_validation_order_is_mixed_but_fixed():
    from beamlens.models.encoders.towers import EncoderConfig
    from beamlens.models.encoders.regex_tokenizer import build_vocabulary
    from beamlens.models.training.end_to_end import load_split, make_dataset

    split = load_split("val", str(COCO_MINI / "annotations" / "captions_val2017.json"), None, 16)
    vocab = build_vocabulary(c for im in split.images for c in im.captions)
    config = EncoderConfig(image_size=16, max_tokens=12, vocab_size=vocab.size)
    dataset = make_dataset(split, vocab, config, batch_size=16, seed=0, shuffle=False)
    one, two = [np.concatenate([b[0]["ids"].numpy() for b in dataset]) for _ in range(2)]
    assert np.array_equal(one, two)
    # The 5 captions of an image do not sit together in one batch.
    first_batch = next(iter(dataset))[0]["image"].numpy().reshape(16, -1)
    assert len({row.tobytes() for row in first_batch}) > 8


def test_undecodable_images_are_skipped_and_counted(tmp_path, capsys):
    from beamlens.models.training.end_to_end import load_split

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
    from beamlens.pipelines import train

    empty = _coco(tmp_path, [], [])
    with pytest.raises(BeamlensError, match="split is empty"):
        train.main(["--captions", str(empty), "--images", str(tmp_path), "--out", str(tmp_path / "m")])
    nocaps = _coco(tmp_path, [{"id": 1, "file_name": "a.jpg"}], [])
    with pytest.raises(BeamlensError, match="no captioned images"):
        train.main(["--captions", str(nocaps), "--images", str(tmp_path), "--out", str(tmp_path / "m")])
    assert not (tmp_path / "m").exists()
