"""Helpers for the embedding-pipeline tests: a tiny encoder, small COCO-layout corpora, shard reading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from tests.conftest import COCO_MINI, TFLITE_SUPPORT_DATA

TINY_SIZE = 32
TINY_DIM = 8


def build_tiny_encoder(path: Path, image_size: int = TINY_SIZE, dim: int = TINY_DIM, seed: int = 0) -> Path:
    """A few conv layers + GAP + Dense + L2 normalisation; raw 0..255 pixels in, like the real encoder."""
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(dim)(x)
    outputs = keras.layers.UnitNormalization()(x)
    keras.Model(inputs, outputs).save(path)
    return path


def coco_json(images: list[dict], captions: dict[int, list[str]]) -> dict:
    annotations = [
        {"id": 1000 + n, "image_id": image_id, "caption": text}
        for n, (image_id, text) in enumerate((i, t) for i, ts in captions.items() for t in ts)
    ]
    return {"info": {}, "licenses": [], "images": images, "annotations": annotations}


def _renumber(annotations: list[dict]) -> list[dict]:
    for n, a in enumerate(annotations):
        a["id"] = n + 1
    return annotations


def write_coco_corpus(root: Path, photos: list[Path], bad: bool = False) -> tuple[Path, Path, dict[str, str]]:
    """COCO layout under root: annotations/captions_test.json + test/. Returns (json, image dir, expected errors)."""
    images_dir = root / "test"
    images_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for n, photo in enumerate(photos, start=1):
        name = f"{n:012d}{photo.suffix}"
        shutil.copy(photo, images_dir / name)
        images.append({"id": n, "file_name": name, "width": 1, "height": 1})
        annotations.append({"image_id": n, "caption": f"photo number {n} ({photo.stem})"})
    expected_errors: dict[str, str] = {}
    if bad:
        base = len(photos) + 1
        data = photos[0].read_bytes()
        bad_files = {
            base: ("truncated.jpg", data[: len(data) // 3], "corrupt or truncated"),
            base + 1: ("empty.jpg", b"", "empty file"),
            base + 2: ("text.jpg", b"this is not an image, only words\n" * 20, "not an image"),
            base + 3: ("missing.jpg", None, "file not found"),
        }
        for image_id, (name, content, reason) in bad_files.items():
            if content is not None:
                (images_dir / name).write_bytes(content)
            images.append({"id": image_id, "file_name": name, "width": 1, "height": 1})
            annotations.append({"image_id": image_id, "caption": f"a bad file {name}"})
            expected_errors[str(image_id)] = reason
    (root / "annotations").mkdir(exist_ok=True)
    captions = root / "annotations" / "captions_test.json"
    captions.write_text(json.dumps({"info": {}, "licenses": [], "images": images, "annotations": _renumber(annotations)}))
    return captions, images_dir, expected_errors


def real_photos() -> list[Path]:
    return sorted(p for p in TFLITE_SUPPORT_DATA.iterdir() if p.suffix in (".jpg", ".png"))


def coco_mini_photos(count: int) -> list[Path]:
    return sorted((COCO_MINI / "val2017").glob("*.jpg"))[:count]


def read_shards(output: Path) -> dict[str, "EmbeddingRecord"]:  # noqa: F821
    """All records of the shards, by image id (asserts the reader-visible content)."""
    import tensorflow as tf  # noqa: PLC0415

    from beamlens.models.shards.records import decode_record  # noqa: PLC0415

    records = {}
    for shard in sorted(output.glob("embeddings-*-of-*.tfrecord")):
        for serialized in tf.data.TFRecordDataset(str(shard)):
            record = decode_record(serialized.numpy())
            records[record.image_id] = record
    return records


def read_errors(output: Path) -> dict[str, dict]:
    errors = {}
    for path in sorted(output.glob("errors-*-of-*.jsonl")):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            errors[entry["image_id"]] = entry
    return errors


def predict_reference(model_path: Path, image_paths: list[Path], image_size: int) -> np.ndarray:
    """model.predict on the shared preprocessing: what the pipeline must reproduce."""
    import keras  # noqa: PLC0415

    from beamlens.models.encoders.preprocessing import preprocess_image_bytes  # noqa: PLC0415

    model = keras.models.load_model(model_path)
    pixels = np.stack([preprocess_image_bytes(p.read_bytes(), image_size) for p in image_paths])
    return model.predict(pixels, verbose=0)


def install_coco_shim() -> None:
    """No-op kept for tests written before models/corpora/coco.py landed (tests/test_reindex.py calls it)."""
    import beamlens.models.corpora.coco  # noqa: F401, PLC0415


def deny_listing(monkeypatch, folder_name: str) -> None:
    """Folders named ``folder_name`` cannot be listed by the listing code, as a folder we may not read
    behaves (the suite may run as root, for whom chmod would not do it)."""
    import os  # noqa: PLC0415

    from beamlens.transforms import listing  # noqa: PLC0415

    real_scandir = os.scandir

    def scandir(path):
        if os.path.basename(path) == folder_name:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(listing.os, "scandir", scandir)
