"""Two small real searchers over real photos, for ``beamlens serve`` tests and its load benchmark.

* text -> image: the Task Library test text embedder (RegexTokenizer) with a float index over
  the L2-normalised embeddings of one caption per photo, so a caption as the query finds its
  own photo first (cosine 1 with itself);
* image -> image: the shared MobileNetV3 image embedder with a float index over the photos'
  embeddings, so uploading a photo finds that photo first.

Items carry the JSON metadata ``beamlens build-searcher`` writes (id, uri, captions), and the
uris are the real photo files under ../shared/testdata: the server reads and serves them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.conftest import TESTDATA, TFLITE_SUPPORT_DATA

REGEX_EMBEDDER = str(TFLITE_SUPPORT_DATA / "regex_one_embedding_with_metadata.tflite")
IMAGE_EMBEDDER = str(TESTDATA / "models" / "mobilenet_v3_small_075_224_embedder.tflite")

# photo -> caption; every word is in the regex tokenizer's vocabulary (no <UNKNOWN>).
CAPTIONS: dict[str, str] = {
    "tflite-support/burger.jpg": "food on a table",
    "tflite-support/cats_and_dogs.jpg": "cats and dogs together",
    "tflite-support/sparrow.png": "a small bird",
    "tflite-support/multi_objects.jpg": "many objects",
    "skimage/rocket.jpg": "a rocket going to the moon",
    "skimage/coffee.png": "a cup of coffee",
    "skimage/horse.png": "a horse",
    "skimage/astronaut.png": "an astronaut",
    "skimage/motorcycle_left.png": "a red motorcycle",
    "skimage/chelsea.png": "a cat",
}


@dataclass(frozen=True)
class ServeSearchers:
    text_searcher: str
    image_searcher: str
    photos: dict[str, Path]  # image id -> photo file
    captions: dict[str, str]  # image id -> caption


def image_id(relative: str) -> str:
    return Path(relative).stem


def build_serve_searchers(folder: Path) -> ServeSearchers:
    """Write ``text_searcher.tflite`` and ``image_searcher.tflite`` into ``folder`` (a few seconds)."""
    from models import compat
    from models.search_api import embed_text
    from tests import search_fixtures

    photos = {image_id(rel): TESTDATA / rel for rel in CAPTIONS}
    captions = {image_id(rel): text for rel, text in CAPTIONS.items()}
    ids = list(photos)
    metadata = [json.dumps({"id": i, "uri": str(photos[i]), "captions": [captions[i]]}) for i in ids]
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "text_vectors.npy", embed_text(REGEX_EMBEDDER, [captions[i] for i in ids], l2_normalize=True))
    text_path = search_fixtures.build_float_searcher(
        REGEX_EMBEDDER, str(folder / "text_vectors.npy"), metadata, str(folder / "text_searcher.tflite"))
    vectors = compat.call_tflite(search_fixtures.embed_images, IMAGE_EMBEDDER, [str(photos[i]) for i in ids])
    np.save(folder / "image_vectors.npy", vectors)
    image_path = search_fixtures.build_float_searcher(
        IMAGE_EMBEDDER, str(folder / "image_vectors.npy"), metadata, str(folder / "image_searcher.tflite"))
    return ServeSearchers(text_path, image_path, photos, captions)
