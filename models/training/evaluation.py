"""Retrieval quality of trained encoders, measured with the Keras models (exact search).

Metrics (all text -> image, each caption is one query, ranked against every image of its split
by dot product of unit vectors):
  * ``top_k_accuracy[k]``: the reference metric — fraction of captions whose OWN image is among
    the top k. Chance: k / N (N = images in the split).
  * ``attribute_recall[k]`` (default corpus only): fraction of captions whose top k contains at
    least one RELEVANT image, relevant meaning ``models.corpora.synthetic.caption_matches(caption mentions,
    image attributes)`` — the image shows everything the caption states (an image's own captions
    always match it). Chance: the expected value under a uniformly random ranking,
    1 - C(N - r, k) / C(N, k) averaged over queries (r = relevant images of the query).
  * ``attribute_precision[k]``: mean over captions of (relevant images in the top k) / k.
    Chance: mean r / N.
Relevance needs a caption-by-image check, so on large splits it uses at most
``max_attribute_queries`` captions (a fixed seeded sample; the count is in the report).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from beamlens.models.encoders.bert_tokenizer import BertTokenizer
from beamlens.models.io import files
from beamlens.models.knn import exact_knn
from beamlens.models.knn import top_k_accuracy as knn_top_k_accuracy
from beamlens.models.corpora.coco import CocoImage
from beamlens.models.encoders.preprocessing import preprocess_image_bytes
from beamlens.models.encoders.regex_tokenizer import Vocabulary

KS = (1, 5, 10, 100)


@dataclass
class EncoderModels:
    vision: object
    text: object
    vocab: Vocabulary | BertTokenizer  # models.encoders.bert_tokenizer.load_caption_tokenizer picks one
    image_size: int
    max_tokens: int


def load_encoder_models(model_dir: str) -> tuple[EncoderModels, dict]:
    """The Keras towers and tokenizer of a trained model folder, and its encoder_config.json."""
    import keras  # noqa: PLC0415

    from beamlens.models.encoders.backbones import _load_all  # noqa: PLC0415
    from beamlens.models.encoders.bert_tokenizer import load_caption_tokenizer  # noqa: PLC0415
    from beamlens.models.export import model_folder  # noqa: PLC0415

    config = model_folder.read_config(model_dir, (model_folder.VISION_ENCODER, model_folder.TEXT_ENCODER, model_folder.VOCAB))
    _load_all()  # registers custom layers a backbone may use
    return EncoderModels(
        vision=keras.saving.load_model(os.path.join(model_dir, model_folder.VISION_ENCODER)),
        text=keras.saving.load_model(os.path.join(model_dir, model_folder.TEXT_ENCODER)),
        vocab=load_caption_tokenizer(os.path.join(model_dir, model_folder.VOCAB), config.get("text_backbone")),
        image_size=int(config["image_size"]), max_tokens=int(config["max_tokens"])), config


def embed_images(models: EncoderModels, paths: list[str], batch_size: int = 128) -> np.ndarray:
    """Stream images through the vision encoder; only the N x D result is kept."""

    rows = []
    for start in range(0, len(paths), batch_size):
        batch = []
        for path in paths[start:start + batch_size]:
            batch.append(preprocess_image_bytes(files.read_bytes(path), models.image_size))
        rows.append(np.asarray(models.vision.predict(np.stack(batch), verbose=0), np.float32))
    return np.concatenate(rows)


def embed_texts(models: EncoderModels, texts: list[str], batch_size: int = 512) -> np.ndarray:
    ids = models.vocab.encode_batch(texts, models.max_tokens)  # an ids array, or a dict for a BERT encoder
    return np.asarray(models.text.predict(ids, batch_size=batch_size, verbose=0), np.float32)


def top_k_accuracy(caption_vectors: np.ndarray, owner: np.ndarray, image_vectors: np.ndarray, ks=KS) -> dict:
    """owner[i] = row of caption i's own image; ranked by THE exact search, scored by THE metric."""
    n, q = len(image_vectors), len(caption_vectors)
    ranked = exact_knn(caption_vectors, image_vectors, max(ks))[0]
    accuracy = knn_top_k_accuracy(ranked.tolist(), np.asarray(owner).tolist(), ks)
    return {"queries": q, "images": n,
            "top_k_accuracy": {str(k): accuracy[k] for k in ks},
            "chance": {str(k): min(k, n) / n for k in ks}}


def _chance_at_least_one(n: int, r: int, k: int) -> float:
    k = min(k, n)
    if r == 0:
        return 0.0
    if n - r < k:
        return 1.0
    return 1.0 - math.exp(math.lgamma(n - r + 1) - math.lgamma(n - r - k + 1) - math.lgamma(n + 1) + math.lgamma(n - k + 1))


def attribute_recall(caption_vectors: np.ndarray, relevant: list[np.ndarray], image_vectors: np.ndarray, ks=KS) -> dict:
    """relevant[i] = rows of the images that satisfy caption i."""
    n = len(image_vectors)
    top = exact_knn(caption_vectors, image_vectors, max(ks))[0]
    recall = {k: 0.0 for k in ks}
    precision = {k: 0.0 for k in ks}
    chance_recall = {k: 0.0 for k in ks}
    for i, rows in enumerate(relevant):
        wanted = np.zeros(n, bool)
        wanted[rows] = True
        for k in ks:
            got = wanted[top[i, :k]]
            recall[k] += float(got.any())
            precision[k] += float(got.sum()) / min(k, n)
            chance_recall[k] += _chance_at_least_one(n, len(rows), k)
    q = max(1, len(relevant))
    mean_relevant = float(np.mean([len(r) for r in relevant])) if relevant else 0.0
    return {"queries": len(relevant), "images": n, "mean_relevant_images": mean_relevant,
            "recall": {str(k): recall[k] / q for k in ks},
            "precision": {str(k): precision[k] / q for k in ks},
            "chance_recall": {str(k): chance_recall[k] / q for k in ks},
            "chance_precision": {str(k): mean_relevant / n for k in ks}}


def evaluate_split(models: EncoderModels, images: list[CocoImage], ground_truth=None,
                   max_attribute_queries: int = 1000, seed: int = 0) -> dict:
    """Top-k accuracy over all captions; attribute recall when ``ground_truth`` is given."""
    image_vectors = embed_images(models, [im.path for im in images])
    texts, owner = [], []
    for row, image in enumerate(images):
        for caption in image.captions:
            texts.append(caption)
            owner.append(row)
    report = top_k_accuracy(embed_texts(models, texts), np.asarray(owner), image_vectors)
    if ground_truth is not None:
        from beamlens.models.corpora.synthetic import caption_matches  # noqa: PLC0415

        row_of = {im.image_id: row for row, im in enumerate(images)}
        queries = [c for c in ground_truth.captions.values() if c["image_id"] in row_of]
        if len(queries) > max_attribute_queries:
            pick = np.random.default_rng(seed).choice(len(queries), max_attribute_queries, replace=False)
            queries = [queries[i] for i in sorted(pick)]
        attributes = [ground_truth.images[im.image_id] for im in images]
        relevant = [np.asarray([r for r, a in enumerate(attributes) if caption_matches(q["mentions"], a)], int)
                    for q in queries]
        report["attributes"] = attribute_recall(embed_texts(models, [q["caption"] for q in queries]), relevant, image_vectors)
    return report
