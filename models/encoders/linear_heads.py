"""Linear heads with input dropout: the heads ``beamlens train`` fits on thousands of captioned photos.

Each tower is a frozen pretrained backbone, then ``Dropout -> Dense(D) -> L2 normalise``:

* vision: EfficientNet-Lite0 with multi-scale pooling (``[B, 1904]``: the pooled head plus the pooled
  last three stages, models/encoders/backbones/efficientnet_lite.py), dropout 0.5;
* text: MiniLM's unit sentence vector (or its student's, the same space), dropout 0.2.

Why this and not the reference's GELU/residual/LayerNorm projection head or the caption-free
heads with a residual branch: on Flickr8k (6,000 training photos, 30,000 captions, scored on its
1,000 dev photos) every head without dropout on its *input* peaked within one or two passes and
then only overfit (dev R@10 0.565 to 0.60), whatever its width, temperature or loss (hard or the
reference's soft targets). Dropout on the frozen features is the regulariser that worked: dev
R@10 0.585 -> 0.655 with the same linear maps; wider MLP heads, a trainable temperature, a 256-d
space, random crops of the photos at feature time and fine-tuning the backbone's last 1x1
convolution each moved it by less than 0.01. Multi-scale pooling then added 0.015-0.025. The
measurements and commands are in README, "Training on real captions".

Dropout is the identity at inference: the exported encoders are backbone -> Dense -> normalise,
built-in layers only (RunInference, TFLite).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

HEAD_KIND = "linear"  # EncoderConfig.extra["head"]
IMAGE_POOLING = "multi_scale"
# How they are fitted (AdamW, symmetric hard-target loss at the config's temperature): measured on
# Flickr8k, batch 512 at 2e-3 beat 256 at 1e-3 by 0.006 dev R@10, 1024 at 3e-3 did not help.
LEARNING_RATE, BATCH_SIZE, WEIGHT_DECAY = 2e-3, 512, 1e-2


@dataclass(frozen=True)
class LinearHeads:
    """The recipe's numbers, recorded in encoder_config.json under ``extra["linear"]``."""

    image_dropout: float = 0.5
    text_dropout: float = 0.2

    @classmethod
    def from_extra(cls, extra: dict) -> "LinearHeads":
        known = {k: float(v) for k, v in dict(extra.get(HEAD_KIND, {})).items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def extra(self) -> dict:
        return {"head": HEAD_KIND, HEAD_KIND: asdict(self),
                "image_backbone_options": {"pooling": IMAGE_POOLING}}


def _head(features, dimension: int, dropout: float, prefix: str):
    import keras  # noqa: PLC0415

    x = keras.layers.Dropout(dropout, name=f"{prefix}_input_dropout")(features)
    x = keras.layers.Dense(dimension, name=f"{prefix}_projection")(x)
    return keras.layers.UnitNormalization(name=f"{prefix}_l2")(x)


def build_heads(image_width: int, text_width: int, dimension: int, recipe: LinearHeads, image_input: str,
                text_input: str):
    """(vision head, text head) on feature inputs; the layer names are those of :func:`build_encoders`."""
    import keras  # noqa: PLC0415

    image = keras.Input((image_width,), dtype="float32", name=image_input)
    text = keras.Input((text_width,), dtype="float32", name=text_input)
    return (keras.Model(image, _head(image, dimension, recipe.image_dropout, "vision"), name="vision_head"),
            keras.Model(text, _head(text, dimension, recipe.text_dropout, "text"), name="text_head"))


def build_encoders(vision_backbone, text_backbone, image_size: int, max_tokens: int, dimension: int,
                   recipe: LinearHeads):
    """(vision encoder, text encoder): raw 0..255 pixels / BERT inputs -> ``[None, D]`` unit vectors."""
    import keras  # noqa: PLC0415

    from beamlens.models.encoders.towers import BERT_INPUTS  # noqa: PLC0415

    pixels = keras.Input((image_size, image_size, 3), dtype="float32", name="image")
    vision = keras.Model(pixels, _head(vision_backbone(pixels), dimension, recipe.image_dropout, "vision"),
                         name="vision_encoder")
    inputs = {name: keras.Input((max_tokens,), dtype="int32", name=name) for name in BERT_INPUTS}
    text = keras.Model(inputs, _head(text_backbone(inputs), dimension, recipe.text_dropout, "text"), name="text_encoder")
    return vision, text
