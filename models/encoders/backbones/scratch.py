"""Small backbones trained from scratch: the offline default (no weights to download).

Both are built from stock Keras layers so the saved ``.keras`` loads anywhere (Beam workers
included) and converts to builtin TFLite ops. From-scratch backbones are always trainable: a
frozen random network would be useless, so ``config.trainable`` is forced on by encoders.py.
"""

from __future__ import annotations

import keras

from beamlens.models.encoders.backbones import BackboneConfig, register_image_backbone, register_text_backbone


@register_image_backbone("scratch_cnn")
def scratch_cnn(config: BackboneConfig) -> keras.Model:
    """A stride-2 stem then three conv stages (64-128-128); features = global max pool + 4x4 map.

    Two views of the last feature map, concatenated: the global max pool says WHAT is there
    wherever it is (learned from few examples, since every location shares it) and the
    flattened map says WHERE (captions say "to the left of"). With the flattened map alone,
    training on the default corpus sat for epochs at the "background colour only" loss
    before it learned the objects. Cheap enough to train the default corpus on 2 CPUs.
    """
    pixels = keras.Input((config.image_size, config.image_size, 3), dtype="float32", name="image")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(pixels)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    for filters in (64, 128, 128):
        x = keras.layers.MaxPooling2D(2)(x)
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
    what = keras.layers.GlobalMaxPooling2D()(x)
    where = keras.layers.Flatten()(x)
    x = keras.layers.Concatenate()([what, where])
    return keras.Model(pixels, x, name="scratch_cnn")


@register_text_backbone("scratch_text")
def scratch_text(config: BackboneConfig) -> keras.Model:
    """Embedding -> two 1-D convolutions (3-word windows bind 'red' to 'circle') -> max pool."""
    ids = keras.Input((config.max_tokens,), dtype="int32", name="ids")
    x = keras.layers.Embedding(config.vocab_size, 64)(ids)
    x = keras.layers.Conv1D(128, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv1D(128, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalMaxPooling1D()(x)
    return keras.Model(ids, x, name="scratch_text")
