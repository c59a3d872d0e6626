"""Recall sweeps that simulate the on-device search, used to choose leaves and scoring.

Why simulate instead of asking scann: the phone runs tflite-support's own search, not scann's.
Leaf selection there scores centroids with -c.q (dot product) or |c|^2 - 2c.q (squared L2),
float scoring is exact inside the chosen leaves, and AH scoring sums a per-query lookup table
that, for the int8/int16 lookup types, is first squeezed into 8/16-bit fixed point with ONE
min/max scale over all blocks (tflite-support processor.cc, ConvertLookupToFixedPoint). That
last step is what caps AH at about 0.81 recall@10 on 128-d data with Model Maker's settings,
so it is reproduced here exactly (truncating cast included).

Queries are a random sample of the data points; each query's own row is excluded from both the
exact answer and the simulated one ("held out"), so a point finding itself does not inflate
recall. Real cross-modal queries (captions against images) may be harder: ``beamlens evaluate``
measures those on the finished searcher.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from beamlens.models.knn import exact_knn
from beamlens.models.searcher.index_file import group_by_leaf
from beamlens.models.searcher.options import DOT_PRODUCT

K = 10
SWEEP_CANDIDATES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 384, 512, 768, 1024)
#: AH sweeps stop here: at 1M items 0.95 needs about 160 of 1,000 leaves (issue 26), and past 256
#: a query scans a quarter of a million items (~20 ms on a phone core).
MAX_AH_SWEEP_LEAVES = 256
#: Largest fixed-point LUT value on the device (index_table_sum.h MaxQuantizationValue): uint8 255;
#: uint16 (1 << 16) / 32 - 1 = 2047, so 32 blocks can be summed in 16 bits. "int16" is 11 bits.
LUT_MAX = {"int8": 255.0, "int16": 2047.0}
SMALL_N_ONE_LEAF = 1000


def auto_num_leaves(n: int, min_partition_size: int = 50) -> int:
    """About sqrt(N) leaves (Model Maker's published choice); one leaf when a full scan is cheap."""
    if n <= SMALL_N_ONE_LEAF:
        return 1
    return max(2, min(int(round(math.sqrt(n))), n // max(1, min_partition_size)))


def sweep_values(num_leaves: int, cap: int | None = None) -> list[int]:
    limit = num_leaves if cap is None else min(num_leaves, cap)
    values = [v for v in SWEEP_CANDIDATES if v <= limit]
    if limit not in values:
        values.append(limit)
    return values


def sample_queries(n: int, num_queries: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if n <= num_queries:
        return np.arange(n)
    return np.sort(rng.choice(n, size=num_queries, replace=False))


def exact_neighbours(vectors: np.ndarray, query_rows: np.ndarray, distance: str, k: int = K) -> np.ndarray:
    """Ids of the exact k nearest rows for each query row, the query row itself excluded (models/knn.py)."""
    return exact_knn(np.asarray(vectors[query_rows], np.float32), vectors, k, distance, exclude_rows=query_rows)[0]


def leaf_ranks(queries: np.ndarray, centroids: np.ndarray, distance: str) -> np.ndarray:
    """rank[q, leaf]: position of each leaf in the device's leaf order for each query."""
    centroids = np.asarray(centroids, np.float32)
    dots = queries @ centroids.T
    cost = -dots if distance == DOT_PRODUCT else (np.einsum("ij,ij->i", centroids, centroids)[None, :] - 2 * dots)
    order = np.argsort(cost, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(order.shape[1])[None, :].repeat(order.shape[0], 0), 1)
    return ranks


def float_sweep(exact_ids: np.ndarray, assignment: np.ndarray, ranks: np.ndarray, values: Sequence[int]) -> list[float]:
    """Recall@10 of exact scoring inside the L best leaves: the share of true neighbours in them."""
    neighbour_ranks = np.take_along_axis(ranks, assignment[exact_ids], 1)
    return [float(np.mean(neighbour_ranks < L)) for L in values]


@dataclass
class AHModel:
    codebooks: list[np.ndarray]  # per block: [256, width]
    codes: np.ndarray  # [N, blocks] uint8
    lookup_type: str


def _lut(query: np.ndarray, model: AHModel, distance: str) -> np.ndarray:
    tables = []
    pos = 0
    for book in model.codebooks:
        width = book.shape[1]
        part = query[pos : pos + width]
        pos += width
        if distance == DOT_PRODUCT:
            tables.append(-(book @ part))
        else:
            tables.append(float(part @ part) + np.einsum("ij,ij->i", book, book) - 2 * (book @ part))
    lut = np.stack(tables).astype(np.float32)  # [blocks, 256]
    if model.lookup_type in ("int8", "int16"):
        # float32 rounding decides the entries at the top of the range, and the two fixed-point
        # types round differently on the device (Task Library 0.4.4, measured on 25 queries each):
        # int8 takes the fraction of the range first (the maximum becomes exactly 255), int16
        # multiplies by a float32 scale first (the maximum can land at 2046).
        low, high = lut.min(), lut.max()
        span = max(high - low, np.finfo(np.float32).eps)
        top = np.float32(LUT_MAX[model.lookup_type])
        scaled = (lut - low) / span * top if model.lookup_type == "int8" else (lut - low) * (top / span)
        lut = np.floor(scaled).astype(np.int64)
    return lut


def device_distances(query: np.ndarray, model: AHModel, distance: str, rows: np.ndarray | None = None) -> np.ndarray:
    """The distances the Task Library reports for AH items (dequantized like index_table_sum.h)."""
    codes = model.codes if rows is None else model.codes[rows]
    lut = _lut(query, model, distance)
    sums = lut[np.arange(codes.shape[1])[None, :], codes.astype(np.int64)].sum(axis=1)
    if model.lookup_type == "float":
        return sums.astype(np.float32)
    raw = np.stack([t for t in _raw_tables(query, model, distance)])
    low, high = float(raw.min()), float(raw.max())
    step = (high - low) / LUT_MAX[model.lookup_type]
    return (sums * step + codes.shape[1] * (low + step / 2)).astype(np.float32)


def _raw_tables(query: np.ndarray, model: AHModel, distance: str) -> list[np.ndarray]:
    return list(_lut(query, AHModel(model.codebooks, model.codes, "float"), distance))


@dataclass
class LeafCodes:
    """AH codes grouped by leaf and stored block-major: one leaf's codes of one block are one
    contiguous run. Why: the sweep scores every candidate of the searched leaves for every query
    (64k candidates x 128 blocks at 1M items); gathering whole leaves and summing one block at a
    time over contiguous bytes is 13x faster than a [candidates, blocks] fancy index (14 vs 190
    ms a query, measured), which is what makes sweeping past 64 leaves affordable at 1M."""

    rows: np.ndarray  # item rows, sorted by leaf
    starts: np.ndarray  # leaf l holds rows[starts[l]:starts[l + 1]]
    codes_t: np.ndarray  # [blocks, N] uint8, columns in ``rows`` order

    @classmethod
    def group(cls, codes: np.ndarray, assignment: np.ndarray, num_leaves: int) -> "LeafCodes":
        rows, starts = group_by_leaf(assignment, num_leaves)
        return cls(rows, starts, np.ascontiguousarray(codes[rows].T))

    def candidates(self, leaves: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(item rows, their codes [blocks, M], cumulative candidate count after each leaf)."""
        spans = [(int(self.starts[leaf]), int(self.starts[leaf + 1])) for leaf in leaves]
        rows = np.concatenate([self.rows[a:b] for a, b in spans]) if spans else np.zeros(0, np.int64)
        codes = (np.concatenate([self.codes_t[:, a:b] for a, b in spans], axis=1) if spans
                 else np.zeros((self.codes_t.shape[0], 0), np.uint8))
        return rows, codes, np.cumsum([b - a for a, b in spans])


def _scores(lut: np.ndarray, codes_t: np.ndarray) -> np.ndarray:
    """Sum of the per-block table entries, one block at a time (float32 is exact for the
    fixed-point tables: at most 128 x 2047 < 2**24)."""
    table = lut.astype(np.float32)
    total = np.zeros(codes_t.shape[1], np.float32)
    for block in range(codes_t.shape[0]):
        total += table[block].take(codes_t[block])
    return total


def ah_sweep(
    vectors_queries: np.ndarray,
    query_rows: np.ndarray,
    model: AHModel,
    assignment: np.ndarray,
    ranks: np.ndarray,
    exact_ids: np.ndarray,
    values: Sequence[int],
    distance: str,
    grouped: Optional[LeafCodes] = None,
) -> list[float]:
    """Recall@10 of on-device AH scoring inside the L best leaves, for each L in ``values``.

    ``query_rows[q]`` is the query's own row in the index (held out of its answer) or -1 for an
    outside query (text); ``grouped`` reuses :class:`LeafCodes` across lookup types."""
    grouped = grouped or LeafCodes.group(model.codes, assignment, ranks.shape[1])
    lmax = max(values)
    hits = np.zeros(len(values))
    for qi, row in enumerate(query_rows):
        cands, codes_t, cumulative = grouped.candidates(np.argsort(ranks[qi], kind="stable")[:lmax])
        dist = _scores(_lut(vectors_queries[qi], model, distance), codes_t).astype(np.float64)
        dist[cands == row] = np.inf
        truth = set(exact_ids[qi].tolist())
        for vi, L in enumerate(values):
            prefix = int(cumulative[min(L, len(cumulative)) - 1]) if len(cumulative) else 0
            if prefix == 0:
                continue
            d = dist[:prefix]
            take = min(K, prefix)
            top = np.argpartition(d, take - 1)[:take] if take < prefix else np.arange(prefix)
            top = top[np.isfinite(d[top])]
            hits[vi] += len(truth.intersection(cands[top].tolist()))
    return [float(h / (len(query_rows) * exact_ids.shape[1])) for h in hits]


def smallest_reaching(values: Sequence[int], recalls: Sequence[float], target: float) -> int | None:
    for L, r in zip(values, recalls):
        if r >= target:
            return L
    return None
