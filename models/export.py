"""Export the trained encoders: ``.keras`` files (Beam RunInference) and TFLite embedders.

TFLite models have a fixed batch of 1 (the Task Library feeds one image / one text), builtin ops
only (no Flex: the Task Library has no Flex delegate). Metadata is written by
``models.tflite_metadata`` in a TensorFlow-free process via ``models.compat.call_tflite``.
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from models import compat, tflite_metadata
from models.encoders import EncoderConfig


def to_tflite(model: keras.Model, spec: tf.TensorSpec, path: str) -> None:
    function = tf.function(lambda x: model(x, training=False))
    concrete = function.get_concrete_function(spec)
    # Freeze: left as resource variables, the weights become VAR_HANDLE ops that the Task Library
    # leaves uninitialised (the embedder returned NaN).
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2  # noqa: PLC0415

    frozen = convert_variables_to_constants_v2(concrete)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with open(path, "wb") as stream:
        stream.write(converter.convert())


def export_encoders(vision: keras.Model, text: keras.Model, config: EncoderConfig, vocab_path: str, out_dir: str) -> dict[str, str]:
    """Write vision/text .keras and image/text embedder .tflite (with metadata) into out_dir."""
    paths = {
        "vision_keras": os.path.join(out_dir, "vision_encoder.keras"),
        "text_keras": os.path.join(out_dir, "text_encoder.keras"),
        "image_tflite": os.path.join(out_dir, "image_embedder.tflite"),
        "text_tflite": os.path.join(out_dir, "text_embedder.tflite"),
    }
    vision.save(paths["vision_keras"])
    text.save(paths["text_keras"])
    raw_image = os.path.join(out_dir, "image_raw.tflite")
    raw_text = os.path.join(out_dir, "text_raw.tflite")
    size = config.image_size
    to_tflite(vision, tf.TensorSpec([1, size, size, 3], tf.float32, name="image"), raw_image)
    to_tflite(text, tf.TensorSpec([1, config.max_tokens], tf.int32, name="ids"), raw_text)
    compat.call_tflite(tflite_metadata.write_image_embedder_metadata, raw_image, paths["image_tflite"])
    compat.call_tflite(tflite_metadata.write_text_embedder_metadata, raw_text, vocab_path, paths["text_tflite"])
    os.remove(raw_image)
    os.remove(raw_text)
    return paths
