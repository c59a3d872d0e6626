"""Searcher build options (Model Maker's names and defaults) and the build report.

The option dataclasses mirror ``tflite_model_maker.searcher`` field for field, so a Model Maker
user can move a ``ScaNNOptions(...)`` call over unchanged. Anything left ``None`` is chosen by the
builder (see :mod:`models.searcher.autotune`), which records what it chose and why in a
:class:`BuildReport`. This module is pure Python (no TensorFlow, no tflite-support) so both sides
of the process split can import it.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

DOT_PRODUCT = "dot_product"
SQUARED_L2 = "squared_l2"
DISTANCE_MEASURES = (DOT_PRODUCT, SQUARED_L2)

#: On-device AH lookup-table precisions (AsymmetricHashingProto.LookupType names).
LOOKUP_TYPES = ("int8", "int16", "float")

DEFAULT_TARGET_RECALL = 0.95
#: Default budget for the vectors of the index (not the per-item metadata): what a phone app can
#: reasonably ship. 123k x 128 float vectors (63 MB) fit; 1M x 128 floats (512 MB) do not.
DEFAULT_MAX_INDEX_MB = 200.0


class ExportFormat(enum.Enum):
    TFLITE = "TFLITE"
    SCANN_INDEX_FILE = "SCANN_INDEX_FILE"


@dataclass
class Tree:
    """k-means partitioning: ``num_leaves`` partitions, ``num_leaves_to_search`` searched per query."""

    num_leaves: int
    num_leaves_to_search: int
    training_sample_size: int = 100000
    min_partition_size: int = 50
    training_iterations: int = 12
    spherical: bool = False
    quantize_centroids: bool = False
    random_init: bool = True


@dataclass
class ScoreAH:
    """Asymmetric hashing (LUT256 product quantization): about N x d / dimensions_per_block bytes.

    ``lookup_type`` is a beamlens addition (default ``"int8"``, what Model Maker wrote): the
    precision of the query lookup table on the device. int8 sums the LUT in 8-bit fixed point with
    one scale for all blocks, which costs recall; ``"int16"``/``"float"`` keep the same index
    size and codes and search slightly slower.
    """

    dimensions_per_block: int
    anisotropic_quantization_threshold: float = float("nan")
    training_sample_size: int = 100000
    training_iterations: int = 10
    lookup_type: str = "int8"


@dataclass
class ScoreBruteForce:
    """Float32 vectors, exact inside the partitions searched: 4 x N x d bytes."""


@dataclass
class ScaNNOptions:
    """What Model Maker's ``searcher.ScaNNOptions`` held. ``dot_product`` distances are NEGATIVE dot
    products on the device (smaller is closer)."""

    distance_measure: str = DOT_PRODUCT
    tree: Optional[Tree] = None
    score_ah: Optional[ScoreAH] = None
    score_brute_force: Optional[ScoreBruteForce] = None

    def validate(self) -> None:
        from beamlens.models.errors import BeamlensError  # noqa: PLC0415

        if self.distance_measure not in DISTANCE_MEASURES:
            raise BeamlensError(
                f"distance_measure must be one of {', '.join(DISTANCE_MEASURES)}, got {self.distance_measure!r}"
            )
        if self.score_ah is not None and self.score_brute_force is not None:
            raise BeamlensError("set at most one of score_ah and score_brute_force")
        if self.tree is not None:
            t = self.tree
            if t.num_leaves < 1 or not 0 <= t.num_leaves_to_search <= t.num_leaves:
                raise BeamlensError(
                    f"tree needs 0 <= num_leaves_to_search <= num_leaves (0: chosen by the recall sweep), "
                    f"got {t.num_leaves_to_search} of {t.num_leaves}"
                )
        if self.score_ah is not None:
            if self.score_ah.dimensions_per_block < 1:
                raise BeamlensError("score_ah.dimensions_per_block must be at least 1")
            if self.score_ah.lookup_type not in LOOKUP_TYPES:
                raise BeamlensError(f"score_ah.lookup_type must be one of {', '.join(LOOKUP_TYPES)}")


@dataclass
class AutoOptions:
    """How the builder fills in what :class:`ScaNNOptions` leaves open."""

    target_recall: float = DEFAULT_TARGET_RECALL
    max_index_mb: float = DEFAULT_MAX_INDEX_MB
    num_queries: int = 300
    seed: int = 0
    training_threads: int = 0  # 0: scann picks


@dataclass
class SweepPoint:
    leaves_to_search: int
    recall_at_10: float


@dataclass
class BuildReport:
    """What the builder built, what it chose and why, and what it measured."""

    num_items: int
    dimension: int
    distance_measure: str
    num_leaves: int
    num_leaves_to_search: int
    search_fraction: float
    score: str  # "ah" or "brute_force"
    dimensions_per_block: Optional[int] = None
    lookup_type: Optional[str] = None
    anisotropic_quantization_threshold: Optional[float] = None
    estimated_recall_at_10: Optional[float] = None
    target_recall: Optional[float] = None
    # Which queries the estimate was measured on: text vectors from the searcher's own text
    # embedder when a text searcher is built (models/searcher/tuning_queries.py), else held-out
    # corpus vectors (image-like; text queries measured 0.01-0.016 lower at 1M items, issue 26).
    recall_queries: str = ""
    recall_query_kind: str = ""  # "text" (tuned for a TextSearcher's queries) or "image"
    index_bytes: int = 0
    vector_bytes: int = 0
    metadata_bytes: int = 0
    build_seconds: float = 0.0
    sweeps: dict[str, list[SweepPoint]] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key, value in list(data.items()):
            if isinstance(value, float) and math.isnan(value):
                data[key] = None
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def lines(self) -> list[str]:
        """Human-readable summary (what the CLI prints)."""
        out = [
            f"index: {self.num_items} items, {self.dimension}-d, {self.distance_measure}, "
            f"{self.num_leaves} leaves, {self.num_leaves_to_search} searched per query "
            f"(search_fraction {self.search_fraction:.6g})",
        ]
        if self.score == "ah":
            out.append(
                f"scoring: asymmetric hashing, {self.dimensions_per_block} dim/block, {self.lookup_type} lookup table"
            )
        else:
            out.append("scoring: float32 brute force inside the searched leaves")
        if self.estimated_recall_at_10 is not None:
            out.append(
                f"estimated recall@10 vs exact search: {self.estimated_recall_at_10:.3f} (target {self.target_recall}; "
                f"measured on {self.recall_queries or 'held-out corpus vectors'})"
            )
        for name, points in self.sweeps.items():
            shown = ", ".join(f"{p.leaves_to_search}:{p.recall_at_10:.3f}" for p in points)
            out.append(f"recall@10 by leaves searched [{name}]: {shown}")
        out.append(
            f"size: index {self.index_bytes / 1e6:.2f} MB (vectors {self.vector_bytes / 1e6:.2f} MB, "
            f"metadata {self.metadata_bytes / 1e6:.2f} MB; N x d = {self.num_items * self.dimension / 1e6:.2f} MB)"
        )
        out.extend(f"why: {r}" for r in self.reasons)
        out.extend(f"warning: {w}" for w in self.warnings)
        return out


def options_to_dict(options: Optional[ScaNNOptions]) -> Optional[dict[str, Any]]:
    if options is None:
        return None
    data = asdict(options)
    if options.score_ah is not None and math.isnan(options.score_ah.anisotropic_quantization_threshold):
        data["score_ah"]["anisotropic_quantization_threshold"] = None
    return data
