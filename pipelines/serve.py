"""``beamlens serve``: try searchers in the browser before they ship (a live search page + JSON API).

    beamlens serve --searcher text_searcher.tflite [--image-searcher image_searcher.tflite]
                   [--host 127.0.0.1 --port 8080]

Then open http://127.0.0.1:8080/ (or ``/?q=a+red+circle&k=10`` as a link to share); the JSON API
(``/api/search?q=…&k=…``, ``POST /api/search-image``) answers what ``beamlens search --json``
prints. The app itself is the models/search/server/ package; this module parses, validates and calls it.
Like ``beamlens search``, the process is dedicated to the Task Library and never loads TensorFlow.
"""

from __future__ import annotations

import argparse

from beamlens.models import compat
from beamlens.models.errors import BeamlensError
from beamlens.models.encoders.preprocessing import DEFAULT_MAX_IMAGE_PIXELS, check_max_image_pixels


def build_parser() -> argparse.ArgumentParser:
    from beamlens.models.search import server as s  # noqa: PLC0415 (numpy/Pillow only; the web stack loads in serve())

    parser = argparse.ArgumentParser(
        prog="beamlens serve",
        description="A live search page and JSON API over TFLite searchers (Task Library), for trying them out.",
    )
    parser.add_argument("--searcher", help="a text -> image searcher .tflite (TextSearcher)")
    parser.add_argument("--image-searcher", help="an image -> image searcher .tflite (ImageSearcher): uploads, 'more like this'")
    parser.add_argument("--host", default=s.DEFAULT_HOST, help="address to listen on (default %(default)s: this machine only)")
    parser.add_argument("--port", type=int, default=s.DEFAULT_PORT, help="port (default %(default)s)")
    parser.add_argument("--searchers-per-file", type=int, default=s.ServeOptions.searchers_per_file, metavar="N",
                        help="open each searcher N times for concurrent requests; each copy holds the index in memory "
                             "(default %(default)s)")
    parser.add_argument("--max-k", type=int, default=s.DEFAULT_MAX_K, help="largest k a request may ask (default %(default)s)")
    parser.add_argument("--max-query-chars", type=int, default=s.DEFAULT_MAX_QUERY_CHARS,
                        help="longest text query (default %(default)s)")
    parser.add_argument("--max-upload-mb", type=float, default=s.DEFAULT_MAX_UPLOAD_BYTES / 2**20,
                        help="largest image upload in MiB (default %(default)s)")
    parser.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS, metavar="N",
                        help="refuse an uploaded image whose header claims more than N pixels (default %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="Task Library threads per searcher (default 1, as on a phone)")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    return parser


def main(argv: list[str]) -> int:
    # As in `beamlens search`: the Task Library runs in this process, which never loads TensorFlow.
    if compat.can_prepare_tflite_process():
        compat.prepare_tflite_process()
    from beamlens.models.search import server as s  # noqa: PLC0415

    args = build_parser().parse_args(argv)
    if not args.max_upload_mb > 0:
        raise BeamlensError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    limits = s.ServerLimits(
        max_query_chars=args.max_query_chars,
        max_k=args.max_k,
        max_upload_bytes=max(1, int(args.max_upload_mb * 2**20)),
        max_image_pixels=check_max_image_pixels(args.max_image_pixels),
    )
    options = s.ServeOptions(
        text_searcher=args.searcher, image_searcher=args.image_searcher, host=args.host, port=args.port,
        searchers_per_file=args.searchers_per_file, limits=limits, num_threads=args.threads,
        access_log=args.access_log,
    )
    s.serve(options)
    return 0
