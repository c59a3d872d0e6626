"""TF Hub handles and local SavedModel directories as backbones (``hub:HANDLE``, ``savedmodel:PATH``).

Keras 3 cannot hold a ``tensorflow_hub.KerasLayer`` (a tf-keras layer), so :class:`SavedModelLayer`
(a small Keras 3 layer) loads the SavedModel with ``tf.saved_model.load`` and calls it. Hub handles
are resolved to a local directory with ``tensorflow_hub.resolve`` (its cache / download rules); a
local directory that does not exist is a ``BeamlensError``. The SavedModel must be callable on the
input the registry contract gives (raw 0..255 pixels or int32 ids) and return ``[B, F]``; a model
that wants other inputs should be wrapped by the user first. The saved ``.keras`` encoder refers
to the SavedModel by path, so that directory must stay where it is.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from beamlens.models.encoders.backbones import BackboneConfig, register_image_backbone, register_text_backbone, require_path
from beamlens.models.errors import BeamlensError


@keras.saving.register_keras_serializable(package="beamlens")
class SavedModelLayer(keras.layers.Layer):
    """Calls a TF2 SavedModel's ``__call__`` (or its serving signature) inside a Keras 3 model."""

    def __init__(self, path: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.savedmodel_path = path
        self._loaded = tf.saved_model.load(path)
        self._variables = list(getattr(self._loaded, "variables", []))

    def call(self, inputs):
        if callable(self._loaded):
            outputs = self._loaded(inputs)
        else:
            outputs = self._loaded.signatures["serving_default"](inputs)
        if isinstance(outputs, dict):
            outputs = next(iter(outputs.values()))
        return outputs

    def get_config(self) -> dict:
        return {**super().get_config(), "path": self.savedmodel_path}


def _resolve(config: BackboneConfig) -> str:
    source = config.source or ""
    if config.name.startswith("hub:"):
        try:
            from beamlens.models import compat  # noqa: PLC0415

            compat.ensure_pkg_resources()
            import tensorflow_hub as hub  # noqa: PLC0415

            return hub.resolve(source)
        except Exception as error:  # noqa: BLE001
            raise BeamlensError(f"cannot resolve TF Hub handle {source!r}: {error}") from None
    return require_path(source, "SavedModel directory")


def _wrap(config: BackboneConfig, inputs: keras.KerasTensor) -> keras.Model:
    layer = SavedModelLayer(_resolve(config), name="savedmodel", trainable=config.trainable)
    return keras.Model(inputs, layer(inputs), name="savedmodel_backbone")


def _image(config: BackboneConfig) -> keras.Model:
    return _wrap(config, keras.Input((config.image_size, config.image_size, 3), dtype="float32", name="image"))


def _text(config: BackboneConfig) -> keras.Model:
    return _wrap(config, keras.Input((config.max_tokens,), dtype="int32", name="ids"))


for _prefix in ("hub:", "savedmodel:"):
    register_image_backbone(_prefix)(_image)
    register_text_backbone(_prefix)(_text)
