"""Searcher quality and speed metrics in plain numpy: the reference an on-device index is held to.

``beamlens evaluate`` asks two questions: how often does a held-out caption find its own image
(top-k accuracy), and how much of that is lost to approximate search (the same accuracy through
exact brute-force search, and ANN recall@k against exact search). The exact side lives here; the
approximate side is the real Task Library (models.search.runtime). No TensorFlow, no Task Library.

Exact search holds only the final N x d float32 matrix and scores queries in chunks, so memory
stays at N x chunk floats on top of the matrix.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from beamlens.models.corpora.captions import CaptionQuery, load_caption_queries  # noqa: F401 (re-exported)
from beamlens.models.errors import BeamlensError
from beamlens.models.knn import DATABASE_CHUNK, DOT_PRODUCT, SQUARED_L2, exact_knn, top_k_accuracy  # noqa: F401 (the metric's home)

DEFAULT_KS = (1, 5, 10, 100)
DEFAULT_LEAVES_SWEEP = (1, 2, 4, 8, 16, 32)


# ---------------------------------------------------------------------------------------------
# Held-out captions
# ---------------------------------------------------------------------------------------------
def select_queries(queries: Sequence[CaptionQuery], known_ids: set[str], max_queries: int, seed: int = 0) -> tuple[list[CaptionQuery], int]:
    """Keep captions whose image is indexed, then an evenly random subset of at most max_queries.

    Returns (selected, number of captions whose image is not in the index). A caption whose
    image is absent can never hit; counting it would measure the corpus, not the searcher.
    """
    usable = [q for q in queries if q.image_id in known_ids]
    missing = len(queries) - len(usable)
    if len(usable) > max_queries:
        order = np.random.default_rng(seed).permutation(len(usable))[:max_queries]
        usable = [usable[i] for i in sorted(order)]
    return usable, missing


# ---------------------------------------------------------------------------------------------
# Exact search
# ---------------------------------------------------------------------------------------------
def exact_search(
    queries: np.ndarray, database: np.ndarray, k: int, distance: str = DOT_PRODUCT, chunk: int = DATABASE_CHUNK
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force k nearest neighbours with the Task Library's distance convention: THE exact
    search (models/knn.py), under the name the evaluation has always used."""
    return exact_knn(queries, database, k, distance, chunk=chunk)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------
def ann_recall(ann_ids: Sequence[Sequence[str]], exact_ids: Sequence[Sequence[str]], ks: Sequence[int]) -> dict[int, float]:
    """Mean |ANN top-k ∩ exact top-k| / |exact top-k|: how many true neighbours the index finds."""
    if len(ann_ids) != len(exact_ids):
        raise ValueError("one ANN ranking per exact ranking is needed")
    recalls = {}
    for k in ks:
        values = []
        for ann, exact in zip(ann_ids, exact_ids):
            truth = set(list(exact)[:k])
            if truth:
                values.append(len(truth & set(list(ann)[:k])) / len(truth))
        recalls[k] = float(np.mean(values)) if values else 0.0
    return recalls


def ann_recall_by_distance(
    ann_true_distances: Sequence[np.ndarray],
    exact_distances: np.ndarray,
    ks: Sequence[int],
    rtol: float = 1e-6,
) -> dict[int, float]:
    """ANN recall@k that does not punish ties: a returned item counts when its true distance is
    within the exact k-th distance (plus a float32 rounding tolerance, ``rtol`` times the query's
    largest distance magnitude).

    Id-set recall drops below 1 for an exact index whenever two items sit at the same distance at
    rank k (the Task Library and numpy sum floats in a different order and break the tie
    differently); ANN benchmarks therefore compare distances. ``ann_true_distances[q]`` are the
    exact (numpy) distances of the items the searcher returned, in its order.
    """
    exact_distances = np.asarray(exact_distances, np.float64)
    # float32 rounding of a dot product is relative to the size of the products, not of the
    # difference: scale the tolerance by the query's largest |distance| (a few float32 ulps).
    scales = np.abs(exact_distances).max(axis=1) if exact_distances.size else np.zeros(0)
    recalls = {}
    for k in ks:
        kk = min(k, exact_distances.shape[1]) if exact_distances.ndim == 2 else 0
        values = []
        for q, returned in enumerate(ann_true_distances):
            if kk == 0:
                continue
            threshold = exact_distances[q, kk - 1] + rtol * max(float(scales[q]), 1e-30)
            values.append(min(int(np.sum(np.asarray(returned, np.float64)[:kk] <= threshold)), kk) / kk)
        recalls[k] = float(np.mean(values)) if values else 0.0
    return recalls


def true_distances(query: np.ndarray, rows: Sequence[int], database: np.ndarray, distance: str = DOT_PRODUCT) -> np.ndarray:
    """Exact distances of the given database rows to one query (Task Library convention)."""
    if len(rows) == 0:
        return np.zeros(0, np.float32)
    items = database[np.asarray(rows, np.int64)]
    if distance == SQUARED_L2:
        return ((items - query[None, :]) ** 2).sum(axis=1)
    return -(items @ query)


def short_result_counts(ann_ids: Sequence[Sequence[str]], ks: Sequence[int], num_items: int) -> dict[int, int]:
    """Queries that got fewer than min(k, N) results (the leaves searched held too few points)."""
    return {k: sum(1 for ids in ann_ids if len(ids) < min(k, num_items)) for k in ks}


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float]:
    values = np.asarray(latencies_ms, np.float64)
    if values.size == 0:
        return {"p50": math.nan, "p95": math.nan, "p99": math.nan, "mean": math.nan, "count": 0}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "mean": float(values.mean()), "count": int(values.size)}


def leaves_sweep_values(num_leaves: int, candidates: Sequence[int] = DEFAULT_LEAVES_SWEEP) -> list[int]:
    """The sweep points, capped at the number of leaves (which is included when it is smaller)."""
    if num_leaves < 1:
        return []
    values = sorted({min(int(c), num_leaves) for c in candidates if int(c) >= 1})
    return values


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
def attached_index_size(searcher_path: str) -> int | None:
    """Bytes of the ScaNN index packed in a searcher (associated files are an appended zip)."""
    try:
        with zipfile.ZipFile(searcher_path) as archive:
            sizes = [info.file_size for info in archive.infolist() if info.filename.endswith(".ldb")]
    except (zipfile.BadZipFile, OSError):
        return None
    return sum(sizes) if sizes else None


def recall_latency_plot_png(sweep: Sequence[dict[str, Any]], title: str = "", embedder_p50_ms: float | None = None) -> bytes:
    """Recall@10 against p50 latency, one point per leaves-searched setting, as PNG bytes.

    ``embedder_p50_ms`` (the text embedder alone) is drawn as a line: left of it nothing can go,
    and the distance to it is the index's own share of a query."""
    import matplotlib  # noqa: PLC0415 (only evaluate needs it)

    matplotlib.use("Agg")
    from matplotlib import pyplot  # noqa: PLC0415

    figure, axis = pyplot.subplots(figsize=(6.4, 4.2), dpi=100)
    try:
        sweep = sorted(sweep, key=lambda s: s["leaves_to_search"])
        xs = [s["p50_ms"] for s in sweep]
        ys = [s["recall_at_10"] for s in sweep]
        axis.plot(xs, ys, color="#9bb", linewidth=1, zorder=1)
        axis.scatter(xs, ys, zorder=2)
        for i, (s, x, y) in enumerate(zip(sweep, xs, ys)):
            offset = (5, -14) if i % 2 == 0 else (5, 6)
            axis.annotate(str(s["leaves_to_search"]), (x, y), textcoords="offset points", xytext=offset, fontsize=8)
        axis.text(0.99, 0.02, "labels: leaves searched", transform=axis.transAxes, ha="right", fontsize=8, color="#666")
        if embedder_p50_ms is not None:
            axis.axvline(embedder_p50_ms, color="#c66", linestyle="--", linewidth=1, zorder=0)
            axis.annotate(f"text embedder alone: {embedder_p50_ms:.2f} ms", (embedder_p50_ms, 0.5), xycoords=("data", "axes fraction"),
                          textcoords="offset points", xytext=(4, 0), fontsize=8, color="#c66", rotation=90, va="center")
        axis.set_xlabel("p50 query latency, ms (Task Library TextSearcher, 1 thread)")
        axis.set_ylabel("recall@10 against exact search")
        axis.set_ylim(min(0.0, min(ys, default=0.0)) - 0.02, 1.02)
        axis.grid(alpha=0.3)
        axis.set_title(title or "Leaves searched: recall versus latency")
        buffer = io.BytesIO()
        figure.tight_layout()
        figure.savefig(buffer, format="png")
    finally:
        pyplot.close(figure)
    return buffer.getvalue()


def file_size(path: str | None) -> int | None:
    return os.path.getsize(path) if path and os.path.isfile(path) else None


# ---------------------------------------------------------------------------------------------
# Item vectors from the embedding shards
# ---------------------------------------------------------------------------------------------
@dataclass
class IndexedItems:
    """The vectors the searcher was built from, one row per distinct image id."""

    image_ids: list[str]
    uris: list[str]
    vectors: np.ndarray
    duplicates_dropped: int = 0


def read_shard_items(shards_dirs: str | Sequence[str], progress: Any = None, unit_norm: bool = True) -> IndexedItems:
    """The items of one or more finished embedding runs, read by THE shard reader.

    The same reader and rules as ``build-searcher`` (models/shards/reader.py: manifests agree with
    the shards, identical duplicates dropped, a different vector under one id refused), so an
    evaluation never accepts shards the searcher build would reject. The matrix is memory-mapped
    from the reader's scratch file, so peak memory stays the N x d float32 matrix."""
    import tempfile  # noqa: PLC0415

    from beamlens.models.shards.reader import read_shards  # noqa: PLC0415

    folders = [shards_dirs] if isinstance(shards_dirs, str) else list(shards_dirs)
    with tempfile.TemporaryDirectory(prefix="beamlens-evaluate-") as work:
        shards = read_shards(folders, work, unit_norm=unit_norm)
        vectors = np.array(np.load(shards.vectors_path, mmap_mode="r"))
        image_ids, uris = [], []
        with open(shards.metadata_path, encoding="utf-8") as stream:
            for line in stream:
                item = json.loads(line)
                image_ids.append(item["id"])
                uris.append(item["uri"])
    if progress:
        progress(f"read {shards.records_read} records of {len(shards.shards)} shards: {len(image_ids)} items")
    return IndexedItems(image_ids, uris, vectors, shards.duplicates_dropped)
