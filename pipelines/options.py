"""The Beam pipeline commands' flags, in one place (``embed`` and ``reindex``).

Both commands take the corpus/model options of :class:`EmbedOptions`; ``reindex`` adds
:class:`ReindexOptions`. Beam registers every ``PipelineOptions`` subclass in one parser, so the
shared flags are defined once, here; their values become the jobs' typed requests
(transforms/embed_job.py, transforms/reindex_job.py), whose defaults and checks these use, so the
two commands and the Python API cannot disagree on what ``--model`` may be. Arguments are parsed
strictly (pipelines/strict_args.py): an unknown option or a stray path is an error, not a warning.
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from apache_beam.options.pipeline_options import PipelineOptions

from beamlens.models.encoders.preprocessing import DEFAULT_MAX_IMAGE_PIXELS
from beamlens.models.shards.lock import DEFAULT_TTL_SECONDS
from beamlens.pipelines.strict_args import parse_pipeline_options
from beamlens.transforms.embed_job import DEFAULT_MAX_BATCH_SIZE, DEFAULT_NUM_SHARDS, RESIZES
from beamlens.transforms.inference import ENGINES
from beamlens.transforms.reindex_job import DEFAULT_MAX_DELETED_FRACTION



class EmbedOptions(PipelineOptions):
    """The corpus and model options; every standard Beam option passes through untouched."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--captions", dest="captions", default=None, help="COCO captions_*.json (local or any Beam filesystem)")
        parser.add_argument("--images", dest="images", default=None, help="image folder of the COCO split (default: <captions>/../../<split>)")
        parser.add_argument("--input-glob", "--input_glob", dest="input_glob", default=None, help="glob of image files instead of a COCO layout, e.g. 'gs://b/photos/*.jpg'")
        parser.add_argument("--input-list", "--input_list", dest="input_list", default=None,
                            help="a text file of image paths or URIs, one a line (a bucket inventory, `gsutil ls`), instead of "
                                 "a COCO layout or a glob; workers read it in parts side by side")
        parser.add_argument("--model", dest="model", default=None, help="vision encoder .keras file (raw 0..255 pixels in, vectors out), or a Task Library image embedder .tflite")
        parser.add_argument("--output", dest="output", default=None, help="output folder for shards, error files and manifest.json")
        parser.add_argument("--num-shards", "--num_shards", dest="num_shards", type=int, default=DEFAULT_NUM_SHARDS, help="number of embedding shards (and error files)")
        parser.add_argument("--image-size", "--image_size", dest="image_size", type=int, default=0, help="square input size; default: read from the model's input shape")
        parser.add_argument("--resize", dest="resize", choices=RESIZES, default="auto",
                            help="how images are resized: pil (the training preprocessing, antialiased), task_library "
                                 "(bilinear without antialiasing, as the Task Library resizes a query); "
                                 "auto: task_library for a .tflite model, pil for .keras")
        parser.add_argument("--engine", dest="engine", choices=ENGINES, default="auto",
                            help="what runs the encoder: keras (the .keras file), tflite (its model folder's "
                                 "image_embedder.tflite, the same weights, ~1.7x faster per CPU core); auto: tflite when "
                                 "the folder has one for this image size, else keras")
        parser.add_argument("--min-batch-size", "--min_batch_size", dest="min_batch_size", type=int, default=1, help="smallest inference batch the handler accepts")
        parser.add_argument("--max-image-pixels", "--max_image_pixels", dest="max_image_pixels", type=int,
                            default=DEFAULT_MAX_IMAGE_PIXELS,
                            help="pixel budget per image, checked from the header before decoding: a larger image "
                                 f"(a decompression bomb) is dead-lettered, not decoded (default {DEFAULT_MAX_IMAGE_PIXELS:,})")
        parser.add_argument("--max-batch-size", "--max_batch_size", dest="max_batch_size", type=int, default=DEFAULT_MAX_BATCH_SIZE, help="images per inference batch (batches are formed before RunInference)")


class ReindexOptions(PipelineOptions):
    """The re-index job's own options, on top of :class:`EmbedOptions`."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--output-root", "--output_root", dest="output_root", default=None, help="root folder of the versioned outputs (holds LATEST)")
        parser.add_argument("--previous", dest="previous", default=None, help="previous output: a root (follows LATEST), ROOT/LATEST, a version folder or a `beamlens embed` folder; default: --output-root")
        parser.add_argument("--text-embedder", "--text_embedder", dest="text_embedder", default=None, help="text embedder .tflite -> searchers/text_searcher.tflite")
        parser.add_argument("--image-embedder", "--image_embedder", dest="image_embedder", default=None, help="image embedder .tflite -> searchers/image_searcher.tflite")
        parser.add_argument("--no-searcher", "--no_searcher", dest="no_searcher", action="store_true", default=False, help="publish shards only (build the searcher elsewhere)")
        parser.add_argument("--embed-buckets", "--embed_buckets", dest="embed_buckets", type=int, default=0, help="groups the images to embed are batched in (default: from the corpus size)")
        parser.add_argument("--keep-versions", "--keep_versions", dest="keep_versions", type=int, default=3, help="finished versions kept under the root (older ones deleted); 0 keeps all")
        parser.add_argument("--rehash", dest="rehash", action="store_true", default=False,
                            help="read and hash every file, even those whose size and modification time are the "
                                 "stored ones (default: those are taken as unchanged without reading them)")
        parser.add_argument("--allow-shrink", "--allow_shrink", dest="allow_shrink", action="store_true", default=False,
                            help="publish even when the new version drops more than --max-deleted-fraction of the previous one")
        parser.add_argument("--max-deleted-fraction", "--max_deleted_fraction", dest="max_deleted_fraction", type=float,
                            default=DEFAULT_MAX_DELETED_FRACTION,
                            help="largest share of the previous version's items a run may drop before it refuses "
                                 f"to publish (the shrink guard; default {DEFAULT_MAX_DELETED_FRACTION:g})")
        parser.add_argument("--lock-ttl", "--lock_ttl", dest="lock_ttl", type=float, default=DEFAULT_TTL_SECONDS,
                            help="seconds without a heartbeat after which another run may take over this run's "
                                 f"lock on the root (default {DEFAULT_TTL_SECONDS:g}; a holder on this host whose "
                                 "process is gone is taken over at once)")
        parser.add_argument("--searcher-arg", "--searcher_arg", dest="searcher_args", action="append", default=[], help="index option for the searcher build, repeatable (e.g. --searcher-arg=--score=brute_force; see `beamlens build-searcher --help`)")


def parse_options(argv: Optional[Sequence[str]], command: str) -> PipelineOptions:
    """Strictly parsed options of ``embed`` / ``reindex`` (both classes above are registered)."""
    return parse_pipeline_options(argv, command)


def options_help(command: str, description: str, with_reindex: bool) -> argparse.ArgumentParser:
    """The --help parser: our options; Beam's own are documented by Beam."""
    parser = argparse.ArgumentParser(prog=f"beamlens {command}", description=description)
    EmbedOptions._add_argparse_args(parser)
    if with_reindex:
        ReindexOptions._add_argparse_args(parser)
    parser.epilog = ("All standard Apache Beam pipeline options (--runner, --direct_num_workers, Dataflow options, "
                     "--dask_client_address ...) are passed through.")
    return parser
