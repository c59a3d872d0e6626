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
from typing import Sequence

import numpy as np

from beamlens.models.knn import exact_knn
from beamlens.models.searcher.options import DOT_PRODUCT

K = 10
SWEEP_CANDIDATES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
MAX_AH_SWEEP_LEAVES = 64
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


def ah_sweep(
    vectors_queries: np.ndarray,
    query_rows: np.ndarray,
    model: AHModel,
    assignment: np.ndarray,
    ranks: np.ndarray,
    exact_ids: np.ndarray,
    values: Sequence[int],
    distance: str,
) -> list[float]:
    """Recall@10 of on-device AH scoring inside the L best leaves, for each L in ``values``."""
    num_leaves = ranks.shape[1]
    order = np.argsort(assignment, kind="stable")
    sizes = np.bincount(assignment, minlength=num_leaves)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    lmax = max(values)
    blocks = np.arange(model.codes.shape[1])
    hits = np.zeros(len(values))
    for qi, row in enumerate(query_rows):
        leaf_order = np.argsort(ranks[qi])[:lmax]
        members = [order[starts[leaf] : starts[leaf + 1]] for leaf in leaf_order]
        cumulative = np.cumsum([len(m) for m in members])
        cands = np.concatenate(members) if members else np.zeros(0, np.int64)
        lut = _lut(vectors_queries[qi], model, distance)
        dist = lut[blocks[None, :], model.codes[cands].astype(np.int64)].sum(axis=1).astype(np.float64)
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
