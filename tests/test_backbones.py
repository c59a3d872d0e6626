"""Backbone registry: scratch, Keras applications from a local weights file, SavedModel dirs."""

from __future__ import annotations

import numpy as np
import pytest

from beamlens.models.encoders.backbones import BackboneConfig, build_image_backbone, build_text_backbone
from beamlens.models.errors import BeamlensError


def test_unknown_backbone_names_the_choices():
    with pytest.raises(BeamlensError, match="unknown image backbone 'resnet9000'.*scratch_cnn"):
        build_image_backbone(BackboneConfig("resnet9000"))


def test_missing_paths_are_clear_errors(tmp_path):
    with pytest.raises(BeamlensError, match="mobilenet_v3_small weights file not found: .*nope.weights.h5"):
        build_image_backbone(BackboneConfig("mobilenet_v3_small", image_size=32, weights=str(tmp_path / "nope.weights.h5")))
    with pytest.raises(BeamlensError, match="SavedModel directory not found"):
        build_text_backbone(BackboneConfig(f"savedmodel:{tmp_path / 'missing'}"))


def test_keras_application_loads_local_weights(tmp_path):
    import keras

    source = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3),
                                                 pooling="avg", alpha=0.75, include_preprocessing=True)
    rng = np.random.default_rng(0)
    for w in source.weights:  # distinct from a fresh random init
        w.assign(rng.normal(0, 0.05, w.shape).astype(np.float32) if "gamma" not in w.path else np.ones(w.shape, np.float32))
    path = tmp_path / "mnv3.weights.h5"
    source.save_weights(path)
    backbone = build_image_backbone(BackboneConfig("mobilenet_v3_small", image_size=32, weights=str(path),
                                                   options={"alpha": 0.75}))
    assert backbone.trainable is False
    pixels = rng.uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(backbone(pixels)), np.asarray(source(pixels)), rtol=1e-4, atol=1e-5)


def test_savedmodel_backbone_calls_the_saved_function(tmp_path):
    import tensorflow as tf

    class Tiny(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.arange(12, dtype=np.float32).reshape(3, 4) / 10)

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32)])
        def __call__(self, x):
            return tf.matmul(tf.reduce_mean(x, axis=[1, 2]), self.w)

    tiny = Tiny()
    tf.saved_model.save(tiny, str(tmp_path / "sm"))
    backbone = build_image_backbone(BackboneConfig(f"savedmodel:{tmp_path / 'sm'}", image_size=8))
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(backbone(pixels)), tiny(pixels).numpy(), rtol=1e-5)


def test_scratch_text_backbone_shape():
    backbone = build_text_backbone(BackboneConfig("scratch_text", max_tokens=10, vocab_size=30))
    assert backbone(np.ones((2, 10), np.int32)).shape == (2, 128)
