"""TF-free helpers for the searcher builder tests, run through models.compat.call_tflite."""

from __future__ import annotations

import numpy as np

from beamlens.models.io.files import write_text_atomically


def text_embed(embedder_path: str, sentences: list[str]) -> np.ndarray:
    from tflite_support.task import core, text  # noqa: PLC0415

    embedder = text.TextEmbedder.create_from_options(
        text.TextEmbedderOptions(base_options=core.BaseOptions(file_name=embedder_path))
    )
    return np.stack([np.asarray(embedder.embed(s).embeddings[0].feature_vector.value, np.float32) for s in sentences])


def text_search_many(searcher_path: str, queries: list[str], max_results: int = 10, index_file: str | None = None) -> list[list[tuple[bytes, float]]]:
    from tflite_support.task import core, processor, text  # noqa: PLC0415

    searcher = text.TextSearcher.create_from_options(
        text.TextSearcherOptions(
            base_options=core.BaseOptions(file_name=searcher_path),
            search_options=processor.SearchOptions(max_results=max_results, index_file_name=index_file),
        )
    )
    out = []
    for q in queries:
        result = searcher.search(q)
        out.append([(bytes(n.metadata), float(n.distance)) for n in result.nearest_neighbors])
    return out


def text_user_info(searcher_path: str) -> str:
    from tflite_support.task import core, text  # noqa: PLC0415

    searcher = text.TextSearcher.create_from_options(
        text.TextSearcherOptions(base_options=core.BaseOptions(file_name=searcher_path))
    )
    return searcher.get_user_info()


def image_search_files(searcher_path: str, image_paths: list[str], max_results: int = 3) -> list[list[tuple[bytes, float]]]:
    from tflite_support.task import core, processor, vision  # noqa: PLC0415

    searcher = vision.ImageSearcher.create_from_options(
        vision.ImageSearcherOptions(
            base_options=core.BaseOptions(file_name=searcher_path),
            search_options=processor.SearchOptions(max_results=max_results),
        )
    )
    out = []
    for path in image_paths:
        image = vision.TensorImage.create_from_file(path)
        result = searcher.search(image)
        out.append([(bytes(n.metadata), float(n.distance)) for n in result.nearest_neighbors])
    return out


def image_embed_files(embedder_path: str, image_paths: list[str]) -> np.ndarray:
    from tflite_support.task import core, vision  # noqa: PLC0415

    embedder = vision.ImageEmbedder.create_from_options(
        vision.ImageEmbedderOptions(base_options=core.BaseOptions(file_name=embedder_path))
    )
    return np.stack([
        np.asarray(embedder.embed(vision.TensorImage.create_from_file(p)).embeddings[0].feature_vector.value, np.float32)
        for p in image_paths
    ])


# ---- shard writing (TensorFlow side; imported lazily so this module stays TF-free) ----
def write_shards(folder, records, num_shards: int = 2, manifest: bool = True, dimension: int | None = None,
                 fingerprint: str = "sha256:test") -> list[str]:
    """Write EmbeddingRecords as beamlens shards (+ manifest.json) the way `beamlens embed` does."""
    import os  # noqa: PLC0415

    import tensorflow as tf  # noqa: PLC0415

    from beamlens.models.shards import records as sf  # noqa: PLC0415

    os.makedirs(folder, exist_ok=True)
    names = [f"{sf.SHARD_PREFIX}-{i:05d}-of-{num_shards:05d}{sf.SHARD_SUFFIX}" for i in range(num_shards)]
    writers = [tf.io.TFRecordWriter(os.path.join(folder, n)) for n in names]
    for i, record in enumerate(records):
        writers[i % num_shards].write(sf.encode_record(record))
    for w in writers:
        w.close()
    if manifest:
        dims = {len(r.embedding) for r in records}
        m = sf.Manifest(count=len(records), dimension=dimension or (dims.pop() if len(dims) == 1 else 0),
                        model_fingerprint=fingerprint, shards=names)
        write_text_atomically(os.path.join(folder, sf.MANIFEST_NAME), m.to_json())
    return names


def records_for(vectors, ids=None, captions=None, fingerprint: str = "sha256:test"):
    from beamlens.models.shards.records import EmbeddingRecord  # noqa: PLC0415

    ids = ids or [f"img{i:06d}" for i in range(len(vectors))]
    return [
        EmbeddingRecord(image_id=ids[i], uri=f"file:///corpus/{ids[i]}.jpg", embedding=vectors[i],
                        captions=tuple(captions[i]) if captions else (), model_fingerprint=fingerprint)
        for i in range(len(vectors))
    ]
