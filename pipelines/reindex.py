"""``beamlens reindex``: embed only new or changed images, carry the rest over, publish a new version.

    beamlens reindex --output-root build/index --captions data/annotations/captions_val2017.json \\
        --images data/val2017 --model build/vision_encoder.keras \\
        --text-embedder build/text_embedder.tflite [--image-embedder build/image_embedder.tflite] \\
        [--previous build/index]  [--runner ... any Beam option]

The command is the library call ``beamlens.reindex`` (transforms/reindex_job.py: versions, the
root's lock, the shrink guard, the searchers, LATEST) behind a strict parser; ``--searcher-arg``
values are parsed with ``beamlens build-searcher``'s index options (pipelines/index_options.py).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import SetupOptions

from beamlens.pipelines.index_options import index_arguments_parser, searcher_request
from beamlens.pipelines.options import ReindexOptions, options_help, parse_options
from beamlens.transforms.reindex_job import ReindexRequest, reindex
from beamlens.transforms.run_accounting import option_values


def request_from_argv(argv: Optional[Sequence[str]], save_main_session: bool = True) -> ReindexRequest:
    """The command line as a request; Beam's own options ride along in ``pipeline_options``."""
    options = parse_options(argv, "reindex")
    options.view_as(SetupOptions).save_main_session = save_main_session
    values = option_values(ReindexRequest, options)  # EmbedOptions' and ReindexOptions' values among Beam's
    index_args = index_arguments_parser("reindex").parse_args(list(options.view_as(ReindexOptions).searcher_args))
    return ReindexRequest(**values, searcher=searcher_request(index_args, (), "", None, None), pipeline_options=options)


def run(argv: Sequence[str] | None = None, save_main_session: bool = True, test_pipeline: beam.Pipeline | None = None,
        before_publish: Optional[Callable[[str], None]] = None) -> dict:
    """Parse and re-index; returns the report (also <version>/reindex_report.json)."""
    request = request_from_argv(argv, save_main_session)
    return reindex(request, pipeline=test_pipeline, before_publish=before_publish).report


def main(argv: Sequence[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        options_help("reindex", __doc__.split("\n\n")[0], with_reindex=True).print_help()
        return 0
    run(argv)
    return 0
