"""``beamlens evaluate``: how good and how fast is a searcher, before it ships to phones.

    beamlens evaluate --searcher text_searcher.tflite --text-embedder text_embedder.tflite \\
        --captions held_out_captions.json --shards embeddings/ --out report/ [--images DIR]

Held-out captions are the queries; a caption hits when its own image is in the top k.
Reported: top-k accuracy through the real Task Library TextSearcher (the reference metric), the
same through exact numpy search over the shard vectors (caption vectors from the Task Library
TextEmbedder, so only the index differs), ANN recall@k against exact search, TextSearcher
latency percentiles (one thread, measured around ``search`` alone) and file sizes, and a sweep of
leaves searched drawn as recall versus latency. Writes ``report.json``, ``recall_vs_latency.png``
and ``report.html`` into --out, each atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any, Callable, Sequence

import numpy as np

from models import searcher_evaluation as ev
from models.atomic_files import write_bytes_atomically, write_text_atomically
from models.errors import BeamlensError
from models.html_pages import render_evaluation_report
from models.search_api import Searcher, check_readable_file, embed_text, time_text_embedder

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
PLOT_PNG = "recall_vs_latency.png"
QUERY_BATCH = 50
WARMUP_QUERIES = 3


def _progress(message: str) -> None:
    print(f"[evaluate] {message}", file=sys.stderr, flush=True)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="beamlens evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--searcher", required=True, help="text searcher .tflite (TextSearcher)")
    parser.add_argument("--text-embedder", required=True, help="the text embedder .tflite the searcher was built on")
    parser.add_argument("--captions", required=True, help="held-out captions: COCO captions JSON (or a list of {image_id, caption})")
    parser.add_argument(
        "--shards", required=True, action="append", metavar="DIR",
        help="the `beamlens embed` output(s) the searcher was built from (repeatable)",
    )
    parser.add_argument("--out", required=True, help="report folder")
    parser.add_argument("--images", action="append", default=[], metavar="DIR", help="local image folder for thumbnails (repeatable)")
    parser.add_argument("--max-queries", type=int, default=500, help="caption queries to run (default %(default)s)")
    parser.add_argument("--ks", type=_int_list, default=list(ev.DEFAULT_KS), help="k values, e.g. 1,5,10,100")
    parser.add_argument("--leaves", type=_int_list, default=list(ev.DEFAULT_LEAVES_SWEEP), help="leaves-searched sweep, e.g. 1,2,4,8,16,32")
    parser.add_argument("--no-sweep", action="store_true", help="skip the leaves-searched sweep")
    parser.add_argument("--sweep-queries", type=int, default=200, help="queries per sweep point (default %(default)s)")
    parser.add_argument("--distance", choices=[ev.DOT_PRODUCT, ev.SQUARED_L2], default=None, help="exact-search distance (default: the index's, else dot_product)")
    parser.add_argument("--examples", type=int, default=3, help="example queries shown in the HTML report")
    parser.add_argument("--seed", type=int, default=0, help="seed for choosing the queries")
    return parser


# ---------------------------------------------------------------------------------------------
# The searcher builder's tools (issue 7): index layout and leaves-to-search rewriting
# ---------------------------------------------------------------------------------------------
def _searcher_tools() -> Any:
    """The searcher builder package, when it offers what the sweep needs (else None)."""
    try:
        from models import searcher as searcher_tools  # noqa: PLC0415
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
    from models import searcher as searcher_tools  # noqa: PLC0415

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


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    searcher_path = check_readable_file(args.searcher, "searcher file")
    embedder_path = check_readable_file(args.text_embedder, "text embedder")
    if args.max_queries < 1:
        raise BeamlensError(f"--max-queries must be at least 1, got {args.max_queries}")
    ks = sorted(set(args.ks))
    max_k = max(ks)
    notes: list[str] = []
    started = time.perf_counter()

    queries_all = ev.load_caption_queries(args.captions)
    _progress(f"{len(queries_all)} captions in {args.captions}")
    for folder in args.shards:
        if "://" not in folder and not os.path.isdir(folder):
            raise BeamlensError(f"shards folder not found: {folder}")
    items = ev.read_shard_items(args.shards, progress=_progress)
    _progress(f"{len(items.image_ids)} indexed items, {items.vectors.shape[1]}-d")
    if items.duplicates_dropped:
        notes.append(f"{items.duplicates_dropped} duplicate image ids in the shards were read once.")
    row_of = {image_id: row for row, image_id in enumerate(items.image_ids)}
    queries, unindexed = ev.select_queries(queries_all, set(row_of), args.max_queries, args.seed)
    if unindexed:
        notes.append(f"{unindexed} captions name images that are not in the shards; they were left out.")
    if not queries:
        raise BeamlensError(f"none of the captions in {args.captions} belong to an image in {', '.join(args.shards)}")
    captions = [q.caption for q in queries]
    expected = [q.image_id for q in queries]

    try:
        layout = _index_layout(searcher_path)
    except BeamlensError as error:  # the Task Library may still read it; report without layout
        layout = None
        notes.append(f"The index layout could not be read ({error}); no leaves sweep.")
    indexed = (layout or {}).get("num_items")
    if indexed is not None and int(indexed) != len(items.image_ids):
        notes.append(
            f"The searcher indexes {indexed} items but the shards hold {len(items.image_ids)}: it was not built "
            "from exactly these shards, so exact search and recall compare different sets."
        )
    distance = args.distance or (layout or {}).get("distance") or ev.DOT_PRODUCT
    distance = {"DOT_PRODUCT": ev.DOT_PRODUCT, "SQUARED_L2_DISTANCE": ev.SQUARED_L2}.get(str(distance), str(distance)).lower()
    if distance not in (ev.DOT_PRODUCT, ev.SQUARED_L2):
        distance = ev.DOT_PRODUCT

    _progress(f"embedding {len(captions)} captions with the Task Library TextEmbedder")
    query_vectors = embed_text(embedder_path, captions)
    if query_vectors.shape[1] != items.vectors.shape[1]:
        raise BeamlensError(
            f"the text embedder {embedder_path} makes {query_vectors.shape[1]}-d vectors but the shards in "
            f"{', '.join(args.shards)} hold {items.vectors.shape[1]}-d vectors: not the same model pair"
        )
    _progress("exact search (numpy brute force)")
    # at least 10 columns: the leaves sweep measures recall@10 whatever --ks says
    exact_rows, exact_distances = ev.exact_search(query_vectors, items.vectors, max(max_k, 10), distance)
    exact_ids = [[items.image_ids[r] for r in row] for row in exact_rows]

    def recall(ids: list[list[str]], wanted_ks: list[int], count: int) -> dict[int, float]:
        returned = [
            ev.true_distances(query_vectors[q], [row_of[i] for i in ids[q] if i in row_of], items.vectors, distance)
            for q in range(count)
        ]
        return ev.ann_recall_by_distance(returned, exact_distances[:count], wanted_ks)

    ann_ids, latencies, ann_results = _run_searcher(searcher_path, captions, max_k, "searcher")
    # What an app asks for: latency with max_results = 10 as well (the top-N heap grows with k).
    latency_k = min(10, max_k)
    if latency_k != max_k:
        _, latencies_small_k, _ = _run_searcher(searcher_path, captions, latency_k, f"latency at k={latency_k}")
    else:
        latencies_small_k = latencies
    num_items = len(items.image_ids)
    short = ev.short_result_counts(ann_ids, ks, num_items)
    if any(short.values()):
        notes.append(
            "Some queries returned fewer results than k: the on-device index returns at most the points in "
            f"the leaves it searches ({', '.join(f'k={k}: {n}' for k, n in short.items() if n)} queries); "
            "their missing ranks count as misses."
        )
    report: dict[str, Any] = {
        "searcher": searcher_path,
        "text_embedder": embedder_path,
        "captions": os.path.abspath(args.captions),
        "shards": [os.path.abspath(folder) if "://" not in folder else folder for folder in args.shards],
        "ks": ks,
        "max_results": max_k,
        "distance": distance,
        "num_items": num_items,
        "num_captions": len(queries_all),
        "num_queries": len(queries),
        "num_leaves": (layout or {}).get("num_leaves"),
        "leaves_to_search": (layout or {}).get("leaves_to_search"),
        "top_k_accuracy": {
            "searcher": {str(k): v for k, v in ev.top_k_accuracy(ann_ids, expected, ks).items()},
            "exact": {str(k): v for k, v in ev.top_k_accuracy(exact_ids, expected, ks).items()},
        },
        "ann_recall": {str(k): v for k, v in recall(ann_ids, ks, len(ann_ids)).items()},
        "short_result_lists": {str(k): v for k, v in short.items()},
        "latency_ms": ev.latency_summary(latencies),
        "latency_ms_by_k": {str(max_k): ev.latency_summary(latencies), str(latency_k): ev.latency_summary(latencies_small_k)},
        "size_bytes": {
            "searcher": ev.file_size(searcher_path),
            "index": ev.attached_index_size(searcher_path),
            "text_embedder": ev.file_size(embedder_path),
        },
    }

    _progress("timing the text embedder alone (the query's encoder share)")
    embedder_latency = ev.latency_summary(time_text_embedder(embedder_path, captions[: max(1, args.sweep_queries)]))
    report["text_embedder_latency_ms"] = embedder_latency
    sweep, plot_png = _leaves_sweep(args, searcher_path, layout, captions, expected, recall, notes, embedder_latency["p50"])
    report["leaves_sweep"] = sweep
    report["notes"] = notes
    report["seconds"] = round(time.perf_counter() - started, 2)

    os.makedirs(args.out, exist_ok=True)
    if plot_png:
        write_bytes_atomically(os.path.join(args.out, PLOT_PNG), plot_png)
        report["plot"] = PLOT_PNG
    examples = [(captions[i], expected[i], _first(ann_results[i], 10)) for i in range(min(args.examples, len(queries)))]
    report["examples"] = [
        {"caption": c, "expected_image_id": e, "result_image_ids": r.image_ids} for c, e, r in examples
    ]
    image_dirs = list(args.images)
    write_text_atomically(os.path.join(args.out, REPORT_HTML), render_evaluation_report(report, plot_png, examples, image_dirs))
    write_text_atomically(os.path.join(args.out, REPORT_JSON), json.dumps(report, indent=2, allow_nan=False, default=_json_default))
    return report


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
    args: argparse.Namespace,
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


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    report = evaluate(args)
    acc = report["top_k_accuracy"]
    print(f"queries: {report['num_queries']}   items: {report['num_items']}   distance: {report['distance']}")
    print(f"{'k':>5}  {'searcher':>9}  {'exact':>7}  {'recall':>7}")
    for k in report["ks"]:
        key = str(k)
        print(f"{k:>5}  {acc['searcher'][key]:>9.3f}  {acc['exact'][key]:>7.3f}  {report['ann_recall'][key]:>7.3f}")
    for k, lat in report["latency_ms_by_k"].items():
        print(f"latency ms at k={k}:  p50 {lat['p50']:.3f}  p95 {lat['p95']:.3f}  p99 {lat['p99']:.3f}")
    encoder = report["text_embedder_latency_ms"]
    print(f"text embedder alone:  p50 {encoder['p50']:.3f}  p95 {encoder['p95']:.3f}  p99 {encoder['p99']:.3f}")
    print(f"report: {os.path.join(args.out, REPORT_HTML)}")
    return 0
