"""Build an on-device ScaNN index file (.ldb) from an embedding matrix on disk. TF-free.

Public entry point: :func:`build_index` (works from any process; the work runs where
tflite-support can, via ``models.compat.call_tflite``)::

    index_path, report = build_index("vectors.npy", "metadata.jsonl", options=None,
                                     out_path="out/index.ldb", userinfo="...")

Inputs are FILES so that a 10M x 128 matrix never travels through a pipe: ``vectors.npy`` is an
N x d float32 array (read memory-mapped), ``metadata.jsonl`` holds one item's metadata per line
(UTF-8 bytes stored verbatim as ``M_<id>``; beamlens writes compact JSON
``{"id","uri","captions"}``, which never contains a newline).

What happens (Model Maker's create_from_data + scann_converter, reimplemented):
1. options: what the caller set, the rest chosen by :mod:`models.searcher.autotune` (leaves about
   sqrt(N), leaves-to-search and scoring from a recall sweep against exact search, within
   ``max_index_mb``);
2. scann 1.4.2 pybind trains the k-means tree and the LUT256 asymmetric hashing (residual
   quantization forced off: the device cannot undo it), serialized to a temp folder;
3. the artifacts become a ``ScannOnDeviceConfig`` (leaf centroids, codebooks, search_fraction)
   and tflite-support's ``index_builder`` writes the LevelDB table, atomically.
Tiny data: fewer than 256 points cannot train LUT256 AH (float brute force instead); small N
gets one leaf with search_fraction 1.0 (the Python index builder always needs a partitioner).
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from typing import Any, Optional

import numpy as np

from models.atomic_files import write_bytes_atomically
from models.errors import BeamlensError
from models.searcher import autotune
from models.searcher.options import (
    DOT_PRODUCT,
    AutoOptions,
    BuildReport,
    ScaNNOptions,
    ScoreAH,
    SweepPoint,
    Tree,
    options_to_dict,
)
from models.searcher.wire import (
    encode_ondevice_config,
    fraction_for_leaves,
    read_scann_codebooks,
    read_scann_partitioner_centroids,
)

AH_MIN_POINTS = 256
_SCANN_DISTANCE = {"dot_product": "DotProductDistance", "squared_l2": "SquaredL2Distance"}


def _progress(message: str) -> None:
    print(f"[build-searcher] {message}", file=sys.stderr, flush=True)


def read_metadata_lines(path: str) -> list[bytes]:
    with open(path, "rb") as stream:
        data = stream.read()
    if not data:
        return []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def build_index(
    embeddings_npy_path: str,
    metadata_path: str,
    options: Optional[ScaNNOptions] = None,
    out_path: str = "index.ldb",
    userinfo: str = "",
    auto: Optional[AutoOptions] = None,
    compression: bool = True,
) -> tuple[str, BuildReport]:
    """Write the on-device index for the vectors at ``out_path``; return it and the report."""
    from models import compat  # noqa: PLC0415

    report = compat.call_tflite(
        _build_index_here, os.path.abspath(embeddings_npy_path), os.path.abspath(metadata_path), options,
        os.path.abspath(out_path), userinfo, auto or AutoOptions(), compression,
    )
    return out_path, report


# ---------------------------------------------------------------------------------------------
# In the tflite-support process
# ---------------------------------------------------------------------------------------------
def _build_index_here(
    npy_path: str, metadata_path: str, options: Optional[ScaNNOptions], out_path: str,
    userinfo: str, auto: AutoOptions, compression: bool,
) -> BuildReport:
    started = time.perf_counter()
    options = options or ScaNNOptions()
    options.validate()
    if "\x00" in userinfo:
        raise BeamlensError("the user info string must not contain NUL bytes (the Task Library cuts it there)")
    vectors = np.load(npy_path, mmap_mode="r")
    if vectors.ndim != 2 or vectors.dtype != np.float32:
        raise BeamlensError(f"{npy_path}: expected an N x d float32 matrix, got {vectors.dtype} {vectors.shape}")
    n, dim = vectors.shape
    metadata = read_metadata_lines(metadata_path)
    if len(metadata) != n:
        raise BeamlensError(f"{metadata_path} has {len(metadata)} items but {npy_path} has {n} vectors")
    if n == 0:
        raise BeamlensError("no vectors to index")
    distance = options.distance_measure
    budget = auto.max_index_mb * 1e6
    report = BuildReport(
        num_items=n, dimension=dim, distance_measure=distance, num_leaves=1, num_leaves_to_search=1,
        search_fraction=1.0, score="brute_force", target_recall=auto.target_recall,
        metadata_bytes=sum(len(m) for m in metadata), options=options_to_dict(options) or {},
    )
    reasons, warnings = report.reasons, report.warnings

    # ---- partitioning ----
    tree = options.tree
    if tree is not None:
        num_leaves = tree.num_leaves
        reasons.append(f"{num_leaves} leaves: given")
    else:
        num_leaves = autotune.auto_num_leaves(n)
        reasons.append(
            f"{num_leaves} leaves: " + ("N <= 1000, one leaf scans everything in well under a millisecond"
                                        if num_leaves == 1 else f"about sqrt(N) = {math.sqrt(n):.0f}")
        )
    if num_leaves > n:
        raise BeamlensError(f"num_leaves {num_leaves} is larger than the number of items {n}")
    fixed_leaves = tree.num_leaves_to_search if tree is not None and tree.num_leaves_to_search else None

    # ---- scoring candidates ----
    ah: Optional[ScoreAH] = options.score_ah
    want_bf = options.score_brute_force is not None
    auto_score = ah is None and not want_bf
    if ah is not None and n < AH_MIN_POINTS:
        raise BeamlensError(
            f"asymmetric hashing (LUT256) needs at least {AH_MIN_POINTS} items to train, got {n}; "
            "use brute-force scoring"
        )
    if auto_score:
        if n < AH_MIN_POINTS:
            reasons.append(f"float brute force: LUT256 asymmetric hashing needs >= {AH_MIN_POINTS} points, N = {n}")
        else:
            dpb = max(1, math.ceil(n * dim / budget)) if n * dim > budget else 1
            threshold = 0.2 if distance == DOT_PRODUCT else float("nan")
            ah = ScoreAH(dimensions_per_block=dpb, anisotropic_quantization_threshold=threshold)

    # ---- train with scann (or not, for one leaf and no AH) ----
    work = tempfile.mkdtemp(prefix="beamlens-scann-")
    try:
        matrix = np.ascontiguousarray(vectors)  # scann needs it in memory
        if num_leaves > 1 or ah is not None:
            _progress(f"training ScaNN: {n} x {dim}, {num_leaves} leaves"
                      + (f", AH {ah.dimensions_per_block} dim/block" if ah else ", brute force"))
            artifacts = _train_scann(matrix, distance, num_leaves, tree, ah, work, auto.training_threads)
        else:
            artifacts = {}
        if num_leaves > 1:
            centroids = artifacts["centroids"]
            assignment = artifacts["assignment"]
        else:
            centroid = matrix.mean(axis=0, dtype=np.float64).astype(np.float32)
            centroids = centroid[None, :]
            assignment = np.zeros(n, np.int32)

        # ---- measure (sweep) and decide ----
        _progress(f"measuring recall@10 on {min(n, auto.num_queries)} held-out queries against exact search")
        query_rows = autotune.sample_queries(n, auto.num_queries, auto.seed)
        queries = np.asarray(matrix[query_rows], np.float32)
        exact = autotune.exact_neighbours(matrix, query_rows, distance)
        ranks = autotune.leaf_ranks(queries, centroids, distance)
        assignment = np.asarray(assignment, np.int64)
        float_values = autotune.sweep_values(num_leaves)
        float_recalls = autotune.float_sweep(exact, assignment, ranks, float_values) if exact.shape[1] else [1.0] * len(float_values)
        bf_bytes = 4 * n * dim
        candidates: list[tuple[str, Optional[str], list[int], list[float], int]] = []
        if want_bf or auto_score:
            candidates.append(("brute_force", None, float_values, float_recalls, bf_bytes))
            report.sweeps["float brute force"] = [SweepPoint(v, r) for v, r in zip(float_values, float_recalls)]
        if ah is not None:
            ah_values = autotune.sweep_values(num_leaves, autotune.MAX_AH_SWEEP_LEAVES)
            if fixed_leaves and fixed_leaves not in ah_values:
                ah_values = sorted(set(ah_values + [fixed_leaves]))
            lookups = [ah.lookup_type] if not auto_score else ["int8", "int16"]
            for lookup in lookups:
                model = autotune.AHModel(artifacts["codebooks"], artifacts["codes"], lookup)
                recalls = autotune.ah_sweep(queries, query_rows, model, assignment, ranks, exact, ah_values, distance) if exact.shape[1] else [1.0] * len(ah_values)
                candidates.append(("ah", lookup, ah_values, recalls, n * artifacts["codes"].shape[1]))
                report.sweeps[f"AH {ah.dimensions_per_block} dim/block, {lookup} LUT"] = [SweepPoint(v, r) for v, r in zip(ah_values, recalls)]

        score, lookup, leaves, recall = _decide(candidates, fixed_leaves, auto.target_recall, budget, reasons, warnings)
        report.score = score
        report.num_leaves = num_leaves
        report.num_leaves_to_search = leaves
        report.search_fraction = fraction_for_leaves(num_leaves, leaves)
        report.estimated_recall_at_10 = recall
        if score == "ah":
            report.dimensions_per_block = ah.dimensions_per_block
            report.lookup_type = lookup
            t = ah.anisotropic_quantization_threshold
            report.anisotropic_quantization_threshold = None if math.isnan(t) else t
        report.options["chosen"] = {
            "tree": asdict(Tree(num_leaves, leaves, **({k: v for k, v in asdict(tree).items() if k not in ("num_leaves", "num_leaves_to_search")} if tree else {}))),
            "score": score, "lookup_type": lookup,
            "dimensions_per_block": report.dimensions_per_block,
        }

        # ---- write ----
        _progress(f"writing the on-device index ({score}, {leaves}/{num_leaves} leaves searched)")
        index_bytes = _serialize_index(
            matrix if score == "brute_force" else None,
            artifacts.get("codes") if score == "ah" else None,
            artifacts.get("codebooks") if score == "ah" else None,
            lookup, centroids, assignment, report.search_fraction, distance, dim, metadata, userinfo, compression,
        )
        report.vector_bytes = bf_bytes if score == "brute_force" else int(artifacts["codes"].size)
        report.index_bytes = len(index_bytes)
        write_bytes_atomically(out_path, index_bytes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.build_seconds = time.perf_counter() - started
    return report


def _decide(candidates, fixed_leaves, target, budget, reasons, warnings):
    """Pick (score, lookup, leaves, recall): smallest index that meets the target, within budget."""
    evaluated = []
    for score, lookup, values, recalls, size in candidates:
        if fixed_leaves:
            recall = recalls[values.index(fixed_leaves)] if fixed_leaves in values else None
            leaves = fixed_leaves
        else:
            leaves = autotune.smallest_reaching(values, recalls, target)
            recall = recalls[values.index(leaves)] if leaves else None
        best = max(recalls) if recalls else None
        evaluated.append((score, lookup, leaves, recall, size, values, recalls, best))
    label = lambda s, l: "float brute force" if s == "brute_force" else f"AH ({l} LUT)"  # noqa: E731
    if len(evaluated) == 1:
        score, lookup, leaves, recall, size, values, recalls, best = evaluated[0]
        if leaves is None:
            leaves, recall = _near_best(values, recalls)
            warnings.append(f"{label(score, lookup)} reaches recall@10 {best:.3f} at best, below the target {target}")
        reasons.append(f"{label(score, lookup)}: " + ("given" if fixed_leaves else f"{leaves} leaves is the fewest reaching recall@10 {recall:.3f}"))
        if size > budget:
            warnings.append(f"the vectors take {size / 1e6:.1f} MB, over the {budget / 1e6:.3g} MB budget")
        return score, lookup, leaves, recall
    # Automatic: cheapest in bytes first (AH int8, AH int16, float), must fit the budget and reach target.
    order = sorted(evaluated, key=lambda e: (e[4], 0 if e[1] == "int8" else 1))
    for score, lookup, leaves, recall, size, values, recalls, best in order:
        if size > budget:
            reasons.append(f"not {label(score, lookup)}: {size / 1e6:.1f} MB is over the {budget / 1e6:.3g} MB budget")
            continue
        if recall is not None and (fixed_leaves is None or recall >= target):
            reasons.append(
                f"{label(score, lookup)}: {size / 1e6:.1f} MB, recall@10 {recall:.3f} >= target {target} "
                f"at {leaves} leaves searched"
            )
            return score, lookup, leaves, recall
        reasons.append(f"not {label(score, lookup)}: recall@10 reaches only {best:.3f} (target {target})")
    # Nothing meets target within budget: the best recall among those that fit, else the smallest.
    fitting = [e for e in order if e[4] <= budget] or order[:1]
    score, lookup, leaves, recall, size, values, recalls, best = max(fitting, key=lambda e: e[7])
    if fixed_leaves is None:
        leaves, recall = _near_best(values, recalls)
    over = [e for e in order if e[4] > budget and e[7] is not None and e[7] >= target]
    hint = f" (float brute force would reach it: allow {over[0][4] / 1e6:.3g} MB with max_index_mb)" if over else ""
    warnings.append(f"no scoring reaches recall@10 {target} within {budget / 1e6:.3g} MB; chose {label(score, lookup)} "
                    f"with recall@10 {recall:.3f} at {leaves} leaves{hint}")
    return score, lookup, leaves, recall


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
    """Partitions from a scann tree over all N; AH codebooks from scann on a training sample.

    Why two scann runs: scann 1.4.2's serialize() of a tree + AH searcher peaks at about 31 KB per
    point (3.1 GB at N = 100k: a 1M build would not fit), while tree + brute force and AH alone
    serialize cheaply. The AH codebook is trained by scann (anisotropic loss included) on
    ``training_sample_size`` points; every point is then encoded here to its nearest codeword per
    block, the codes the recall sweep measures and the device searches.
    """
    from models import compat  # noqa: PLC0415

    pybind = compat.import_scann_pybind()
    artifacts: dict[str, Any] = {}
    if num_leaves > 1:
        t = tree or Tree(num_leaves, 1)
        kwargs = asdict(t)
        kwargs["num_leaves"] = num_leaves
        kwargs["num_leaves_to_search"] = max(1, kwargs["num_leaves_to_search"] or 1)
        kwargs["min_partition_size"] = min(kwargs["min_partition_size"], max(1, matrix.shape[0] // num_leaves))
        builder = pybind.builder(matrix, 10, distance).tree(**kwargs).score_brute_force()
        folder = os.path.join(work, "tree")
        os.makedirs(folder)
        try:
            searcher = pybind.create_searcher(matrix, _scann_config(builder), threads)
        except RuntimeError as error:
            raise BeamlensError(f"ScaNN partitioning failed: {error}") from error
        searcher.serialize(folder)
        del searcher
        with open(os.path.join(folder, "serialized_partitioner.pb"), "rb") as stream:
            artifacts["centroids"] = read_scann_partitioner_centroids(stream.read())
        artifacts["assignment"] = np.load(os.path.join(folder, "datapoint_to_token.npy")).astype(np.int64).ravel()
        shutil.rmtree(folder, ignore_errors=True)
        if len(artifacts["centroids"]) != num_leaves:
            _progress(f"scann made {len(artifacts['centroids'])} leaves (asked {num_leaves})")
    if ah is not None:
        n = matrix.shape[0]
        sample_size = min(n, max(AH_MIN_POINTS, int(ah.training_sample_size)))
        rows = np.sort(np.random.default_rng(0).choice(n, sample_size, replace=False)) if sample_size < n else np.arange(n)
        sample = np.ascontiguousarray(matrix[rows])
        _progress(f"training AH codebooks on {sample_size} points")
        builder = pybind.builder(sample, 10, distance).score_ah(
            ah.dimensions_per_block, anisotropic_quantization_threshold=ah.anisotropic_quantization_threshold,
            training_sample_size=sample_size, hash_type="lut256", training_iterations=ah.training_iterations,
        )
        folder = os.path.join(work, "ah")
        os.makedirs(folder)
        try:
            searcher = pybind.create_searcher(sample, _scann_config(builder), threads)
        except RuntimeError as error:
            raise BeamlensError(f"ScaNN asymmetric hashing training failed: {error}") from error
        searcher.serialize(folder)
        del searcher
        with open(os.path.join(folder, "ah_codebook.pb"), "rb") as stream:
            artifacts["codebooks"] = read_scann_codebooks(stream.read())
        _progress(f"encoding {n} points")
        artifacts["codes"] = encode_ah(matrix, artifacts["codebooks"])
    return artifacts


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


def _serialize_index(float_db, codes, codebooks, lookup, centroids, assignment, search_fraction, distance, dim,
                     metadata, userinfo, compression) -> bytes:
    from tensorflow_lite_support.scann_ondevice.cc.python import index_builder  # noqa: PLC0415

    config = encode_ondevice_config(distance, centroids, search_fraction, codebooks if codes is not None else None,
                                    lookup or "int8")
    kwargs: dict[str, Any] = {}
    if codes is not None:
        embedding_dim = codes.shape[1]
        kwargs["hashed_database"] = np.ascontiguousarray(codes).ravel()
    else:
        embedding_dim = dim
        kwargs["float_database"] = np.ascontiguousarray(float_db, np.float32).ravel()
    try:
        return index_builder.create_serialized_index_file(
            embedding_dim, config, userinfo, np.asarray(assignment, np.uint32), metadata,
            compression=compression, **kwargs,
        )
    except Exception as error:  # pybind11_abseil StatusNotOk
        raise BeamlensError(f"the on-device index builder refused the index: {error}") from error
