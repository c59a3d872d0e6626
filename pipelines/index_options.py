"""The index options, defined once: ``beamlens build-searcher`` parses them, and ``beamlens
reindex`` parses its ``--searcher-arg`` values with the same definitions, so both commands build
an index from one :class:`models.searcher.build.SearcherRequest` (a library call, not a command
calling another command's parser)."""

from __future__ import annotations

import argparse
from typing import NoReturn, Optional, Sequence

from beamlens.models.errors import BeamlensError


def add_index_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ScaNN / on-device index options, defined once for every command that builds an index."""
    from beamlens.models.searcher.options import DEFAULT_MAX_INDEX_MB, DEFAULT_TARGET_RECALL, DISTANCE_MEASURES, DOT_PRODUCT, LOOKUP_TYPES  # noqa: PLC0415
    from beamlens.models.searcher.tuning_queries import TUNE_ON  # noqa: PLC0415

    p = parser
    p.add_argument("--format", choices=["tflite", "scann_index_file"], action="append",
                   help="tflite (default when an embedder is given) and/or scann_index_file (index.ldb); repeatable")
    p.add_argument("--distance", choices=DISTANCE_MEASURES, default=DOT_PRODUCT)
    p.add_argument("--num-leaves", type=int, help="k-means leaves (default: about sqrt(N))")
    p.add_argument("--leaves-to-search", type=int, help="leaves searched per query (default: from a recall sweep)")
    p.add_argument("--score", choices=["auto", "ah", "brute_force"], default="auto")
    p.add_argument("--dimensions-per-block", type=int, default=None, help="AH dimensions per block (default 1)")
    p.add_argument("--anisotropic-threshold", type=float, default=None, help="AH anisotropic quantization threshold")
    p.add_argument("--lookup-type", choices=LOOKUP_TYPES, default="int8", help="AH on-device lookup table (with --score ah)")
    p.add_argument("--target-recall", type=float, default=DEFAULT_TARGET_RECALL)
    p.add_argument("--max-index-mb", type=float, default=DEFAULT_MAX_INDEX_MB, help="budget for the index vectors")
    p.add_argument("--userinfo", default=None, help="user info string stored in the index (default: a JSON summary)")
    p.add_argument("--normalize", action="store_true", help="L2-normalise vectors instead of refusing non-unit ones")
    p.add_argument("--allow-missing-manifest", action="store_true",
                   help="read shards from a folder without manifest.json (an unfinished or foreign run)")
    p.add_argument("--no-compression", action="store_true", help="store index blocks uncompressed")
    p.add_argument("--tune-on", choices=TUNE_ON, default="auto",
                   help="queries the recall target is measured on: auto = a text searcher's own text queries "
                        "(--tune-captions, else the corpus's captions, else generated caption-like texts) when "
                        "--text-embedder is given, held-out image vectors otherwise; image = always image vectors")
    p.add_argument("--tune-captions", metavar="FILE", default=None,
                   help="captions like those users will type (COCO captions JSON, a list of {image_id, caption} "
                        "or {image_id: captions}); embedded by --text-embedder to tune the index")
    return p


def searcher_request(args: argparse.Namespace, shards: Sequence[str], out: str, text_embedder: Optional[str],
                     image_embedder: Optional[str]):
    """A ``models.searcher.build.SearcherRequest`` from parsed index options (checked here, once)."""
    from beamlens.models.searcher.build import SearcherRequest  # noqa: PLC0415
    from beamlens.models.searcher.options import DOT_PRODUCT, AutoOptions, ScaNNOptions, ScoreAH, ScoreBruteForce, Tree  # noqa: PLC0415

    tree = None
    if args.num_leaves is not None:
        tree = Tree(num_leaves=args.num_leaves, num_leaves_to_search=args.leaves_to_search or 0)
    elif args.leaves_to_search is not None:
        raise BeamlensError("--leaves-to-search needs --num-leaves")
    score_ah = score_bf = None
    if args.score == "ah":
        threshold = args.anisotropic_threshold
        if threshold is None:
            threshold = 0.2 if args.distance == DOT_PRODUCT else float("nan")
        score_ah = ScoreAH(args.dimensions_per_block or 1, threshold, lookup_type=args.lookup_type)
    elif args.score == "brute_force":
        score_bf = ScoreBruteForce()
    elif args.dimensions_per_block is not None:
        raise BeamlensError("--dimensions-per-block needs --score ah")
    scann = ScaNNOptions(args.distance, tree, score_ah, score_bf)
    scann.validate()
    return SearcherRequest(
        shards=list(shards), out=out, text_embedder=text_embedder, image_embedder=image_embedder,
        formats=tuple(args.format or ()), scann=scann,
        auto=AutoOptions(target_recall=args.target_recall, max_index_mb=args.max_index_mb),
        userinfo=args.userinfo, normalize=args.normalize, allow_missing_manifest=args.allow_missing_manifest,
        compression=not args.no_compression, tune_on=args.tune_on, tune_captions=args.tune_captions)


def index_arguments_parser(command: str) -> argparse.ArgumentParser:
    """A parser of the index options alone (``reindex --searcher-arg`` values), failing as BeamlensError."""
    parser = add_index_arguments(argparse.ArgumentParser(prog=f"beamlens {command} --searcher-arg", add_help=False))

    def fail(message: str) -> NoReturn:
        raise BeamlensError(f"--searcher-arg: {message}")

    parser.error = fail  # type: ignore[method-assign]
    return parser
