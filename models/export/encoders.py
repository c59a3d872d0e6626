"""Export the trained encoders: ``.keras`` files (Beam RunInference) and TFLite embedders.

TFLite models have a fixed batch of 1 (the Task Library feeds one image / one text), builtin ops
only (no Flex: the Task Library has no Flex delegate). Metadata is written by
``models.export.metadata`` in a TensorFlow-free process via ``models.compat.call_tflite``.

Text embedders come in two kinds, chosen by the text encoder's inputs: one ``ids`` input
(RegexTokenizer metadata, our own vocab) or, for a BERT-like backbone such as ``minilm``, three
inputs ``ids`` / ``mask`` / ``segment_ids`` of length ``config.max_tokens`` (BertTokenizer
metadata; the vocab passed must then be the backbone's WordPiece vocab.txt).

``quantize="int8"`` is dynamic-range quantization (``tf.lite.Optimize.DEFAULT``): int8 weights,
float activations, about 4x smaller (MiniLM: 90 -> 23 MB). Dense weights are channel-equalized
first so that the per-tensor scales the Task Library's runtime accepts lose no more than
per-channel ones (models/export/quantization.py); benchmarks/text_embedder_benchmark.py measures
speed and the cosine cost against the float Keras encoder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import keras
import tensorflow as tf

from beamlens.models.export import model_folder
from beamlens.models import compat
from beamlens.models.export import metadata as tflite_metadata
from beamlens.models.export import quantization as tflite_quantization
from beamlens.models.encoders.bert_tokenizer import is_wordpiece_vocab
from beamlens.models.encoders.towers import BERT_INPUTS, EncoderConfig, is_bert_text_model
from beamlens.models.errors import BeamlensError

QUANTIZATIONS = (None, "int8")
AUTO = "auto"  # the text backbone's measured best: TEXT_QUANTIZATION_DEFAULTS, else float
# minilm_static int8: 35 -> 9 MB and no slower than float (benchmarks/text_query_speed.py);
# MiniLM stays float by default (its int8 cost: see pipelines/export_text_embedder.py)
TEXT_QUANTIZATION_DEFAULTS = {"minilm_static": "int8"}


def text_quantization(requested: str | None, text_backbone: str | None) -> str | None:
    """``requested`` with ``"auto"`` resolved for ``text_backbone`` (None = float)."""
    if requested == AUTO:
        return TEXT_QUANTIZATION_DEFAULTS.get(text_backbone or "")
    return None if requested == "none" else requested


def to_tflite(model: keras.Model, spec: tf.TensorSpec | Sequence[tf.TensorSpec], path: str,
              quantize: str | None = None) -> None:
    """Convert ``model`` for the given input spec(s); several specs feed a dict-input model by name."""
    if quantize not in QUANTIZATIONS:
        raise BeamlensError(f"unknown quantization {quantize!r} (choose from: none, int8)")
    specs = [spec] if isinstance(spec, tf.TensorSpec) else list(spec)
    if len(specs) == 1:
        function = tf.function(lambda x: model(x, training=False))
    else:
        names = [s.name for s in specs]
        function = tf.function(lambda *xs: model(dict(zip(names, xs)), training=False))
    concrete = function.get_concrete_function(*specs)
    # Freeze: left as resource variables, the weights become VAR_HANDLE ops that the Task Library
    # leaves uninitialised (the embedder returned NaN).
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2  # noqa: PLC0415

    frozen = convert_variables_to_constants_v2(concrete)
    if quantize == "int8":
        # Per-channel accuracy with op versions the Task Library runs: see models/export/quantization.py.
        frozen = tflite_quantization.equalized_function(frozen)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "int8":
        tflite_quantization.configure_int8(converter)
    with open(path, "wb") as stream:
        stream.write(converter.convert())


def bert_input_specs(max_tokens: int, dynamic_length: bool = False) -> list[tf.TensorSpec]:
    """Batch 1. Fixed length: the Task Library BertPreprocessor pads (and cuts) to ``max_tokens``.
    Dynamic length (``[1, None]``): it resizes the inputs to each query's own token count."""
    return [tf.TensorSpec([1, None if dynamic_length else max_tokens], tf.int32, name=name) for name in BERT_INPUTS]


def export_text_embedder(text: keras.Model, max_tokens: int, vocab_path: str, out_path: str,
                         quantize: str | None = None, dynamic_length: bool = False) -> str:
    """The text encoder as a Task Library text embedder (tokenizer metadata, vocab packed).

    ``dynamic_length`` (BERT-like encoders only): no padding to ``max_tokens`` on the device, so a
    short query costs less (MiniLM, COCO captions: CPU p50 22 ms instead of 30 ms at 32 tokens),
    and long queries are not cut; the vectors equal the padded model's for queries that fit."""
    raw = out_path + ".raw.tflite"
    try:
        if is_bert_text_model(text):
            if not is_wordpiece_vocab(vocab_path):
                raise BeamlensError(
                    f"{vocab_path} is not a WordPiece vocab.txt: a BERT-like text encoder ({text.name}) is "
                    "exported with its backbone's vocab (for minilm: models.encoders.backbones.minilm.vocab_path())")
            to_tflite(text, bert_input_specs(max_tokens, dynamic_length), raw, quantize)
            compat.call_tflite(tflite_metadata.write_bert_text_embedder_metadata, raw, vocab_path, out_path)
        else:
            if dynamic_length:
                raise BeamlensError("dynamic_length needs a BERT-like text encoder: the Task Library's "
                                    "RegexTokenizer always pads to the input length")
            to_tflite(text, tf.TensorSpec([1, max_tokens], tf.int32, name="ids"), raw, quantize)
            compat.call_tflite(tflite_metadata.write_text_embedder_metadata, raw, vocab_path, out_path)
    finally:
        if os.path.exists(raw):
            os.remove(raw)
    return out_path


def export_image_embedder(vision: keras.Model, image_size: int, out_path: str,
                          name: str = "beamlens_image_encoder", quantize: str | None = None) -> str:
    """The vision encoder as a Task Library image embedder ``.tflite`` (with metadata): the
    ImageSearcher's model, and the CPU engine ``beamlens embed`` runs by default (transforms/inference.py).
    Float by default: ``quantize="int8"`` (dynamic range) moved vectors below the 0.999 cosine bar
    (benchmarks/encoder_engines.py measures it)."""
    raw = out_path + ".raw.tflite"
    try:
        to_tflite(vision, tf.TensorSpec([1, image_size, image_size, 3], tf.float32, name="image"), raw, quantize)
        compat.call_tflite(tflite_metadata.write_image_embedder_metadata, raw, out_path, name=name)
    finally:
        if os.path.exists(raw):
            os.remove(raw)
    return out_path


def export_encoders(vision: keras.Model, text: keras.Model, config: EncoderConfig, vocab_path: str, out_dir: str,
                    text_quantize: str | None = AUTO) -> dict[str, str]:
    """Write vision/text .keras and image/text embedder .tflite (with metadata) into out_dir.

    ``text_quantize="int8"`` quantizes the text embedder (dynamic range; see the module doc),
    ``"auto"`` (default) does what suits ``config.text_backbone``, None keeps it float."""
    paths = {
        "vision_keras": os.path.join(out_dir, model_folder.VISION_ENCODER),
        "text_keras": os.path.join(out_dir, model_folder.TEXT_ENCODER),
        "image_tflite": os.path.join(out_dir, model_folder.IMAGE_EMBEDDER),
        "text_tflite": os.path.join(out_dir, model_folder.TEXT_EMBEDDER),
    }
    vision.save(paths["vision_keras"])
    text.save(paths["text_keras"])
    export_image_embedder(vision, config.image_size, paths["image_tflite"])
    export_text_embedder(text, config.max_tokens, vocab_path, paths["text_tflite"],
                         text_quantization(text_quantize, config.text_backbone))
    return paths


@dataclass
class TextSource:
    """What is exported: the Keras text encoder, its length, its vocab and the backbone it is built on."""

    model: object
    max_tokens: int
    vocab: str
    text_backbone: str | None  # decides what --quantize auto means


def trained_text_source(model_dir: str) -> TextSource:
    """The text encoder of a ``beamlens train`` (or ``export-pretrained``) folder, checked and loaded."""
    from beamlens.models.encoders.backbones import _load_all  # noqa: PLC0415

    config = model_folder.read_config(model_dir, (model_folder.TEXT_ENCODER, model_folder.VOCAB))
    _load_all()  # registers custom layers a backbone may use
    model = keras.saving.load_model(os.path.join(model_dir, model_folder.TEXT_ENCODER))
    return TextSource(model, int(config["max_tokens"]), os.path.join(model_dir, model_folder.VOCAB),
                      config.get("text_backbone"))


def pretrained_text_source(name: str, weights: str | None, max_tokens: int) -> TextSource:
    """A pretrained text backbone alone, as an exportable text encoder."""
    from beamlens.models.encoders.backbones import BackboneConfig, build_text_backbone  # noqa: PLC0415
    from beamlens.models.encoders.bert_tokenizer import backbone_vocab_path  # noqa: PLC0415

    model = build_text_backbone(BackboneConfig(name, max_tokens=max_tokens, weights=weights))
    return TextSource(model, max_tokens, backbone_vocab_path(name, weights), name)
