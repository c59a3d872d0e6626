"""THE exact k-nearest-neighbour search: the ground truth every recall and accuracy is measured by.

The searcher builder's recall sweep (models/searcher/autotune.py), ``beamlens evaluate``
(models/search/evaluation.py) and the encoder evaluation (models/training/evaluation.py) all rank
with :func:`exact_knn`, so "exact" means one thing everywhere:

* distances follow the Task Library's convention: ``dot_product`` -> ``-q.x``, ``squared_l2`` ->
  ``||q - x||^2``; smaller is closer;
* ties are broken by the lower row index, so the ranking is deterministic;
* the reference metric, :func:`top_k_accuracy`, is the share of queries whose expected item is
  in their first k results, whoever ranked them (the device searcher or this search);
* the database is streamed in chunks (and the queries in blocks), so a 10M x 128 matrix, even a
  memory-mapped one, is never multiplied whole: peak memory is one block of scores.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from beamlens.models.errors import BeamlensError

DOT_PRODUCT = "dot_product"
SQUARED_L2 = "squared_l2"
QUERY_BLOCK = 1024
DATABASE_CHUNK = 16384


def _distances(queries: np.ndarray, rows: np.ndarray, distance: str) -> np.ndarray:
    dots = queries @ rows.T
    if distance == DOT_PRODUCT:
        return -dots
    return np.einsum("ij,ij->i", rows, rows)[None, :] - 2.0 * dots + np.einsum("ij,ij->i", queries, queries)[:, None]


def _block_knn(queries: np.ndarray, database: np.ndarray, k: int, distance: str, exclude: Optional[np.ndarray],
               chunk: int) -> tuple[np.ndarray, np.ndarray]:
    best_d = np.zeros((len(queries), 0), np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start in range(0, database.shape[0], chunk):
        rows = np.asarray(database[start : start + chunk], np.float32)
        d = _distances(queries, rows, distance).astype(np.float32)
        if exclude is not None:
            own = (exclude >= start) & (exclude < start + len(rows))
            d[np.nonzero(own)[0], exclude[own] - start] = np.inf
        take = min(k, d.shape[1])
        part = np.argpartition(d, take - 1, axis=1)[:, :take] if take < d.shape[1] else np.tile(np.arange(d.shape[1]), (len(d), 1))
        cand_d = np.concatenate([best_d, np.take_along_axis(d, part, 1)], axis=1)
        cand_i = np.concatenate([best_i, part + start], axis=1)
        order = np.lexsort((cand_i, cand_d), axis=1)[:, :k]  # distance first, then the lower index
        best_d, best_i = np.take_along_axis(cand_d, order, 1), np.take_along_axis(cand_i, order, 1)
    return best_i, best_d


def exact_knn(queries: np.ndarray, database: np.ndarray, k: int, distance: str = DOT_PRODUCT,
              exclude_rows: Optional[np.ndarray] = None, chunk: int = DATABASE_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """(indices [Q, k'], distances [Q, k']) of the exact k nearest database rows, closest first.

    ``exclude_rows[q]``, when given, is a database row query q may not return (its own row: a point
    of the database used as a held-out query). k' = min(k, N), or N - 1 with ``exclude_rows``.
    """
    if distance not in (DOT_PRODUCT, SQUARED_L2):
        raise BeamlensError(f"unknown distance {distance!r}: use {DOT_PRODUCT} or {SQUARED_L2}")
    queries = np.asarray(queries, np.float32)
    if queries.ndim != 2 or database.ndim != 2 or queries.shape[1] != database.shape[1]:
        raise BeamlensError(f"query vectors {queries.shape} and item vectors {database.shape} do not have the same dimension")
    n = database.shape[0]
    k = max(0, min(int(k), n - (1 if exclude_rows is not None else 0)))
    if len(queries) == 0 or k == 0:
        return np.zeros((len(queries), k), np.int64), np.zeros((len(queries), k), np.float32)
    exclude = None if exclude_rows is None else np.asarray(exclude_rows, np.int64)
    blocks = [_block_knn(queries[s : s + QUERY_BLOCK], database, k, distance,
                         None if exclude is None else exclude[s : s + QUERY_BLOCK], chunk)
              for s in range(0, len(queries), QUERY_BLOCK)]
    return np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks]).astype(np.float32)


def top_k_accuracy(ranked_ids: Sequence[Sequence], expected_ids: Sequence, ks: Sequence[int]) -> dict[int, float]:
    """Fraction of queries whose expected id is among their first k results (short lists miss)."""
    if len(ranked_ids) != len(expected_ids):
        raise ValueError("one ranking per expected id is needed")
    total = max(len(expected_ids), 1)
    return {
        k: sum(1 for ranking, expected in zip(ranked_ids, expected_ids) if expected in list(ranking)[:k]) / total
        for k in ks
    }
