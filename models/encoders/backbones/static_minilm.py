"""``minilm_static``: the phone-grade student of MiniLM as a text backbone (models/encoders/distillation).

It takes MiniLM's inputs (``ids`` / ``mask`` / ``segment_ids``, the same WordPiece vocab.txt) and
answers in MiniLM's 384-d sentence space, so a head fitted on MiniLM features, the caption-free
class vectors included, works on it unchanged; on the device it is a table lookup, one
convolution and two small matrix products instead of six transformer layers.

``config.weights``: a student file (``.npz`` from ``models.encoders.distillation.recipe``); without
one, the default recipe's student is distilled from the installed MiniLM on first use and cached.
"""

from __future__ import annotations

import keras

from beamlens.models.encoders.backbones import BackboneConfig, register_text_backbone, require_path

NAME, TEACHER = "minilm_static", "minilm"


@register_text_backbone(NAME, tokenizer="bert", pretrained=True)
def minilm_static(config: BackboneConfig) -> keras.Model:
    from beamlens.models.encoders.distillation import recipe  # noqa: PLC0415
    from beamlens.models.encoders.distillation.student import build_student, set_layer_weights  # noqa: PLC0415

    path = require_path(config.weights, "text-student weights") if config.weights else recipe.student_weights()
    weights = recipe.load_student_weights(path)
    vocab_size, width = weights["token_vectors"].shape
    model = build_student(int(vocab_size), config.max_tokens, int(width), int(weights["to_teacher/kernel"].shape[1]), NAME)
    set_layer_weights(model, weights)
    model.teacher = TEACHER  # caption_free.class_vectors embeds its prompts with the teacher
    return model
