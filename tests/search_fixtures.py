"""Small real searchers for the search/evaluate tests (TF-free; run through compat.call_tflite).

Prefers the project's searcher builder (models.searcher, issue 7) when it is importable; until
then builds a float (exact, brute-force-in-partition) on-device index with tflite-support's own
index builder and attaches it as Model Maker does, which the Task Library reads the same way.
Partitions are assigned to the nearest of ``num_leaves`` data points used as centroids, so a
multi-leaf layout (for leaves-searched sweeps) is possible without ScaNN training.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

INDEX_NAME = "on_device_scann_index.ldb"


def build_float_searcher(
    embedder_path: str,
    vectors_npy: str,
    metadata: list[str],
    out_path: str,
    num_leaves: int = 1,
    leaves_to_search: int = 1,
) -> str:
    """Write ``out_path``: the embedder with a dot-product float index over the given vectors."""
    import flatbuffers  # noqa: PLC0415
    from tensorflow_lite_support.scann_ondevice.cc.core import serialized_searcher_pb2 as sp  # noqa: PLC0415
    from tensorflow_lite_support.scann_ondevice.cc.python import index_builder  # noqa: PLC0415
    from tflite_support import metadata as md  # noqa: PLC0415
    from tflite_support import metadata_schema_py_generated as fb  # noqa: PLC0415

    vectors = np.load(vectors_npy).astype(np.float32)
    centroids = vectors[np.linspace(0, len(vectors) - 1, num_leaves).astype(int)]
    assignment = np.argmax(vectors @ centroids.T, axis=1).astype(np.uint32)
    config = sp.ScannOnDeviceConfig(query_distance=sp.DOT_PRODUCT)
    config.partitioner.query_distance = sp.DOT_PRODUCT
    config.partitioner.search_fraction = leaves_to_search / num_leaves
    for centroid in centroids:
        config.partitioner.leaf.add().dimension.extend(centroid.tolist())
    index = index_builder.create_serialized_index_file(
        vectors.shape[1], config.SerializeToString(), "", assignment, metadata,
        compression=False, float_database=vectors.ravel(),
    )
    with open(embedder_path, "rb") as stream:
        model = stream.read()
    populator = md.MetadataPopulator.with_model_buffer(model)
    buffer = md.MetadataDisplayer.with_model_buffer(model).get_metadata_buffer()
    model_meta = fb.ModelMetadataT.InitFromObj(fb.ModelMetadata.GetRootAsModelMetadata(buffer, 0))
    output = model_meta.subgraphMetadata[0].outputTensorMetadata[0]
    attached = fb.AssociatedFileT()
    attached.name = INDEX_NAME
    attached.type = fb.AssociatedFileType.SCANN_INDEX_FILE
    output.associatedFiles = list(output.associatedFiles or []) + [attached]
    builder = flatbuffers.Builder(0)
    builder.Finish(model_meta.Pack(builder), md.MetadataPopulator.METADATA_FILE_IDENTIFIER)
    with tempfile.TemporaryDirectory() as folder:
        index_path = os.path.join(folder, INDEX_NAME)
        with open(index_path, "wb") as stream:
            stream.write(index)
        populator.load_metadata_buffer(builder.Output())
        populator.load_associated_files([index_path])
        populator.populate()
    with open(out_path, "wb") as stream:
        stream.write(populator.get_model_buffer())
    return out_path


def embed_images(embedder_path: str, image_paths: list[str]) -> np.ndarray:
    """Task Library ImageEmbedder vectors for image files (what an image searcher indexes)."""
    from tflite_support.task import core, vision  # noqa: PLC0415

    embedder = vision.ImageEmbedder.create_from_options(
        vision.ImageEmbedderOptions(base_options=core.BaseOptions(file_name=embedder_path))
    )
    from models.search_api import _tensor_image  # noqa: PLC0415 (same decoding as the searcher's queries)

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
    import json  # noqa: PLC0415

    return json.dumps({"id": image_id, "uri": uri, "captions": captions or []})
