"""Synthetic index vectors at least as hard to partition as real embeddings, and the measure of "hard".

Why: a 123k-item latency figure means nothing if the vectors are easier than real ones.
``searcher_benchmark.py``'s 1,000 tight clusters reach recall@10 0.98 from 1 of 351 leaves; the
demo's real embeddings need 16 of 40. So hardness is measured the way the device searches: k-means
leaves (about sqrt(N), as the builder chooses), each query's leaves ranked by dot product with
the centroids (tflite-support's order), and the share of the corpus that must be scanned before
recall@10 of exact search inside the leaves reaches 0.95.

The generator: a Gaussian with the real vectors' mean and covariance (its PCA spectrum), whose
spectrum is flattened toward isotropic by ``flatten`` in [0, 1] (higher intrinsic dimension is
harder to partition), L2-normalised. :func:`calibrate` picks the smallest ``flatten`` whose
vectors, at the real set's N and against the same real queries, are at least as hard as every
real set given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from beamlens.models.knn import exact_knn
from beamlens.models.searcher import autotune
from beamlens.models.searcher.options import DOT_PRODUCT

TARGET_RECALL = 0.95
K = 10
FLATTEN_STEPS = (0.0, 0.25, 0.5, 0.75, 1.0)


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def kmeans(vectors: np.ndarray, leaves: int, seed: int = 0, iterations: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """(centroids [leaves, d], assignment [N]) of squared-L2 k-means (ScaNN's tree trains so)."""
    rng = np.random.default_rng(seed)
    centroids = vectors[rng.choice(len(vectors), size=leaves, replace=False)].copy()
    for _ in range(iterations):
        scores = vectors @ centroids.T - 0.5 * np.einsum("ij,ij->i", centroids, centroids)[None, :]
        assignment = np.argmax(scores, axis=1)
        for leaf in range(leaves):
            members = vectors[assignment == leaf]
            if len(members):
                centroids[leaf] = members.mean(axis=0)
    scores = vectors @ centroids.T - 0.5 * np.einsum("ij,ij->i", centroids, centroids)[None, :]
    return centroids, np.argmax(scores, axis=1)


@dataclass
class Hardness:
    """How much of a corpus a query must scan on the device for recall@10 >= 0.95."""

    items: int
    num_leaves: int
    leaves_needed: int  # leaves searched for TARGET_RECALL
    scanned_share: float  # mean share of the items in those leaves

    def describe(self) -> str:
        return (f"{self.leaves_needed} of {self.num_leaves} leaves ({100 * self.scanned_share:.0f}% of "
                f"{self.items} items) for recall@10 {TARGET_RECALL}")


def hardness(items: np.ndarray, queries: np.ndarray, num_leaves: int | None = None, seed: int = 0) -> Hardness:
    """Leaves (and share of the corpus) needed for exact-in-leaf recall@10 >= TARGET_RECALL, with
    the builder's own simulation of the device's leaf order (models/searcher/autotune.py)."""
    items, queries = unit(items), unit(queries)
    num_leaves = num_leaves or max(2, int(round(np.sqrt(len(items)))))
    centroids, assignment = kmeans(items, num_leaves, seed)
    exact = exact_knn(queries, items, K)[0]
    ranks = autotune.leaf_ranks(queries, centroids, DOT_PRODUCT)
    leaves = list(range(1, num_leaves + 1))
    needed = autotune.smallest_reaching(leaves, autotune.float_sweep(exact, assignment, ranks, leaves), TARGET_RECALL)
    if needed is None:
        return Hardness(len(items), num_leaves, num_leaves, 1.0)
    sizes = np.bincount(assignment, minlength=num_leaves)
    scanned = ((ranks < needed) * sizes[None, :]).sum(axis=1)
    return Hardness(len(items), num_leaves, needed, float(np.mean(scanned) / len(items)))


@dataclass
class Generator:
    """A Gaussian fitted to real vectors, its spectrum flattened by ``flatten``."""

    mean: np.ndarray
    factor: np.ndarray  # [d, d]: samples are mean + z @ factor
    flatten: float

    @classmethod
    def fit(cls, real: np.ndarray, flatten: float) -> "Generator":
        real = unit(real).astype(np.float64)
        mean = real.mean(axis=0)
        covariance = np.cov(real - mean, rowvar=False)
        values, vectors = np.linalg.eigh(covariance)
        values = np.clip(values, 0.0, None)
        values = (1.0 - flatten) * values + flatten * values.mean()
        return cls(mean, (vectors * np.sqrt(values)).T, flatten)

    def sample(self, count: int, seed: int = 0, chunk: int = 100_000) -> np.ndarray:
        rng = np.random.default_rng(seed)
        out = np.empty((count, len(self.mean)), np.float32)
        for start in range(0, count, chunk):
            size = min(chunk, count - start)
            out[start:start + size] = unit(self.mean + rng.standard_normal((size, len(self.mean))) @ self.factor)
        return out


@dataclass
class Calibration:
    generator: Generator
    real: list[tuple[str, Hardness]]
    synthetic: list[tuple[str, Hardness]]  # the chosen generator at each real set's N, same queries


def calibrate(fit_on: np.ndarray, real_sets: Sequence[tuple[str, np.ndarray, np.ndarray]],
              steps: Sequence[float] = FLATTEN_STEPS) -> Calibration:
    """The smallest flatten at which, for every real set (name, items, queries), a Gaussian fitted
    to its items and sampled at its N needs at least its scanned share against its own queries;
    the returned generator is fitted on ``fit_on`` (the real vectors of the index to simulate)."""
    real = [(name, hardness(items, queries)) for name, items, queries in real_sets]
    for flatten in steps:
        synthetic = [(name, hardness(Generator.fit(items, flatten).sample(len(items), seed=1), queries, found.num_leaves))
                     for (name, items, queries), (_, found) in zip(real_sets, real)]
        if all(s.scanned_share >= r.scanned_share for (_, s), (_, r) in zip(synthetic, real)):
            break
    return Calibration(Generator.fit(fit_on, flatten), real, synthetic)
