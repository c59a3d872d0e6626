"""Run a Task Library text embedder ``.tflite``: the vectors a ``TextSearcher`` computes for a query.

Why its own module: the searcher builder needs text-query vectors to tune an index for the
queries phones send (issue 26), and ``beamlens evaluate`` needs them for its exact reference
search; both must get exactly what the Task Library ``TextEmbedder`` computes on a phone
(tokenizer metadata included), so both call this one module. tflite-support cannot share a
process with TensorFlow, so every call goes through :func:`models.compat.call_tflite`.
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

import numpy as np

from beamlens.models import compat
from beamlens.models.errors import BeamlensError
from beamlens.models.io.files import check_readable_file


def check_text_query(query: str) -> str:
    """The query unchanged, or a clear error for an empty one (the Task Library would embed it)."""
    if not isinstance(query, str) or not query.strip():
        raise BeamlensError("the query is empty: give some text to search for")
    return query


def embed_text(text_embedder_path: str | os.PathLike, texts: Sequence[str], l2_normalize: bool = False) -> np.ndarray:
    """Embed texts with the Task Library ``TextEmbedder``: float32 [len(texts), d].

    The same tokenizer metadata and model the ``TextSearcher`` runs on a phone, so vectors used
    for an exact reference search match what the searcher itself computes for a query.
    """
    path = check_readable_file(text_embedder_path, "text embedder")
    texts = [check_text_query(t) for t in texts]
    return compat.call_tflite(_embed_texts, path, texts, bool(l2_normalize))


def time_text_embedder(text_embedder_path: str | os.PathLike, texts: Sequence[str], warmup: int = 3) -> list[float]:
    """Milliseconds per query of the Task Library ``TextEmbedder`` alone (1 thread), after ``warmup``.

    Beside TextSearcher latencies it splits a query's time between the text encoder and the index:
    with a BERT-sized encoder the encoder is most of it, and leaves searched barely show.
    """
    path = check_readable_file(text_embedder_path, "text embedder")
    texts = [check_text_query(t) for t in texts]
    return compat.call_tflite(_time_embed_texts, path, texts, int(warmup))


def explain_run_error(error: Exception) -> str:
    """A Task Library run error, with what it means when the interpreter itself failed."""
    message = str(error)
    if "Invoke() failed" in message:
        return (
            f"{message} — the model itself failed to run in the TFLite interpreter (the TFLite log "
            "above names the failing op); the file opened fine, so the model export is at fault, not the query"
        )
    return message


def _text_embedder(path: str, l2_normalize: bool) -> Any:
    from tflite_support.task import core, processor, text  # noqa: PLC0415

    options = text.TextEmbedderOptions(
        base_options=core.BaseOptions(file_name=path, num_threads=1),
        embedding_options=processor.EmbeddingOptions(l2_normalize=l2_normalize),
    )
    try:
        return text.TextEmbedder.create_from_options(options)
    except (ValueError, RuntimeError, TypeError) as error:
        raise BeamlensError(f"{path} cannot be opened as a text embedder (Task Library: {error})") from None


def _embed_one(embedder: Any, path: str, text_query: str) -> Any:
    try:
        return embedder.embed(text_query)
    except (ValueError, RuntimeError) as error:
        raise BeamlensError(f"the text embedder {path} failed on {text_query!r}: {explain_run_error(error)}") from None


def _time_embed_texts(path: str, texts: list[str], warmup: int) -> list[float]:
    embedder = _text_embedder(path, False)
    for text_query in texts[:warmup]:
        _embed_one(embedder, path, text_query)
    timings = []
    for text_query in texts:
        started = time.perf_counter()
        _embed_one(embedder, path, text_query)
        timings.append((time.perf_counter() - started) * 1000.0)
    return timings


def _embed_texts(path: str, texts: list[str], l2_normalize: bool) -> np.ndarray:
    embedder = _text_embedder(path, l2_normalize)
    vectors = []
    for text_query in texts:
        result = _embed_one(embedder, path, text_query)
        vectors.append(np.asarray(result.embeddings[0].feature_vector.value, dtype=np.float32))
    if not vectors:
        return np.zeros((0, 0), np.float32)
    return np.stack(vectors)
