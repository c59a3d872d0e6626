"""The main chain in one test: train -> embed (Beam, RunInference) -> build-searcher -> TextSearcher.

A trained ``vision_encoder.keras`` embeds the corpus (its training split) through ``beamlens embed``; the searcher is
built with the same training run's ``text_embedder.tflite``; each caption is then searched
through the real Task Library ``TextSearcher`` and its answer compared with exact numpy search:
the TextEmbedder's query vector against ``model.predict`` vectors of the images. Scoring is exact
(brute force over every partition), so the two rankings must agree, and a caption must find its
own image as often through the device searcher as through numpy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from beamlens.models.compat import call_tflite
from beamlens.models.encoders.preprocessing import preprocess_image_bytes
from beamlens.pipelines import cli
from tests import encoder_helpers, searcher_tasklib_helpers
from tests import embed_helpers as h


def _train_split(corpus: Path) -> tuple[Path, Path, dict]:
    captions = corpus / "annotations" / "captions_train.json"
    return captions, corpus / "train", json.loads(captions.read_text())


def _keras_vectors(model_dir: Path, images: Path, doc: dict) -> tuple[list[str], np.ndarray]:
    import keras  # noqa: PLC0415

    model = keras.models.load_model(model_dir / "vision_encoder.keras")
    size = int(model.input_shape[1])
    ids = [str(image["id"]) for image in doc["images"]]
    pixels = np.stack([preprocess_image_bytes((images / image["file_name"]).read_bytes(), size) for image in doc["images"]])
    return ids, model.predict(pixels, verbose=0)


def test_a_trained_model_through_embed_and_the_device_searcher_matches_exact_search(tmp_path_factory, tmp_path):
    model_dir, corpus = encoder_helpers.trained_model(tmp_path_factory)
    captions, images, doc = _train_split(corpus)
    shards, searchers = tmp_path / "shards", tmp_path / "searchers"
    assert cli.main(["embed", "--captions", str(captions), "--images", str(images), "--model",
                     str(model_dir / "vision_encoder.keras"), "--output", str(shards), "--num-shards", "2",
                     "--runner", "FnApiRunner"]) == 0
    assert cli.main(["build-searcher", "--shards", str(shards), "--out", str(searchers), "--text-embedder",
                     str(model_dir / "text_embedder.tflite"), "--score", "brute_force", "--num-leaves", "2",
                     "--leaves-to-search", "2"]) == 0

    ids, keras_vectors = _keras_vectors(model_dir, images, doc)
    stored = h.read_shards(shards)
    assert sorted(stored) == sorted(ids)  # embed wrote every image of the split
    # the model folder's .tflite twin ran (--engine auto), with the Keras encoder's vectors
    assert json.loads((shards / "manifest.json").read_text())["extra"]["inference_model"] == "image_embedder.tflite"
    np.testing.assert_allclose(np.stack([stored[i].embedding for i in ids]), keras_vectors, atol=1e-5, rtol=0)

    owner = {a["caption"]: str(a["image_id"]) for a in doc["annotations"]}
    queries = sorted(owner)
    found = call_tflite(searcher_tasklib_helpers.text_search_many, str(searchers / "text_searcher.tflite"), queries, 5)
    query_vectors = call_tflite(searcher_tasklib_helpers.text_embed, str(model_dir / "text_embedder.tflite"), queries)
    scores = query_vectors @ keras_vectors.T
    device_hits = exact_hits = 0
    for query, neighbours, row in zip(queries, found, scores):
        device = [json.loads(meta)["id"] for meta, _ in neighbours]
        exact = [ids[j] for j in np.argsort(-row, kind="stable")[:5]]
        distances = [d for _, d in neighbours]
        np.testing.assert_allclose(distances, -np.sort(row)[::-1][:5], atol=2e-3)  # dot product, negated
        gap = np.sort(row)[::-1]
        clear = [k for k in range(4) if gap[k] - gap[k + 1] > 2e-3]  # ranks not decided by a near-tie
        assert all(device[k] == exact[k] for k in clear), (query, device, exact)
        device_hits += owner[query] in device
        exact_hits += owner[query] in exact
    # The shared model trained one epoch (it keeps the encoder tests fast), so how often a caption
    # finds its image is near chance; what this test pins is that the device answers as numpy does.
    assert device_hits == exact_hits and device_hits > 0
