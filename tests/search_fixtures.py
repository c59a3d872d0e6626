"""Small real searchers for the search/evaluate tests, made with the project's searcher builder.

``build_float_searcher`` writes a float (brute force inside the searched leaves) index with
models.searcher (issue 7's builder: ScaNN partitioning, the on-device index, attachment) and
attaches it to an embedder, so tests read back exactly what ``beamlens build-searcher`` writes.
The other helpers are TF-free and run through compat.call_tflite.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np


def build_float_searcher(
    embedder_path: str,
    vectors_npy: str,
    metadata: list[str],
    out_path: str,
    num_leaves: int = 1,
    leaves_to_search: int = 1,
) -> str:
    """Write ``out_path``: the embedder with a dot-product float index over the given vectors."""
    from beamlens.models.searcher import ScaNNOptions, ScoreBruteForce, Tree, attach_index, build_index  # noqa: PLC0415

    options = ScaNNOptions(
        distance_measure="dot_product",
        tree=Tree(num_leaves=num_leaves, num_leaves_to_search=leaves_to_search, min_partition_size=1),
        score_brute_force=ScoreBruteForce(),
    )
    with tempfile.TemporaryDirectory(prefix="beamlens-test-searcher-") as folder:
        metadata_path = os.path.join(folder, "metadata.txt")
        with open(metadata_path, "w", encoding="utf-8") as stream:
            stream.write("".join(line + "\n" for line in metadata))
        index_path, _ = build_index(vectors_npy, metadata_path, options, os.path.join(folder, "index.ldb"))
        attach_index(embedder_path, index_path, out_path)
    return out_path


def embed_images(embedder_path: str, image_paths: list[str]) -> np.ndarray:
    """Task Library ImageEmbedder vectors for image files (what an image searcher indexes)."""
    from tflite_support.task import core, vision  # noqa: PLC0415

    embedder = vision.ImageEmbedder.create_from_options(
        vision.ImageEmbedderOptions(base_options=core.BaseOptions(file_name=embedder_path))
    )
    from beamlens.models.search.runtime import _tensor_image  # noqa: PLC0415 (same decoding as the searcher's queries)

    return np.stack(
        [
            np.asarray(embedder.embed(_tensor_image(("path", p))).embeddings[0].feature_vector.value, np.float32)
            for p in image_paths
        ]
    )


def regex_sentences(vocab_path: str, count: int = 300, seed: int = 0) -> list[str]:
    """Distinct made-up sentences from the regex tokenizer's vocabulary (so no <UNKNOWN>)."""
    import random  # noqa: PLC0415

    with open(vocab_path, encoding="utf-8") as stream:
        words = [line.split()[0] for line in stream.read().splitlines()[4:600] if line.strip()]
    rng = random.Random(seed)
    sentences: list[str] = []
    seen: set[str] = set()
    while len(sentences) < count:
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(3, 8)))
        if sentence not in seen:
            seen.add(sentence)
            sentences.append(sentence)
    return sentences


def item_metadata(image_id: str, uri: str = "", captions: list[str] | None = None) -> str:
    return json.dumps({"id": image_id, "uri": uri, "captions": captions or []})
