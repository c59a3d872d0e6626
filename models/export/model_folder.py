"""The model folder: what ``train`` and ``export-pretrained`` write, named in one place.

    vision_encoder.keras    what ``embed`` / RunInference loads
    text_encoder.keras      the Keras text tower (for evaluate-encoder, re-export)
    image_embedder.tflite   Task Library ImageEmbedder (image -> image searcher)
    text_embedder.tflite    Task Library TextEmbedder (text -> image searcher)
    vocab.txt               the tokenizer's vocabulary (also packed into text_embedder.tflite)
    history.json            training curves and R@k before/after (train only)
    training_curves.png     the same, drawn (train only)
    encoder_config.json     written LAST: its presence means the folder is complete

Every command that reads or writes a model folder takes these names from here.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

from beamlens.models.errors import BeamlensError

VISION_ENCODER = "vision_encoder.keras"
TEXT_ENCODER = "text_encoder.keras"
IMAGE_EMBEDDER = "image_embedder.tflite"
TEXT_EMBEDDER = "text_embedder.tflite"
VOCAB = "vocab.txt"
HISTORY = "history.json"
CURVES = "training_curves.png"
CONFIG = "encoder_config.json"  # the completion marker

TRAINED = (VISION_ENCODER, TEXT_ENCODER, IMAGE_EMBEDDER, TEXT_EMBEDDER, VOCAB, HISTORY, CURVES, CONFIG)
CAPTION_FREE = (VISION_ENCODER, TEXT_ENCODER, IMAGE_EMBEDDER, TEXT_EMBEDDER, VOCAB, CONFIG)


def publish(work: str, out: str, names: Sequence[str]) -> None:
    """Move a finished folder's files from the scratch folder ``work`` (same filesystem) into ``out``.

    The completion marker goes first and comes back last, so a reader never takes a half-replaced
    folder for a finished one; each file arrives by an atomic rename."""
    os.makedirs(out, exist_ok=True)
    stale = os.path.join(out, CONFIG)
    if os.path.exists(stale):
        os.remove(stale)
    for name in [n for n in names if n != CONFIG] + ([CONFIG] if CONFIG in names else []):
        os.replace(os.path.join(work, name), os.path.join(out, name))


def read_config(model_dir: str, needed: Sequence[str]) -> dict[str, Any]:
    """``encoder_config.json`` of a model folder, once the files a reader ``needed`` are all there."""
    missing = [name for name in (CONFIG, *needed) if not os.path.isfile(os.path.join(model_dir, name))]
    if missing:
        raise BeamlensError(f"{model_dir} is not a trained model folder (missing {', '.join(dict.fromkeys(missing))}); "
                            "run beamlens train")
    with open(os.path.join(model_dir, CONFIG), encoding="utf-8") as stream:
        return json.load(stream)
