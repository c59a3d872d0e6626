"""Build an on-device ScaNN index file (.ldb) from an embedding matrix on disk. TF-free.

Public entry point: :func:`build_index` (works from any process; the work runs where
tflite-support can, via ``models.compat.call_tflite``)::

    index_path, report = build_index("vectors.npy", "metadata.jsonl", options=None,
                                     out_path="out/index.ldb", userinfo="...")

Inputs are FILES so that a 10M x 128 matrix never travels through a pipe: ``vectors.npy`` is an
N x d float32 array (read in row ranges), ``metadata.jsonl`` holds one item's metadata per line
(UTF-8 bytes stored verbatim as ``M_<id>``; beamlens writes compact JSON
``{"id","uri","captions"}``, which never contains a newline).

What happens (Model Maker's create_from_data + scann_converter, reimplemented):
1. options: what the caller set, the rest chosen by :mod:`models.searcher.autotune` (leaves about
   sqrt(N), leaves-to-search and scoring from a recall sweep against exact search, within
   ``max_index_mb``);
2. scann 1.4.2 pybind trains the k-means tree and the LUT256 asymmetric hashing (residual
   quantization forced off: the device cannot undo it) on samples of the points; every point is
   then assigned to its leaf and encoded here, streamed in row ranges from the ``.npy``
   (models/io/npy_rows.py: the N x d floats are never held or mapped: 10M x 128 is 5 GB);
3. the artifacts become a ``ScannOnDeviceConfig`` (leaf centroids, codebooks, search_fraction)
   and :mod:`models.searcher.index_file` streams the LevelDB table to disk, atomically (the
   layout tflite-support's ``index_builder`` writes, byte for byte when uncompressed, without
   holding the table, the codes twice or the metadata in memory).
Tiny data: fewer than 256 points cannot train LUT256 AH (float brute force instead); small N
gets one leaf with search_fraction 1.0 (the Python index builder always needs a partitioner).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np

from beamlens.models.progress import progress_printer
from beamlens.models.io.files import atomic_output
from beamlens.models.io.npy_rows import NpyRows
from beamlens.models.errors import BeamlensError
from beamlens.models.knn import exact_knn
from beamlens.models.searcher import autotune
from beamlens.models.searcher.options import (
    DOT_PRODUCT,
    AutoOptions,
    BuildReport,
    ScaNNOptions,
    ScoreAH,
    SweepPoint,
    Tree,
    options_to_dict,
)
from beamlens.models.searcher.index_file import MetadataLines, write_index
from beamlens.models.searcher.tuning_queries import TuningQueries
from beamlens.models.searcher.wire import (
    encode_ondevice_config,
    fraction_for_leaves,
    read_scann_codebooks,
    read_scann_partitioner_centroids,
)

AH_MIN_POINTS = 256
SCORE_BLOCK_FLOATS = 1 << 24  # 64 MB of float32 scores per block when assigning points to leaves
_SCANN_DISTANCE = {"dot_product": "DotProductDistance", "squared_l2": "SquaredL2Distance"}


_progress = progress_printer("[build-searcher]")


def build_index(
    embeddings_npy_path: str,
    metadata_path: str,
    options: Optional[ScaNNOptions] = None,
    out_path: str = "index.ldb",
    userinfo: str = "",
    auto: Optional[AutoOptions] = None,
    compression: bool = True,
    tuning: Optional[TuningQueries] = None,
) -> tuple[str, BuildReport]:
    """Write the on-device index for the vectors at ``out_path``; return it and the report.

    ``tuning``: the queries to measure recall on (text vectors for a text searcher, see
    :mod:`models.searcher.tuning_queries`); None measures on held-out indexed vectors."""
    from beamlens.models import compat  # noqa: PLC0415

    report = compat.call_tflite(
        _build_index_here, os.path.abspath(embeddings_npy_path), os.path.abspath(metadata_path), options,
        os.path.abspath(out_path), userinfo, auto or AutoOptions(), compression, tuning,
    )
    return out_path, report


# ---------------------------------------------------------------------------------------------
# In the tflite-support process
# ---------------------------------------------------------------------------------------------
@dataclass
class _Inputs:
    """The vectors and metadata to index, checked once."""

    vectors: NpyRows  # N x d float32 on disk, read in row ranges (never mapped or held whole)
    metadata: MetadataLines  # line offsets; the lines stay on disk

    @property
    def n(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


@dataclass
class _Plan:
    """The chosen configuration before any training: partitions and the scorings to measure."""

    num_leaves: int
    fixed_leaves: Optional[int]
    ah: Optional[ScoreAH]
    want_brute_force: bool
    auto_score: bool


@dataclass
class _Candidate:
    """One scoring measured by the recall sweep (what ``_decide`` chooses among)."""

    score: str  # "brute_force" or "ah"
    lookup: Optional[str]
    values: list[int]  # leaves searched
    recalls: list[float]
    size: int  # bytes of the vectors or codes in the index


def _load_inputs(npy_path: str, metadata_path: str, userinfo: str) -> _Inputs:
    if "\x00" in userinfo:
        raise BeamlensError("the user info string must not contain NUL bytes (the Task Library cuts it there)")
    vectors = NpyRows(npy_path)
    if vectors.dtype != np.float32:
        raise BeamlensError(f"{npy_path}: expected an N x d float32 matrix, got {vectors.dtype} {vectors.shape}")
    metadata = MetadataLines(metadata_path)
    if metadata.count != vectors.shape[0]:
        raise BeamlensError(f"{metadata_path} has {metadata.count} items but {npy_path} has {vectors.shape[0]} vectors")
    if vectors.shape[0] == 0:
        raise BeamlensError("no vectors to index")
    return _Inputs(vectors, metadata)


def _choose_plan(options: ScaNNOptions, auto: AutoOptions, inputs: _Inputs, reasons: list[str]) -> _Plan:
    """Record the partitioning and the scorings to try, and check them together (as ScaNN's
    ``ScannBuilder.create_config`` checks its stanzas once, before anything is built)."""
    n, tree = inputs.n, options.tree
    if tree is not None:
        num_leaves = tree.num_leaves
        reasons.append(f"{num_leaves} leaves: given")
    else:
        num_leaves = autotune.auto_num_leaves(n)
        reasons.append(f"{num_leaves} leaves: " + ("N <= 1000, one leaf scans everything in well under a millisecond"
                                                   if num_leaves == 1 else f"about sqrt(N) = {math.sqrt(n):.0f}"))
    if num_leaves > n:
        raise BeamlensError(f"num_leaves {num_leaves} is larger than the number of items {n}")
    fixed_leaves = tree.num_leaves_to_search if tree is not None and tree.num_leaves_to_search else None
    ah, want_bf = options.score_ah, options.score_brute_force is not None
    auto_score = ah is None and not want_bf
    if ah is not None and n < AH_MIN_POINTS:
        raise BeamlensError(f"asymmetric hashing (LUT256) needs at least {AH_MIN_POINTS} items to train, got {n}; "
                            "use brute-force scoring")
    if auto_score:
        if n < AH_MIN_POINTS:
            reasons.append(f"float brute force: LUT256 asymmetric hashing needs >= {AH_MIN_POINTS} points, N = {n}")
        else:
            budget = auto.max_index_mb * 1e6
            dpb = max(1, math.ceil(n * inputs.dim / budget)) if n * inputs.dim > budget else 1
            threshold = 0.2 if options.distance_measure == DOT_PRODUCT else float("nan")
            ah = ScoreAH(dimensions_per_block=dpb, anisotropic_quantization_threshold=threshold)
    return _Plan(num_leaves, fixed_leaves, ah, want_bf, auto_score)


def _partitions(matrix: np.ndarray, artifacts: dict[str, Any], num_leaves: int) -> tuple[np.ndarray, np.ndarray]:
    """(centroids, assignment): scann's tree, or one leaf holding everything."""
    if num_leaves > 1:
        return artifacts["centroids"], np.asarray(artifacts["assignment"], np.int64)
    total = np.zeros(matrix.shape[1], np.float64)
    for start in range(0, matrix.shape[0], 65536):
        total += np.asarray(matrix[start : start + 65536], np.float64).sum(axis=0)
    return (total / matrix.shape[0]).astype(np.float32)[None, :], np.zeros(matrix.shape[0], np.int64)


def _recall_queries(matrix: np.ndarray, tuning: Optional[TuningQueries], distance: str, auto: AutoOptions,
                    report: BuildReport) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(queries, their rows in the matrix or -1, exact top-10 ids): the given tuning queries, or
    held-out indexed vectors (each excluded from its own answer, so finding itself is no hit)."""
    if tuning is not None:
        queries = np.asarray(np.load(tuning.vectors_path), np.float32)
        if queries.ndim != 2 or queries.shape[1] != matrix.shape[1]:
            raise BeamlensError(f"tuning queries are {queries.shape}, the index holds {matrix.shape[1]}-d vectors")
        _progress(f"measuring recall@10 on {len(queries)} {tuning.description}")
        report.recall_queries, report.recall_query_kind = tuning.description, "text"
        return queries, np.full(len(queries), -1, np.int64), exact_knn(queries, matrix, autotune.K, distance)[0]
    n = matrix.shape[0]
    _progress(f"measuring recall@10 on {min(n, auto.num_queries)} held-out queries against exact search")
    query_rows = autotune.sample_queries(n, auto.num_queries, auto.seed)
    report.recall_queries = (f"{len(query_rows)} held-out vectors of the indexed items (image-like queries; text "
                             "queries from a TextSearcher may score lower: check with beamlens evaluate)")
    report.recall_query_kind = "image"
    return (np.asarray(matrix[query_rows], np.float32), query_rows,
            autotune.exact_neighbours(matrix, query_rows, distance))


def _measure(matrix: np.ndarray, plan: _Plan, artifacts: dict[str, Any], centroids: np.ndarray, assignment: np.ndarray,
             distance: str, auto: AutoOptions, report: BuildReport,
             tuning: Optional[TuningQueries] = None) -> list[_Candidate]:
    """Recall@10 of every candidate scoring against exact search, by leaves searched (the sweeps)."""
    n = matrix.shape[0]
    queries, query_rows, exact = _recall_queries(matrix, tuning, distance, auto, report)
    ranks = autotune.leaf_ranks(queries, centroids, distance)
    candidates: list[_Candidate] = []
    if plan.want_brute_force or plan.auto_score:
        values = autotune.sweep_values(plan.num_leaves)
        recalls = autotune.float_sweep(exact, assignment, ranks, values) if exact.shape[1] else [1.0] * len(values)
        candidates.append(_Candidate("brute_force", None, values, recalls, 4 * n * matrix.shape[1]))
        report.sweeps["float brute force"] = [SweepPoint(v, r) for v, r in zip(values, recalls)]
    if plan.ah is not None:
        values = autotune.sweep_values(plan.num_leaves, autotune.MAX_AH_SWEEP_LEAVES)
        if plan.fixed_leaves and plan.fixed_leaves not in values:
            values = sorted(set(values + [plan.fixed_leaves]))
        grouped = autotune.LeafCodes.group(artifacts["codes"], assignment, plan.num_leaves)
        for lookup in ([plan.ah.lookup_type] if not plan.auto_score else ["int8", "int16"]):
            model = autotune.AHModel(artifacts["codebooks"], artifacts["codes"], lookup)
            recalls = (autotune.ah_sweep(queries, query_rows, model, assignment, ranks, exact, values, distance, grouped)
                       if exact.shape[1] else [1.0] * len(values))
            candidates.append(_Candidate("ah", lookup, values, recalls, n * artifacts["codes"].shape[1]))
            report.sweeps[f"AH {plan.ah.dimensions_per_block} dim/block, {lookup} LUT"] = [SweepPoint(v, r) for v, r in zip(values, recalls)]
    return candidates


def _record_choice(report: BuildReport, plan: _Plan, tree: Optional[Tree], score: str, lookup: Optional[str],
                   leaves: int, recall: Optional[float]) -> None:
    report.score, report.num_leaves, report.num_leaves_to_search = score, plan.num_leaves, leaves
    report.search_fraction = fraction_for_leaves(plan.num_leaves, leaves)
    report.estimated_recall_at_10 = recall
    if plan.num_leaves > 1:
        report.reasons.append(f"a query scores about {report.num_items * leaves / plan.num_leaves:,.0f} items "
                              f"({leaves / plan.num_leaves:.1%} of the index; query time grows with it)")
    if score == "ah":
        report.dimensions_per_block = plan.ah.dimensions_per_block
        report.lookup_type = lookup
        t = plan.ah.anisotropic_quantization_threshold
        report.anisotropic_quantization_threshold = None if math.isnan(t) else t
    extra = {k: v for k, v in asdict(tree).items() if k not in ("num_leaves", "num_leaves_to_search")} if tree else {}
    report.options["chosen"] = {"tree": asdict(Tree(plan.num_leaves, leaves, **extra)), "score": score,
                                "lookup_type": lookup, "dimensions_per_block": report.dimensions_per_block}


def _build_index_here(
    npy_path: str, metadata_path: str, options: Optional[ScaNNOptions], out_path: str,
    userinfo: str, auto: AutoOptions, compression: bool, tuning: Optional[TuningQueries] = None,
) -> BuildReport:
    """Choose a configuration (partitions, candidate scorings), train and measure them, decide,
    then write the index: each phase a function, the decision in :func:`_decide`."""
    started = time.perf_counter()
    options = options or ScaNNOptions()
    options.validate()
    inputs = _load_inputs(npy_path, metadata_path, userinfo)
    distance = options.distance_measure
    report = BuildReport(
        num_items=inputs.n, dimension=inputs.dim, distance_measure=distance, num_leaves=1, num_leaves_to_search=1,
        search_fraction=1.0, score="brute_force", target_recall=auto.target_recall,
        metadata_bytes=inputs.metadata.total_bytes, options=options_to_dict(options) or {},
    )
    plan = _choose_plan(options, auto, inputs, report.reasons)
    work = tempfile.mkdtemp(prefix="beamlens-scann-")
    try:
        matrix = inputs.vectors  # on disk: streamed in row ranges, scann sees samples only
        artifacts: dict[str, Any] = {}
        if plan.num_leaves > 1 or plan.ah is not None:
            _progress(f"training ScaNN: {inputs.n} x {inputs.dim}, {plan.num_leaves} leaves"
                      + (f", AH {plan.ah.dimensions_per_block} dim/block" if plan.ah else ", brute force"))
            artifacts = _train_scann(matrix, distance, plan.num_leaves, options.tree, plan.ah, work, auto.training_threads)
        centroids, assignment = _partitions(matrix, artifacts, plan.num_leaves)
        candidates = _measure(matrix, plan, artifacts, centroids, assignment, distance, auto, report, tuning)
        score, lookup, leaves, recall = _decide(candidates, plan.fixed_leaves, auto.target_recall,
                                                auto.max_index_mb * 1e6, report.reasons, report.warnings)
        _record_choice(report, plan, options.tree, score, lookup, leaves, recall)
        report.warnings.extend(_what_would_reach(plan, inputs, auto, recall))
        _progress(f"writing the on-device index ({score}, {leaves}/{plan.num_leaves} leaves searched)")
        config = encode_ondevice_config(distance, centroids, report.search_fraction,
                                        artifacts["codebooks"] if score == "ah" else None, lookup or "int8")
        database = artifacts["codes"] if score == "ah" else matrix[0 : inputs.n]  # float: within the budget
        with atomic_output(out_path, "wb") as stream:
            report.index_bytes = write_index(stream, config, database, assignment, len(centroids), inputs.metadata,
                                             userinfo, compression)
        report.vector_bytes = int(database.nbytes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.build_seconds = time.perf_counter() - started
    return report


@dataclass
class _Evaluated:
    """A candidate with the leaves it needs for the target (None: it never reaches it)."""

    candidate: _Candidate
    leaves: Optional[int]
    recall: Optional[float]

    @property
    def best(self) -> Optional[float]:
        return max(self.candidate.recalls) if self.candidate.recalls else None

    @property
    def label(self) -> str:
        return "float brute force" if self.candidate.score == "brute_force" else f"AH ({self.candidate.lookup} LUT)"


def _evaluate(candidate: _Candidate, fixed_leaves: Optional[int], target: float) -> _Evaluated:
    values, recalls = candidate.values, candidate.recalls
    if fixed_leaves:
        return _Evaluated(candidate, fixed_leaves, recalls[values.index(fixed_leaves)] if fixed_leaves in values else None)
    leaves = autotune.smallest_reaching(values, recalls, target)
    return _Evaluated(candidate, leaves, recalls[values.index(leaves)] if leaves else None)


def _decide(candidates: list[_Candidate], fixed_leaves: Optional[int], target: float, budget: float,
            reasons: list[str], warnings: list[str]) -> tuple[str, Optional[str], int, Optional[float]]:
    """Pick (score, lookup, leaves, recall): smallest index that meets the target, within budget."""
    evaluated = [_evaluate(c, fixed_leaves, target) for c in candidates]
    if len(evaluated) == 1:
        only = evaluated[0]
        leaves, recall = only.leaves, only.recall
        if leaves is None:
            leaves, recall = _near_best(only.candidate.values, only.candidate.recalls)
            warnings.append(f"{only.label} reaches recall@10 {only.best:.3f} at best, below the target {target}")
        reasons.append(f"{only.label}: " + ("given" if fixed_leaves else f"{leaves} leaves is the fewest reaching recall@10 {recall:.3f}"))
        if only.candidate.size > budget:
            warnings.append(f"the vectors take {only.candidate.size / 1e6:.1f} MB, over the {budget / 1e6:.3g} MB budget")
        return only.candidate.score, only.candidate.lookup, leaves, recall
    # Automatic: cheapest in bytes first (AH int8, AH int16, float), must fit the budget and reach target.
    order = sorted(evaluated, key=lambda e: (e.candidate.size, 0 if e.candidate.lookup == "int8" else 1))
    for e in order:
        if e.candidate.size > budget:
            reasons.append(f"not {e.label}: {e.candidate.size / 1e6:.1f} MB is over the {budget / 1e6:.3g} MB budget")
            continue
        if e.recall is not None and (fixed_leaves is None or e.recall >= target):
            reasons.append(f"{e.label}: {e.candidate.size / 1e6:.1f} MB, recall@10 {e.recall:.3f} >= target {target} "
                           f"at {e.leaves} leaves searched")
            return e.candidate.score, e.candidate.lookup, e.leaves, e.recall
        reasons.append(f"not {e.label}: recall@10 reaches only {e.best:.3f} (target {target})")
    # Nothing meets target within budget: the best recall among those that fit, else the smallest.
    fitting = [e for e in order if e.candidate.size <= budget] or order[:1]
    chosen = max(fitting, key=lambda e: e.best)
    leaves, recall = chosen.leaves, chosen.recall
    if fixed_leaves is None:
        leaves, recall = _near_best(chosen.candidate.values, chosen.candidate.recalls)
    over = [e for e in order if e.candidate.size > budget and e.best is not None and e.best >= target]
    hint = f" (float brute force would reach it: allow {over[0].candidate.size / 1e6:.3g} MB with max_index_mb)" if over else ""
    warnings.append(f"no scoring reaches recall@10 {target} within {budget / 1e6:.3g} MB; chose {chosen.label} "
                    f"with recall@10 {recall:.3f} at {leaves} leaves{hint}")
    return chosen.candidate.score, chosen.candidate.lookup, leaves, recall


def _what_would_reach(plan: _Plan, inputs: _Inputs, auto: AutoOptions, recall: Optional[float]) -> list[str]:
    """When the budget forced several dimensions per AH block and the target is missed, say what
    1 dim/block would cost: recall falls steeply with dims per block (measured at 100k items of
    128-d: 0.945 at 1 dim/block, 0.63 at 2, 0.20 at 4, under 0.1 at 7, with int16 and 256 leaves)."""
    if not (plan.auto_score and plan.ah is not None and plan.ah.dimensions_per_block > 1):
        return []
    if recall is not None and recall >= auto.target_recall:
        return []
    needed_mb = inputs.n * inputs.dim / 1e6
    return [f"the {auto.max_index_mb:g} MB budget forced {plan.ah.dimensions_per_block} dimensions per AH block; "
            f"1 dimension per block ({needed_mb:,.1f} MB of codes: --max-index-mb {math.ceil(needed_mb)}) is what "
            "reaches high recall, or index fewer items per searcher (split the corpus)"]


def _near_best(values: list[int], recalls: list[float], slack: float = 0.01) -> tuple[int, float]:
    """Fewest leaves within ``slack`` of the best recall: when the target is out of reach, more
    leaves only cost time (AH plateaus: 0.80 at 4 leaves and 0.806 at 64, 18x slower, at 1M)."""
    best = max(recalls)
    for L, r in zip(values, recalls):
        if r >= best - slack:
            return L, r
    return values[-1], recalls[-1]


def _scann_config(builder: Any) -> str:
    from google.protobuf import text_format  # noqa: PLC0415
    from scann.proto import scann_pb2  # noqa: PLC0415

    config = scann_pb2.ScannConfig()
    text_format.Parse(builder.create_config(), config)
    if config.HasField("hash"):
        config.hash.asymmetric_hash.use_residual_quantization = False  # not supported on device
    return text_format.MessageToString(config)


def _train_scann(matrix, distance, num_leaves, tree, ah, work, threads) -> dict[str, Any]:
    """Partitions and AH codebooks trained by scann on SAMPLES; every point then assigned and
    encoded here in chunks, so the N x d matrix is streamed from disk, never held.

    Why not scann over all N: its tree and AH training sample anyway (``training_sample_size``,
    100k by default), but its searcher holds the whole dataset, and serialize() of tree + AH peaks
    at about 31 KB per point (3.1 GB at 100k). Streaming the assignment and encoding is what lets
    10M items build in bounded memory (issue 26).
    """
    from beamlens.models import compat  # noqa: PLC0415

    pybind = compat.import_scann_pybind()
    artifacts: dict[str, Any] = {}
    if num_leaves > 1:
        artifacts["centroids"] = _train_tree(pybind, matrix, distance, num_leaves, tree or Tree(num_leaves, 1), work, threads)
        _progress(f"assigning {matrix.shape[0]} points to {len(artifacts['centroids'])} leaves")
        artifacts["assignment"] = assign_leaves(matrix, artifacts["centroids"])
    if ah is not None:
        sample = _training_sample(matrix, max(AH_MIN_POINTS, int(ah.training_sample_size)))
        _progress(f"training AH codebooks on {len(sample)} points")
        builder = pybind.builder(sample, 10, distance).score_ah(
            ah.dimensions_per_block, anisotropic_quantization_threshold=ah.anisotropic_quantization_threshold,
            training_sample_size=len(sample), hash_type="lut256", training_iterations=ah.training_iterations,
        )
        artifacts["codebooks"] = read_scann_codebooks(_serialized(pybind, sample, builder, work, "ah", "ah_codebook.pb",
                                                                  threads, "asymmetric hashing training"))
        _progress(f"encoding {matrix.shape[0]} points")
        artifacts["codes"] = encode_ah(matrix, artifacts["codebooks"])
    return artifacts


def _training_sample(matrix: np.ndarray, size: int) -> np.ndarray:
    """A fixed random sample of rows (all rows when there are fewer), read into memory."""
    n = matrix.shape[0]
    if size >= n:
        return np.ascontiguousarray(matrix[0:n], np.float32)
    rows = np.sort(np.random.default_rng(0).choice(n, size, replace=False))
    return np.ascontiguousarray(matrix[rows], np.float32)


def _serialized(pybind: Any, data: np.ndarray, builder: Any, work: str, name: str, file_name: str, threads: int,
                what: str) -> bytes:
    """Build a scann searcher on ``data``, serialize it, and return one of its files."""
    folder = os.path.join(work, name)
    os.makedirs(folder)
    try:
        searcher = pybind.create_searcher(data, _scann_config(builder), threads)
    except RuntimeError as error:
        raise BeamlensError(f"ScaNN {what} failed: {error}") from error
    searcher.serialize(folder)
    del searcher
    with open(os.path.join(folder, file_name), "rb") as stream:
        data_bytes = stream.read()
    shutil.rmtree(folder, ignore_errors=True)
    return data_bytes


def _train_tree(pybind: Any, matrix: np.ndarray, distance: str, num_leaves: int, tree: Tree, work: str,
                threads: int) -> np.ndarray:
    """k-means leaf centroids trained by scann on ``tree.training_sample_size`` rows."""
    sample = _training_sample(matrix, max(num_leaves, int(tree.training_sample_size)))
    kwargs = asdict(tree)
    kwargs["num_leaves"] = num_leaves
    kwargs["num_leaves_to_search"] = max(1, kwargs["num_leaves_to_search"] or 1)
    kwargs["training_sample_size"] = len(sample)
    kwargs["min_partition_size"] = min(kwargs["min_partition_size"], max(1, len(sample) // num_leaves))
    _progress(f"training {num_leaves} leaves on {len(sample)} points")
    builder = pybind.builder(sample, 10, distance).tree(**kwargs).score_brute_force()
    centroids = read_scann_partitioner_centroids(_serialized(pybind, sample, builder, work, "tree",
                                                             "serialized_partitioner.pb", threads, "partitioning"))
    if len(centroids) != num_leaves:
        _progress(f"scann made {len(centroids)} leaves (asked {num_leaves})")
    return centroids


def assign_leaves(matrix: np.ndarray, centroids: np.ndarray, chunk: Optional[int] = None) -> np.ndarray:
    """Each row's leaf: the nearest centroid in squared L2 (scann's database tokenization, which
    partitions by squared L2 whatever the search distance), streamed in chunks. Checked against
    scann's own datapoint_to_token on 60k clustered points: identical for dot_product,
    squared_l2 and spherical trees (argmax of the dot product would differ on 1.3%). On a few
    thousand points scann's tokens lag its final centroids by one k-means step; the nearest
    centroid is what the index holds and the sweep measures, so the two agree by construction."""
    centroids = np.asarray(centroids, np.float32)
    norms = np.einsum("ij,ij->i", centroids, centroids)[None, :]
    # one [chunk, leaves] score block of about 64 MB: at 3,162 leaves a fixed 65,536-row chunk
    # made 830 MB blocks, three of them at once, the peak of a 10M build
    chunk = chunk or max(256, min(65536, SCORE_BLOCK_FLOATS // max(1, len(centroids))))
    assignment = np.empty(matrix.shape[0], np.int64)
    for start in range(0, matrix.shape[0], chunk):
        scores = np.asarray(matrix[start : start + chunk], np.float32) @ centroids.T
        scores *= -2.0
        scores += norms
        assignment[start : start + len(scores)] = np.argmin(scores, axis=1)
    return assignment


def encode_ah(matrix: np.ndarray, codebooks: list[np.ndarray], chunk: int = 16384) -> np.ndarray:
    """Nearest codeword (squared L2) per block for every row: the [N, blocks] uint8 codes."""
    n = matrix.shape[0]
    codes = np.empty((n, len(codebooks)), np.uint8)
    widths = [b.shape[1] for b in codebooks]
    offsets = np.concatenate([[0], np.cumsum(widths)])
    sorted_1d = {}
    for i, book in enumerate(codebooks):
        if book.shape[1] == 1:
            order = np.argsort(book[:, 0], kind="stable")
            values = book[order, 0]
            sorted_1d[i] = (order.astype(np.uint8), (values[1:] + values[:-1]) / 2)
    for start in range(0, n, chunk):
        rows = np.asarray(matrix[start : start + chunk], np.float32)
        for i, book in enumerate(codebooks):
            part = rows[:, offsets[i] : offsets[i + 1]]
            if i in sorted_1d:
                order, midpoints = sorted_1d[i]
                codes[start : start + len(rows), i] = order[np.searchsorted(midpoints, part[:, 0])]
            else:
                cost = np.einsum("ij,ij->i", book, book)[None, :] - 2.0 * (part @ book.T)
                codes[start : start + len(rows), i] = np.argmin(cost, axis=1)
    return codes
