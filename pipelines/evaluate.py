"""``beamlens evaluate``: how good and how fast is a searcher, before it ships to phones.

    beamlens evaluate --searcher text_searcher.tflite --text-embedder text_embedder.tflite \\
        --captions held_out_captions.json --shards embeddings/ --out report/ [--images DIR]

Quality (top-k through the real TextSearcher and through exact numpy search, ANN recall) and speed
(latency percentiles, a leaves-searched sweep) of a searcher, as report.json / .html / .png in --out.
The work is one library call, ``beamlens.evaluate`` (models/search/report.py; its docstring has the detail).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from beamlens.models.search import evaluation as ev
from beamlens.models.search.report import REPORT_HTML, EvaluationRequest, evaluate as evaluate_request


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


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Parsed arguments -> the report (``beamlens.evaluate``; see models/search/report.py)."""
    return evaluate_request(EvaluationRequest(**vars(args))).report


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
