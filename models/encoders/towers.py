"""Encoders = backbone + projection head + L2 normalisation (the reference dual-encoder design).

The projection head follows the Keras "natural language image search" example: a Dense projection
to ``projection_dims``, then ``num_projection_layers`` blocks of GELU -> Dense -> Dropout ->
residual Add -> LayerNormalization. We L2-normalise the output so that dot product = cosine,
which is what the ScaNN index and the Task Library searcher score with.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import keras

from beamlens.models.encoders.backbones import BackboneConfig, build_image_backbone, build_text_backbone, has_default_weights
from beamlens.models.encoders.preprocessing import DEFAULT_IMAGE_SIZE
from beamlens.models.encoders.regex_tokenizer import DEFAULT_MAX_TOKENS

BERT_INPUTS = ("ids", "mask", "segment_ids")  # models.encoders.bert_tokenizer.INPUT_NAMES

FROM_SCRATCH = ("scratch_cnn", "scratch_text")


@dataclass
class EncoderConfig:
    """Everything needed to rebuild (and to serve) the two encoders; saved as encoder_config.json."""

    image_size: int = DEFAULT_IMAGE_SIZE
    embedding_dim: int = 128
    max_tokens: int = DEFAULT_MAX_TOKENS
    vocab_size: int = 1000
    num_projection_layers: int = 1
    dropout: float = 0.1
    temperature: float = 0.05
    target_identity_weight: float = 1.0  # 0 = the pure reference targets (see dual_encoder.make_loss)
    image_backbone: str = "scratch_cnn"
    text_backbone: str = "scratch_text"
    image_backbone_weights: str | None = None
    text_backbone_weights: str | None = None
    trainable_backbones: bool = False
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "EncoderConfig":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def projection_head(x, projection_dims: int, num_projection_layers: int, dropout: float, prefix: str):
    projected = keras.layers.Dense(projection_dims, name=f"{prefix}_projection")(x)
    for i in range(num_projection_layers):
        x = keras.layers.Activation("gelu", name=f"{prefix}_gelu_{i}")(projected)
        x = keras.layers.Dense(projection_dims, name=f"{prefix}_dense_{i}")(x)
        x = keras.layers.Dropout(dropout, name=f"{prefix}_dropout_{i}")(x)
        x = keras.layers.Add(name=f"{prefix}_add_{i}")([projected, x])
        projected = keras.layers.LayerNormalization(name=f"{prefix}_norm_{i}")(x)
    return keras.layers.UnitNormalization(name=f"{prefix}_l2")(projected)


def _trainable(name: str, weights: str | None, requested: bool) -> bool:
    # A from-scratch or weight-less backbone is random: freezing it would freeze noise.
    return requested or name in FROM_SCRATCH or (weights is None and ":" not in name and not has_default_weights(name))


def default_image_size(image_backbone: str) -> int:
    """The input size a backbone was pretrained at (EfficientNet-Lite0: 224), else the default 64."""
    if image_backbone == "efficientnet_lite0":
        from beamlens.models.encoders.backbones.efficientnet_lite import PRETRAINED_SIZE  # noqa: PLC0415

        return PRETRAINED_SIZE
    return DEFAULT_IMAGE_SIZE


def trainable_backbones(config: EncoderConfig) -> tuple[bool, bool]:
    """(image backbone trains, text backbone trains) for this config."""
    return (_trainable(config.image_backbone, config.image_backbone_weights, config.trainable_backbones),
            _trainable(config.text_backbone, config.text_backbone_weights, config.trainable_backbones))


def build_vision_encoder(config: EncoderConfig) -> keras.Model:
    """float32 [None, S, S, 3] raw 0..255 pixels -> [None, D] unit vectors."""
    backbone = build_image_backbone(BackboneConfig(
        name=config.image_backbone, image_size=config.image_size, weights=config.image_backbone_weights,
        trainable=trainable_backbones(config)[0],
        options=dict(config.extra.get("image_backbone_options", {}))))
    pixels = keras.Input((config.image_size, config.image_size, 3), dtype="float32", name="image")
    out = projection_head(backbone(pixels), config.embedding_dim, config.num_projection_layers, config.dropout, "vision")
    return keras.Model(pixels, out, name="vision_encoder")


def build_text_encoder(config: EncoderConfig) -> keras.Model:
    """int32 [None, L] token ids (models.encoders.regex_tokenizer) -> [None, D] unit vectors.

    A BERT-like backbone (``tokenizer="bert"`` in the registry, e.g. ``minilm``) makes a
    three-input encoder instead: ``ids``, ``mask``, ``segment_ids`` from models.encoders.bert_tokenizer,
    the tensor names the Task Library's BertTokenizer metadata feeds.
    """
    backbone = build_text_backbone(BackboneConfig(
        name=config.text_backbone, max_tokens=config.max_tokens, vocab_size=config.vocab_size,
        weights=config.text_backbone_weights,
        trainable=trainable_backbones(config)[1],
        options=dict(config.extra.get("text_backbone_options", {}))))
    if getattr(backbone, "tokenizer", "regex") == "bert":
        inputs = {name: keras.Input((config.max_tokens,), dtype="int32", name=name) for name in BERT_INPUTS}
    else:
        inputs = keras.Input((config.max_tokens,), dtype="int32", name="ids")
    out = projection_head(backbone(inputs), config.embedding_dim, config.num_projection_layers, config.dropout, "text")
    return keras.Model(inputs, out, name="text_encoder")


def is_bert_text_model(model: keras.Model) -> bool:
    """True for a text encoder/backbone fed ids + mask + segment_ids (a saved one included)."""
    return set(BERT_INPUTS) <= {getattr(t, "name", "").split(":")[0] for t in model.inputs}
