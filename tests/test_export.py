"""The exported TFLite embedders, read by the real Task Library, agree with the Keras encoders."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from beamlens.models import compat
from beamlens.models.export import metadata as tflite_metadata
from beamlens.models.corpora.coco import load_coco_captions
from beamlens.models.encoders.preprocessing import preprocess_image_bytes
from beamlens.models.encoders.regex_tokenizer import Vocabulary
from tests.encoder_helpers import trained_model


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_one_train_run_writes_every_artifact(tmp_path_factory):
    model_dir, _ = trained_model(tmp_path_factory)
    names = sorted(p.name for p in model_dir.iterdir())
    assert names == sorted(["vision_encoder.keras", "text_encoder.keras", "image_embedder.tflite", "text_embedder.tflite",
                            "vocab.txt", "encoder_config.json", "history.json", "training_curves.png"])
    config = json.loads((model_dir / "encoder_config.json").read_text())
    assert config["image_size"] == 32 and config["embedding_dim"] == 128 and config["max_tokens"] == 16
    assert config["temperature"] == 0.05 and config["image_backbone"] == "scratch_cnn"
    assert set(config["fingerprints"]) == {"vision_keras", "text_keras", "image_tflite", "text_tflite"}
    assert len(json.loads((model_dir / "history.json").read_text())["loss"]) == 1


def test_text_embedder_agrees_with_keras_on_50_captions(tmp_path_factory):
    import keras

    model_dir, corpus = trained_model(tmp_path_factory)
    captions = [c for im in load_coco_captions(str(corpus / "annotations" / "captions_train.json")) for c in im.captions]
    captions = (captions + [c.upper() for c in captions])[:48] + ["A Red thing, LEFT of nothing?", "zebra unicorn"]
    assert len(captions) == 50
    vocab = Vocabulary.load(str(model_dir / "vocab.txt"))
    keras_vectors = np.asarray(keras.saving.load_model(model_dir / "text_encoder.keras").predict(vocab.encode_batch(captions, 16), verbose=0))
    task_vectors = compat.call_tflite(tflite_metadata.text_embeddings, str(model_dir / "text_embedder.tflite"), captions)
    cosines = _cosines(keras_vectors, task_vectors)
    assert cosines.min() >= 0.99, cosines.min()


def test_image_embedder_agrees_with_keras_on_20_images(tmp_path_factory, tmp_path):
    import keras

    model_dir, corpus = trained_model(tmp_path_factory)
    vision = keras.saving.load_model(model_dir / "vision_encoder.keras")
    photos = sorted((corpus / "train").glob("*.jpg"))[:20]
    assert len(photos) == 20
    # Pre-resized to the model size (lossless PNG): the Task Library then feeds the same pixels.
    pngs, pixels = [], []
    for i, photo in enumerate(photos):
        array = preprocess_image_bytes(photo.read_bytes(), 32)
        png = tmp_path / f"{i}.png"
        Image.fromarray(array.astype(np.uint8)).save(png)
        pngs.append(str(png))
        pixels.append(array)
    keras_vectors = np.asarray(vision.predict(np.stack(pixels), verbose=0))
    task_vectors = compat.call_tflite(tflite_metadata.image_embeddings, str(model_dir / "image_embedder.tflite"), pngs)
    assert _cosines(keras_vectors, task_vectors).min() >= 0.99
    # Raw photos: the Task Library resizes with its own filter, so agreement is looser; report it.
    raw = compat.call_tflite(tflite_metadata.image_embeddings, str(model_dir / "image_embedder.tflite"), [str(p) for p in photos])
    keras_raw = np.asarray(vision.predict(np.stack([preprocess_image_bytes(p.read_bytes(), 32) for p in photos]), verbose=0))
    raw_cos = _cosines(keras_raw, raw)
    print(f"raw-photo agreement: min cosine {raw_cos.min():.4f}, mean {raw_cos.mean():.4f}")
    assert raw_cos.mean() > 0.8
