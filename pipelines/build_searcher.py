"""``beamlens build-searcher``: merge embedding shards into an on-device ScaNN index and export searchers.

    beamlens build-searcher --shards out/embeddings --out out/searcher \\
        --text-embedder text_embedder.tflite --image-embedder image_embedder.tflite

writes ``<out>/text_searcher.tflite`` (text -> image search), ``<out>/image_searcher.tflite``
(image -> image), with ``--format scann_index_file`` ``<out>/index.ldb``, and always
``<out>/searcher_report.json`` (what was chosen and why, measured recall). Both searchers share
ONE built index.

The work is one library call, ``beamlens.build_searcher`` (models/searcher/build.py: THE shard
reader, the ScaNN build, the attach step; see there); ``beamlens reindex`` makes the same call. The index
options are defined once, in ``pipelines.index_options.add_index_arguments``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from beamlens.models.searcher.build import build_searcher
from beamlens.pipelines.index_options import add_index_arguments, searcher_request


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="beamlens build-searcher", description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", required=True, action="append", metavar="DIR",
                   help="folder written by `beamlens embed` (manifest.json + shards); repeat it to merge several "
                        "embedding runs (for example the train and val splits) into one index")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--text-embedder", help="text embedder .tflite: writes text_searcher.tflite")
    p.add_argument("--image-embedder", help="image embedder .tflite: writes image_searcher.tflite")
    return add_index_arguments(p)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Parsed arguments -> the searchers (``beamlens.build_searcher``); returns the build summary."""
    return build_searcher(searcher_request(args, args.shards, args.out, args.text_embedder, args.image_embedder)).report


def main(argv: Sequence[str] | None = None) -> int:
    run(build_parser().parse_args(list(argv) if argv is not None else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
