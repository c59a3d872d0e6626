"""The searcher evaluation behind ``beamlens evaluate``: how good and how fast is a searcher.

Held-out captions are the queries; a caption hits when its own image is in the top k.
Reported: top-k accuracy through the real Task Library TextSearcher (the reference metric), the
same through exact numpy search over the shard vectors (caption vectors from the Task Library
TextEmbedder, so only the index differs), ANN recall@k against exact search, TextSearcher
latency percentiles (one thread, measured around ``search`` alone) and file sizes, and a sweep of
leaves searched drawn as recall versus latency. Writes ``report.json``, ``recall_vs_latency.png``
and ``report.html`` into ``out``, each atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from beamlens.models.progress import progress_printer
from beamlens.models.errors import BeamlensError
from beamlens.models.io import files
from beamlens.models.io.files import write_bytes_atomically, write_text_atomically
from beamlens.models.search import evaluation as ev
from beamlens.models.search.html import render_evaluation_report
from beamlens.models.search.runtime import Searcher, check_readable_file, embed_text, time_text_embedder

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
PLOT_PNG = "recall_vs_latency.png"
QUERY_BATCH = 50
WARMUP_QUERIES = 3


_progress = progress_printer("[evaluate]")


@dataclass
class EvaluationRequest:
    """What to evaluate and how (the fields are ``beamlens evaluate``'s options)."""

    searcher: str
    text_embedder: str
    captions: str
    shards: Sequence[str]
    out: str
    images: Sequence[str] = ()
    max_queries: int = 500
    ks: Sequence[int] = tuple(ev.DEFAULT_KS)
    leaves: Sequence[int] = tuple(ev.DEFAULT_LEAVES_SWEEP)
    no_sweep: bool = False
    sweep_queries: int = 200
    distance: Optional[str] = None
    examples: int = 3
    seed: int = 0


# ---------------------------------------------------------------------------------------------
# The searcher builder's tools (issue 7): index layout and leaves-to-search rewriting
# ---------------------------------------------------------------------------------------------
def _searcher_tools() -> Any:
    """The searcher builder package, when it offers what the sweep needs (else None)."""
    try:
        from beamlens.models import searcher as searcher_tools  # noqa: PLC0415
    except ImportError:
        return None
    needed = ("read_searcher", "rewrite_leaves_to_search")
    return searcher_tools if all(hasattr(searcher_tools, name) for name in needed) else None


def _index_layout(searcher_path: str) -> dict[str, Any] | None:
    """num_leaves, leaves_to_search and distance of the searcher's index, or None if unknown."""
    tools = _searcher_tools()
    if tools is None:
        return None
    info = tools.read_searcher(searcher_path)
    get = info.get if isinstance(info, dict) else lambda name, default=None: getattr(info, name, default)
    return {
        "num_leaves": get("num_leaves"),
        "leaves_to_search": get("num_leaves_to_search", get("leaves_to_search")),
        "distance": get("distance_measure", get("distance")),
        "num_items": get("num_items", get("count")),
    }


def _write_leaves_variant(searcher_path: str, out_path: str, leaves_to_search: int) -> None:
    from beamlens.models import searcher as searcher_tools  # noqa: PLC0415

    searcher_tools.rewrite_leaves_to_search(searcher_path, out_path, leaves_to_search)


# ---------------------------------------------------------------------------------------------
# The evaluation
# ---------------------------------------------------------------------------------------------
def _run_searcher(path: str, captions: Sequence[str], k: int, label: str) -> tuple[list[list[str]], list[float], list[Any]]:
    ids: list[list[str]] = []
    latencies: list[float] = []
    results: list[Any] = []
    with Searcher(path, max_results=k, num_threads=1) as searcher:
        searcher.search_many(list(captions[:WARMUP_QUERIES]), k=k)  # first searches pay one-off costs
        for start in range(0, len(captions), QUERY_BATCH):
            batch = searcher.search_many(captions[start : start + QUERY_BATCH], k=k)
            results.extend(batch)
            ids.extend(r.image_ids for r in batch)
            latencies.extend(r.latency_ms for r in batch)
            _progress(f"{label}: {min(start + QUERY_BATCH, len(captions))}/{len(captions)} queries")
    return ids, latencies, results


@dataclass
class _Queries:
    """The held-out captions that were run, their expected images, and the exact answers."""

    captions: list[str]
    expected: list[str]
    total_captions: int
    vectors: np.ndarray
    exact_ids: list[list[str]]
    exact_distances: np.ndarray


def _load_items(request: EvaluationRequest, notes: list[str]) -> tuple[Any, dict[str, int]]:
    for folder in request.shards:
        if not files.is_remote(folder) and not os.path.isdir(folder):
            raise BeamlensError(f"shards folder not found: {folder}")
    # The norm rule is the index build's (dot product); the evaluation scores whatever was built.
    items = ev.read_shard_items(request.shards, progress=_progress, unit_norm=False)
    _progress(f"{len(items.image_ids)} indexed items, {items.vectors.shape[1]}-d")
    if items.duplicates_dropped:
        notes.append(f"{items.duplicates_dropped} duplicate image ids in the shards were read once.")
    return items, {image_id: row for row, image_id in enumerate(items.image_ids)}


def _distance(request: EvaluationRequest, layout: dict[str, Any] | None) -> str:
    distance = request.distance or (layout or {}).get("distance") or ev.DOT_PRODUCT
    distance = {"DOT_PRODUCT": ev.DOT_PRODUCT, "SQUARED_L2_DISTANCE": ev.SQUARED_L2}.get(str(distance), str(distance)).lower()
    return distance if distance in (ev.DOT_PRODUCT, ev.SQUARED_L2) else ev.DOT_PRODUCT


def _layout(searcher_path: str, indexed_items: int, notes: list[str]) -> dict[str, Any] | None:
    try:
        layout = _index_layout(searcher_path)
    except BeamlensError as error:  # the Task Library may still read it; report without layout
        notes.append(f"The index layout could not be read ({error}); no leaves sweep.")
        return None
    indexed = (layout or {}).get("num_items")
    if indexed is not None and int(indexed) != indexed_items:
        notes.append(
            f"The searcher indexes {indexed} items but the shards hold {indexed_items}: it was not built "
            "from exactly these shards, so exact search and recall compare different sets."
        )
    return layout


def _queries(request: EvaluationRequest, embedder_path: str, items: Any, row_of: dict[str, int], max_k: int,
             distance: str, notes: list[str]) -> _Queries:
    queries_all = ev.load_caption_queries(request.captions)
    _progress(f"{len(queries_all)} captions in {request.captions}")
    queries, unindexed = ev.select_queries(queries_all, set(row_of), request.max_queries, request.seed)
    if unindexed:
        notes.append(f"{unindexed} captions name images that are not in the shards; they were left out.")
    if not queries:
        raise BeamlensError(f"none of the captions in {request.captions} belong to an image in {', '.join(request.shards)}")
    captions = [q.caption for q in queries]
    _progress(f"embedding {len(captions)} captions with the Task Library TextEmbedder")
    vectors = embed_text(embedder_path, captions)
    if vectors.shape[1] != items.vectors.shape[1]:
        raise BeamlensError(
            f"the text embedder {embedder_path} makes {vectors.shape[1]}-d vectors but the shards in "
            f"{', '.join(request.shards)} hold {items.vectors.shape[1]}-d vectors: not the same model pair"
        )
    _progress("exact search (numpy brute force)")
    # at least 10 columns: the leaves sweep measures recall@10 whatever ks says
    rows, distances = ev.exact_search(vectors, items.vectors, max(max_k, 10), distance)
    return _Queries(captions, [q.image_id for q in queries], len(queries_all), vectors,
                    [[items.image_ids[r] for r in row] for row in rows], distances)


def evaluate_searcher(request: EvaluationRequest) -> dict[str, Any]:
    """The whole evaluation (see the module docstring); writes the report files, returns the report."""
    searcher_path = check_readable_file(request.searcher, "searcher file")
    embedder_path = check_readable_file(request.text_embedder, "text embedder")
    if request.max_queries < 1:
        raise BeamlensError(f"--max-queries must be at least 1, got {request.max_queries}")
    ks, notes, started = sorted(set(request.ks)), [], time.perf_counter()
    max_k = max(ks)
    items, row_of = _load_items(request, notes)
    layout = _layout(searcher_path, len(items.image_ids), notes)
    distance = _distance(request, layout)
    q = _queries(request, embedder_path, items, row_of, max_k, distance, notes)

    def recall(ids: list[list[str]], wanted_ks: list[int], count: int) -> dict[int, float]:
        returned = [ev.true_distances(q.vectors[i], [row_of[x] for x in ids[i] if x in row_of], items.vectors, distance)
                    for i in range(count)]
        return ev.ann_recall_by_distance(returned, q.exact_distances[:count], wanted_ks)

    ann_ids, latencies, ann_results = _run_searcher(searcher_path, q.captions, max_k, "searcher")
    latency_k = min(10, max_k)  # what an app asks for: the top-N heap grows with k
    latencies_small_k = (_run_searcher(searcher_path, q.captions, latency_k, f"latency at k={latency_k}")[1]
                         if latency_k != max_k else latencies)
    short = ev.short_result_counts(ann_ids, ks, len(items.image_ids))
    if any(short.values()):
        notes.append(
            "Some queries returned fewer results than k: the on-device index returns at most the points in "
            f"the leaves it searches ({', '.join(f'k={k}: {n}' for k, n in short.items() if n)} queries); "
            "their missing ranks count as misses.")
    report: dict[str, Any] = {
        "searcher": searcher_path, "text_embedder": embedder_path, "captions": os.path.abspath(request.captions),
        "shards": [folder if files.is_remote(folder) else os.path.abspath(folder) for folder in request.shards],
        "ks": ks, "max_results": max_k, "distance": distance, "num_items": len(items.image_ids),
        "num_captions": q.total_captions, "num_queries": len(q.captions),
        "num_leaves": (layout or {}).get("num_leaves"), "leaves_to_search": (layout or {}).get("leaves_to_search"),
        "top_k_accuracy": {
            "searcher": {str(k): v for k, v in ev.top_k_accuracy(ann_ids, q.expected, ks).items()},
            "exact": {str(k): v for k, v in ev.top_k_accuracy(q.exact_ids, q.expected, ks).items()},
        },
        "ann_recall": {str(k): v for k, v in recall(ann_ids, ks, len(ann_ids)).items()},
        "short_result_lists": {str(k): v for k, v in short.items()},
        "latency_ms": ev.latency_summary(latencies),
        "latency_ms_by_k": {str(max_k): ev.latency_summary(latencies), str(latency_k): ev.latency_summary(latencies_small_k)},
        "size_bytes": {"searcher": ev.file_size(searcher_path), "index": ev.attached_index_size(searcher_path),
                       "text_embedder": ev.file_size(embedder_path)},
    }
    _progress("timing the text embedder alone (the query's encoder share)")
    report["text_embedder_latency_ms"] = ev.latency_summary(
        time_text_embedder(embedder_path, q.captions[: max(1, request.sweep_queries)]))
    sweep, plot_png = _leaves_sweep(request, searcher_path, layout, q.captions, q.expected, recall, notes,
                                    report["text_embedder_latency_ms"]["p50"])
    report.update(leaves_sweep=sweep, notes=notes, seconds=round(time.perf_counter() - started, 2))
    _write_report(request, report, plot_png, [(q.captions[i], q.expected[i], _first(ann_results[i], 10))
                                              for i in range(min(request.examples, len(q.captions)))])
    return report


def _write_report(request: EvaluationRequest, report: dict[str, Any], plot_png: bytes | None, examples: list) -> None:
    os.makedirs(request.out, exist_ok=True)
    if plot_png:
        write_bytes_atomically(os.path.join(request.out, PLOT_PNG), plot_png)
        report["plot"] = PLOT_PNG
    report["examples"] = [{"caption": c, "expected_image_id": e, "result_image_ids": r.image_ids} for c, e, r in examples]
    write_text_atomically(os.path.join(request.out, REPORT_HTML),
                          render_evaluation_report(report, plot_png, examples, list(request.images)))
    write_text_atomically(os.path.join(request.out, REPORT_JSON),
                          json.dumps(report, indent=2, allow_nan=False, default=_json_default))


def _first(results: Any, k: int) -> Any:
    from dataclasses import replace  # noqa: PLC0415

    return replace(results, hits=results.hits[:k], requested_k=min(k, results.requested_k))


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    raise TypeError(f"not JSON serializable: {type(value)}")


def _leaves_sweep(
    args: EvaluationRequest,
    searcher_path: str,
    layout: dict[str, Any] | None,
    captions: list[str],
    expected: list[str],
    recall: Callable[[list[list[str]], list[int], int], dict[int, float]],
    notes: list[str],
    embedder_p50_ms: float | None = None,
) -> tuple[list[dict[str, Any]], bytes | None]:
    if args.no_sweep:
        return [], None
    if not layout or not layout.get("num_leaves"):
        notes.append("Leaves sweep skipped: the searcher's index layout could not be read.")
        return [], None
    values = ev.leaves_sweep_values(int(layout["num_leaves"]), args.leaves)
    count = min(len(captions), max(1, args.sweep_queries))
    sweep = []
    with tempfile.TemporaryDirectory(prefix="beamlens-sweep-") as folder:
        for leaves in values:
            variant = os.path.join(folder, f"searcher_leaves_{leaves}.tflite")
            _write_leaves_variant(searcher_path, variant, leaves)
            ids, latencies, _ = _run_searcher(variant, captions[:count], 10, f"sweep {leaves}/{layout['num_leaves']} leaves")
            lat = ev.latency_summary(latencies)
            sweep.append(
                {
                    "leaves_to_search": leaves,
                    "recall_at_10": recall(ids, [10], count)[10],
                    "top_10_accuracy": ev.top_k_accuracy(ids, expected[:count], [10])[10],
                    "p50_ms": lat["p50"],
                    "p95_ms": lat["p95"],
                    "queries": count,
                }
            )
            os.remove(variant)
    plot = ev.recall_latency_plot_png(sweep, f"{layout['num_leaves']} leaves, {count} queries", embedder_p50_ms) if sweep else None
    return sweep, plot




@dataclass(frozen=True)
class Evaluation:
    """The headline figures of :func:`evaluate`; ``report`` is ``<out>/report.json`` in full."""

    out: str
    num_queries: int
    num_items: int
    top_k_accuracy: dict[str, dict[str, float]]  # {"searcher": {"10": ...}, "exact": {...}}
    ann_recall: dict[str, float]
    latency_ms_by_k: dict[str, dict[str, float]]
    report: dict[str, Any]


def evaluate(request: EvaluationRequest) -> Evaluation:
    """Quality and latency of a searcher (``beamlens evaluate``), report files written to ``request.out``."""
    report = evaluate_searcher(request)
    return Evaluation(request.out, report["num_queries"], report["num_items"], report["top_k_accuracy"],
                      report["ann_recall"], report["latency_ms_by_k"], report)
