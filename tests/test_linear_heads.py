"""Linear heads on multi-scale features: what ``beamlens train`` fits on thousands of captioned photos.

* multi-scale pooling of EfficientNet-Lite0 starts with the usual pooled head (the ImageNet
  classifier's input), then the pooled last three stages;
* the heads are Dense + L2 at inference (dropout only while training);
* ``train --init linear`` reports the caption-free model's R@k on the held-out split as the bar,
  refuses (exit 2, nothing written) a model below it, and publishes it with ``--allow-worse``;
  with the student text tower it first adapts the student to the training captions;
* auto picks linear heads from 1,000 training photos, caption-free heads below.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from beamlens.models.errors import BeamlensError
from beamlens.pipelines import cli
from tests.conftest import COCO_MINI, TFLITE_SUPPORT_DATA

TRAIN_CAPTIONS = COCO_MINI / "annotations" / "captions_train2017.json"
VAL_CAPTIONS = COCO_MINI / "annotations" / "captions_val2017.json"


def _pixels(size: int) -> np.ndarray:
    from beamlens.models.encoders.preprocessing import preprocess_image_bytes

    return np.stack([preprocess_image_bytes((TFLITE_SUPPORT_DATA / name).read_bytes(), size)
                     for name in ("burger.jpg", "sparrow.png")])


def _student_file(folder) -> str:
    """A small student of MiniLM's vocabulary with its starting weights (no distillation in tests)."""
    from beamlens.models.encoders.bert_tokenizer import BertTokenizer, backbone_vocab_path
    from beamlens.models.encoders.distillation.recipe import DistillationRecipe, save_student
    from beamlens.models.encoders.distillation.student import build_student

    tokenizer = BertTokenizer.load(backbone_vocab_path("minilm"))
    return save_student(build_student(tokenizer.size, 24, width=16), str(folder / "student.npz"),
                        DistillationRecipe(width=16))


def test_multi_scale_pooling_starts_with_the_average_pooled_head():
    from beamlens.models.encoders.backbones import BackboneConfig, build_image_backbone
    from beamlens.models.encoders.backbones.efficientnet_lite import FEATURES, MULTI_SCALE_FEATURES

    plain = build_image_backbone(BackboneConfig("efficientnet_lite0", image_size=96))
    multi = build_image_backbone(BackboneConfig("efficientnet_lite0", image_size=96, options={"pooling": "multi_scale"}))
    assert multi.output_shape == (None, MULTI_SCALE_FEATURES) == (None, 1904)
    pixels = _pixels(96)
    head, both = plain.predict(pixels, verbose=0), multi.predict(pixels, verbose=0)
    np.testing.assert_allclose(both[:, :FEATURES], head, rtol=1e-4, atol=1e-4)
    stages = both[:, FEATURES:]
    assert np.isfinite(stages).all() and np.abs(stages).sum(axis=1).min() > 1.0  # real activations, not padding
    assert np.abs(stages[0] - stages[1]).max() > 0.1  # and they tell the two photos apart


def test_unknown_pooling_is_refused_with_the_choices():
    from beamlens.models.encoders.backbones import efficientnet_lite

    with pytest.raises(BeamlensError, match="unknown pooling 'max'; choose one of avg, multi_scale"):
        efficientnet_lite.build(64, pooling="max")


def test_linear_heads_are_dense_then_unit_length_at_inference():
    from beamlens.models.encoders.linear_heads import LinearHeads, build_heads

    vision, text = build_heads(12, 5, 4, LinearHeads(image_dropout=0.5, text_dropout=0.2), "image_features",
                               "text_features")
    features = np.random.default_rng(0).normal(size=(3, 12)).astype(np.float32)
    kernel, bias = vision.get_layer("vision_projection").get_weights()
    expected = features @ kernel + bias
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vision.predict(features, verbose=0), expected, rtol=1e-5, atol=1e-5)
    assert [layer.name for layer in text.layers][1:] == ["text_input_dropout", "text_projection", "text_l2"]


@pytest.mark.parametrize("photos, expected", [(999, "caption_free"), (1000, "linear")])
def test_auto_picks_linear_heads_from_a_thousand_photos(photos, expected):
    from beamlens.models.training.job import TrainRequest, head_kind

    request = TrainRequest(["c.json"], "out", image_backbone="efficientnet_lite0", text_backbone="minilm_static")
    assert head_kind(request, trainable=False, training_photos=photos) == expected


def test_train_linear_refuses_a_model_below_caption_free_then_publishes_it_when_allowed(tmp_path, capsys):
    from beamlens.pipelines import train

    out = tmp_path / "model"
    # 29 photos and one epoch: random linear heads cannot beat the caption-free model on 56 others
    argv = ["--captions", str(TRAIN_CAPTIONS), "--val-captions", str(VAL_CAPTIONS), "--init", "linear",
            "--epochs", "1", "--out", str(out)]
    assert cli.main(["train", *argv]) == 2
    printed = capsys.readouterr()
    assert "heads: linear with input dropout on multi-scale image features" in printed.out
    assert "held-out R@1/5/10 (56 photos): before training (caption-free)" in printed.out
    assert "beamlens train: error: the trained model scores below the caption-free model on the held-out split" in printed.err
    assert "--allow-worse" in printed.err and not out.exists()

    # published when allowed; with the student text tower, which first adapts to the training captions
    student = _student_file(tmp_path)
    assert train.main([*argv, "--allow-worse", "--text-backbone", "minilm_static", "--text-backbone-weights", student]) == 0
    history = json.loads((out / "history.json").read_text())
    assert history["best_epoch"] == 1  # only trained epochs can be kept
    adaptation = history["student_adaptation"]
    assert adaptation["training_captions"] == 145  # 29 photos x 5 captions; the 280 held out only measure
    assert adaptation["held_out_cosine_after"] > adaptation["held_out_cosine_before"]
    assert history["val_recall@10"][0] == history["recall_before"]["10"]  # epoch 0: the caption-free model
    config = json.loads((out / "encoder_config.json").read_text())
    assert config["extra"]["head"] == "linear"
    assert config["extra"]["image_backbone_options"] == {"pooling": "multi_scale"}
    assert config["extra"]["text_student"] == {"adapted_to_training_captions": 145}
    import keras

    vision = keras.models.load_model(out / "vision_encoder.keras")
    assert vision.get_layer("vision_projection").get_weights()[0].shape == (1904, 128)
    vectors = vision.predict(_pixels(224), verbose=0)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
