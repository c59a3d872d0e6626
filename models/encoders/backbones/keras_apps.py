"""Keras applications as image backbones, with weights from a LOCAL file (no downloads here).

``weights=None`` builds the architecture; ``config.weights`` (a ``.weights.h5`` / ``.h5`` file of
the same architecture without top, e.g. from ``keras.applications.X(include_top=False)``) is then
loaded. Without a weights file the backbone is random and therefore trained (a frozen random
network would be useless). Each application normalises its 0..255 input itself.
"""

from __future__ import annotations

import keras

from beamlens.models.encoders.backbones import BackboneConfig, register_image_backbone, require_path
from beamlens.models.errors import BeamlensError


def _application(config: BackboneConfig, factory, **kwargs) -> keras.Model:
    weights = require_path(config.weights, f"{config.name} weights file") if config.weights else None
    shape = (config.image_size, config.image_size, 3)
    pixels = keras.Input(shape, dtype="float32", name="image")
    base = factory(include_top=False, weights=None, input_shape=shape, pooling="avg", **kwargs)
    if weights:
        try:
            base.load_weights(weights)
        except Exception as error:  # noqa: BLE001 (any loader failure is the user's file)
            raise BeamlensError(f"cannot load {config.name} weights from {weights}: {error}") from None
    features = base(pixels)
    return keras.Model(pixels, features, name=config.name)


@register_image_backbone("mobilenet_v3_small")
def mobilenet_v3_small(config: BackboneConfig) -> keras.Model:
    alpha = float(config.options.get("alpha", 1.0))
    return _application(config, keras.applications.MobileNetV3Small, alpha=alpha, include_preprocessing=True)


@register_image_backbone("mobilenet_v3_large")
def mobilenet_v3_large(config: BackboneConfig) -> keras.Model:
    return _application(config, keras.applications.MobileNetV3Large, include_preprocessing=True)


@register_image_backbone("efficientnetv2_b0")
def efficientnetv2_b0(config: BackboneConfig) -> keras.Model:
    return _application(config, keras.applications.EfficientNetV2B0, include_preprocessing=True)


@register_image_backbone("xception")
def xception(config: BackboneConfig) -> keras.Model:
    def factory(**kwargs):
        shape = kwargs["input_shape"]
        inner = keras.applications.Xception(**kwargs)
        pixels = keras.Input(shape)
        # Xception expects -1..1 (keras.applications.xception.preprocess_input).
        scaled = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(pixels)
        model = keras.Model(pixels, inner(scaled))
        model.load_weights = inner.load_weights  # weights files are of the bare application
        return model
    return _application(config, factory)
