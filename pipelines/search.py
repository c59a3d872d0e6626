"""``beamlens search``: ask a TFLite searcher a question, the way a phone would.

    beamlens search text_searcher.tflite "a red circle next to a blue square" -k 10
    beamlens search image_searcher.tflite --image query.jpg --html results.html
    beamlens search text_searcher.tflite "two dogs" --json

``main`` dedicates the process to the Task Library before protobuf is imported (tflite-support
0.4.4 cannot share a process with TensorFlow), so TensorFlow is never loaded: start-up is quick.

A query image is checked by beamlens' decoder and pixel budget (``--max-image-pixels``) before the
Task Library decodes it, so a decompression bomb or a corrupt file is a one-line error (exit 2).
When fewer than k results come back, a note on stderr (and ``"note"`` in --json) says why.
"""

from __future__ import annotations

import argparse
import json
import sys

from beamlens.models import compat
from beamlens.models.errors import BeamlensError
from beamlens.models.search.html import render_search_page
from beamlens.models.encoders.preprocessing import DEFAULT_MAX_IMAGE_PIXELS
from beamlens.models.search.runtime import DEFAULT_K, IMAGE, TEXT, Searcher, check_k, check_text_query
from beamlens.models.io.files import write_text_atomically  # (no Beam, TF or protobuf imported)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beamlens search",
        description="Query a TFLite searcher (Task Library TextSearcher, or ImageSearcher with --image).",
    )
    parser.add_argument("searcher", help="a .tflite searcher file (embedder with an attached ScaNN index)")
    parser.add_argument("query", nargs="?", help="the text to search for (omit with --image)")
    parser.add_argument("--image", help="search with this image instead of text (ImageSearcher)")
    parser.add_argument("-k", "--top-k", dest="k", type=int, default=DEFAULT_K, help="number of results (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--html", metavar="FILE", help="also write an HTML page with the result images as a grid")
    parser.add_argument(
        "--images", action="append", default=[], metavar="DIR",
        help="folder with local copies of the images, for thumbnails (repeatable)",
    )
    parser.add_argument("--index-file", help="search this standalone .ldb index instead of the attached one")
    parser.add_argument("--threads", type=int, default=1, help="Task Library threads (default 1, as on a phone)")
    parser.add_argument(
        "--max-image-pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS, metavar="N",
        help="refuse a query image whose header claims more than N pixels (default %(default)s)",
    )
    return parser


def _print_note(note: str | None) -> None:
    """Why fewer than k results came back: on stderr, so --json output on stdout stays parseable."""
    if note:
        print(f"note: {note}", file=sys.stderr)


def main(argv: list[str]) -> int:
    # Dedicate this process to the Task Library (runs it in-process, no TensorFlow, fast start).
    # Done here, not at import, so merely importing this module never changes a process; where
    # TensorFlow is already loaded the search API uses its isolated worker instead.
    if compat.can_prepare_tflite_process():
        compat.prepare_tflite_process()
    args = build_parser().parse_args(argv)
    k = check_k(args.k)
    if args.image is not None and args.query is not None:
        raise BeamlensError("give either a text query or --image, not both")
    if args.image is None:
        if args.query is None:
            raise BeamlensError("the query is missing: give some text to search for, or --image FILE")
        query: str = check_text_query(args.query)
        modality = TEXT
    else:
        query = args.image
        modality = IMAGE
    with Searcher(args.searcher, modality=modality, max_results=k, num_threads=args.threads, index_file=args.index_file,
                  max_image_pixels=args.max_image_pixels) as searcher:
        results = searcher.search(query, k=k)
    if args.html:
        page = render_search_page(results, searcher.path, args.images, query_image=args.image)
        write_text_atomically(args.html, page)
    if args.json:
        payload = {"searcher": searcher.path, **results.to_dict()}
        if args.html:
            payload["html"] = args.html
        print(json.dumps(payload, indent=2, ensure_ascii=False))
        _print_note(results.note)
        return 0
    print(f"{len(results.hits)} results for {results.query!r} ({results.latency_ms:.2f} ms, distance: smaller is closer)")
    print(f"{'rank':>4}  {'distance':>10}  {'image id':<24}  uri")
    for hit in results.hits:
        print(f"{hit.rank:>4}  {hit.distance:>10.4f}  {hit.image_id:<24}  {hit.uri}")
    _print_note(results.note)
    if args.html:
        print(f"wrote {args.html}", file=sys.stderr)
    return 0
