"""Training with frozen pretrained backbones (EfficientNet-Lite0 + MiniLM): features once, heads only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from beamlens.models.errors import BeamlensError
from tests.conftest import COCO_MINI

TRAIN_CAPTIONS = COCO_MINI / "annotations" / "captions_train2017.json"
VAL_CAPTIONS = COCO_MINI / "annotations" / "captions_val2017.json"


def _small_split(name: str, captions_file, count: int, image_size: int):
    from beamlens.models.training.end_to_end import Split, load_split

    split = load_split(name, str(captions_file), None, image_size)
    return Split(name, split.images[:count], split.skipped)


def test_feature_pairs_match_their_own_image_and_caption(tmp_path):
    """Every (image feature, caption feature) pair of a batch is an image with one of ITS captions,
    each pair once an epoch; the cached rows are the backbones' outputs."""
    import keras

    from beamlens.models.training.heads import FeatureSplit, IMAGE_FEATURES, TEXT_FEATURES
    from beamlens.models.encoders.towers import EncoderConfig
    from beamlens.models.encoders.regex_tokenizer import build_vocabulary

    split = _small_split("train", TRAIN_CAPTIONS, 6, 32)
    vocab = build_vocabulary(c for im in split.images for c in im.captions)
    config = EncoderConfig(image_size=32, max_tokens=12, vocab_size=vocab.size)
    # Tiny deterministic backbones: mean colour (image), and the token ids themselves (text).
    pixels = keras.Input((32, 32, 3))
    image_backbone = keras.Model(pixels, keras.layers.GlobalAveragePooling2D()(pixels))
    ids = keras.Input((12,), dtype="int32")
    text_backbone = keras.Model(ids, keras.layers.Lambda(lambda t: keras.ops.cast(t, "float32"))(ids))
    features = FeatureSplit("train", image_backbone, text_backbone, split.images, vocab, config, str(tmp_path))

    assert features.images.shape == (6, 3) and features.captions.shape == (sum(len(i.captions) for i in split.images), 12)
    assert (tmp_path / "train-image_features.npy").exists() and (tmp_path / "train-text_features.npy").exists()
    seen = []
    for inputs, _ in features.dataset(batch_size=4, seed=0, shuffle=True):
        for image_row, caption_row in zip(inputs[IMAGE_FEATURES].numpy(), inputs[TEXT_FEATURES].numpy()):
            owner = int(np.argmin(np.abs(features.images - image_row).sum(axis=1)))
            image = split.images[owner]
            assert tuple(caption_row.astype(int)) in {tuple(vocab.encode(c, 12)) for c in image.captions}
            seen.append((owner, tuple(caption_row.astype(int))))
    assert len(seen) == len(features.owner) == len(set(seen))


def test_non_finite_backbone_features_are_refused_naming_the_input(tmp_path):
    import keras

    from beamlens.models.training.heads import cache_image_features

    split = _small_split("train", TRAIN_CAPTIONS, 3, 32)
    pixels = keras.Input((32, 32, 3))
    mean = keras.layers.GlobalAveragePooling2D()(pixels)
    broken = keras.Model(pixels, keras.layers.Lambda(lambda x: x / (x - x))(mean))  # 0/0 = NaN
    with pytest.raises(BeamlensError, match="image backbone gave non-finite features for .*jpg.*3 of this batch of 3"):
        cache_image_features(broken, [im.path for im in split.images], 32, str(tmp_path / "f.npy"))


def test_train_cli_with_pretrained_backbones_trains_heads_and_exports(tmp_path, capsys):
    """beamlens train --image-backbone efficientnet_lite0 --text-backbone minilm: features computed
    once, heads trained, and the exported full encoders carry the trained heads."""
    from beamlens.pipelines import train

    out = tmp_path / "model"
    train.main(["--captions", str(TRAIN_CAPTIONS), "--val-captions", str(VAL_CAPTIONS), "--out", str(out),
                "--image-backbone", "efficientnet_lite0", "--text-backbone", "minilm", "--epochs", "3",
                "--embedding-dim", "32", "--init", "random"])
    printed = capsys.readouterr()
    assert "both frozen: features computed once, heads trained" in printed.out
    assert "train: computing frozen backbone features once (29 images)" in printed.err
    config = json.loads((out / "encoder_config.json").read_text())
    assert config["image_size"] == 224 and config["image_backbone"] == "efficientnet_lite0"
    assert config["text_backbone"] == "minilm" and config["training"]["epochs_run"] == 3
    history = json.loads((out / "history.json").read_text())
    assert history["loss"][-1] < history["loss"][0]

    import keras

    from beamlens.models.encoders.backbones.minilm import vocab_path
    from beamlens.models.encoders.bert_tokenizer import BertTokenizer
    from beamlens.models.training.evaluation import EncoderModels, embed_images, embed_texts
    from beamlens.models.training.end_to_end import load_split

    assert (out / "vocab.txt").read_text() == open(vocab_path(), encoding="utf-8").read()
    vision = keras.models.load_model(out / "vision_encoder.keras")
    text = keras.models.load_model(out / "text_encoder.keras")
    models = EncoderModels(vision, text, BertTokenizer.load(str(out / "vocab.txt")), 224, config["max_tokens"])
    images = load_split("train", str(TRAIN_CAPTIONS), None, 224).images
    image_vectors = embed_images(models, [im.path for im in images])
    captions = [(row, caption) for row, im in enumerate(images) for caption in im.captions]
    caption_vectors = embed_texts(models, [caption for _, caption in captions])
    assert image_vectors.shape == (29, 32) and caption_vectors.shape == (145, 32)
    np.testing.assert_allclose(np.linalg.norm(image_vectors, axis=1), 1.0, atol=1e-5)
    # The exported encoders carry the trained heads (random ones score at chance, 1/29): a caption
    # finds its own photo first far more often than chance.
    top1 = np.mean([int(np.argmax(image_vectors @ vector)) == row for (row, _), vector in zip(captions, caption_vectors)])
    assert top1 >= 0.6, top1  # measured 0.93


def test_several_caption_files_make_one_split_and_mismatched_folders_are_refused(tmp_path):
    from beamlens.models.training.end_to_end import load_split
    from beamlens.pipelines import train

    split = load_split("train", [str(TRAIN_CAPTIONS), str(VAL_CAPTIONS)], [None, None], 32)
    assert len(split.images) == 29 + 56
    with pytest.raises(BeamlensError, match="2 caption files but 1 image folders"):
        load_split("train", [str(TRAIN_CAPTIONS), str(VAL_CAPTIONS)], [str(COCO_MINI / "train2017")], 32)
    with pytest.raises(BeamlensError, match="2 --captions but 1 --images"):
        train.main(["--captions", str(TRAIN_CAPTIONS), "--captions", str(VAL_CAPTIONS),
                    "--images", str(COCO_MINI / "train2017"), "--out", str(tmp_path / "m")])
    assert not (tmp_path / "m").exists()


def test_bert_text_backbone_beside_a_trainable_image_backbone_is_refused(tmp_path):
    from beamlens.pipelines import train

    with pytest.raises(BeamlensError, match="trains frozen, beside a frozen image backbone"):
        train.main(["--captions", str(TRAIN_CAPTIONS), "--out", str(tmp_path / "m"), "--text-backbone", "minilm",
                    "--image-backbone", "scratch_cnn", "--epochs", "1"])
    assert not (tmp_path / "m").exists()
