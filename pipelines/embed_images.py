"""``beamlens embed``: a COCO layout or an image glob -> RunInference -> embedding shards.

    beamlens embed --captions data/annotations/captions_val2017.json --images data/val2017 \\
        --model build/vision_encoder.keras --output build/embeddings --num-shards 4 \\
        [--runner DirectRunner --direct_running_mode multi_processing --direct_num_workers 2]
    beamlens embed --input-glob 'gs://bucket/photos/*.jpg' --model gs://bucket/vision_encoder.keras \\
        --output gs://bucket/embeddings --runner DataflowRunner --project P --region R ...

``--model`` may also be a Task Library image embedder ``.tflite`` (for example the shared
MobileNetV3 embedder, or ``beamlens export-pretrained``'s): it then runs in ``tf.lite.Interpreter``
with the normalization of its metadata, and images are resized the Task Library's way
(``--resize task_library``, no antialiasing) so that the index matches on-device queries.

The command is the library call ``beamlens.embed`` (transforms/embed_job.py: the graph, the
reconciliation of listed and written images, the manifest) behind a strict parser.
"""

from __future__ import annotations

from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import SetupOptions

from beamlens.models.errors import BeamlensError
from beamlens.pipelines.options import options_help, parse_options
from beamlens.transforms.embed_job import EmbedRequest, EmbedResult, embed


def request_from_argv(argv: Optional[Sequence[str]], save_main_session: bool = True) -> EmbedRequest:
    """The command line as a request; Beam's own options ride along in ``pipeline_options``."""
    options = parse_options(argv, "embed")
    options.view_as(SetupOptions).save_main_session = save_main_session
    return EmbedRequest.from_options(options)


def run(argv: Sequence[str] | None = None, save_main_session: bool = True,
        test_pipeline: beam.Pipeline | None = None) -> EmbedResult:
    """Parse, embed, and return the result (see :func:`beamlens.transforms.embed_job.embed`)."""
    return embed(request_from_argv(argv, save_main_session), pipeline=test_pipeline)


def main(argv: Sequence[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        options_help("embed", __doc__.split("\n\n")[0], with_reindex=False).print_help()
        return 0
    result = run(argv)
    if result.listed and not result.embedded:
        raise BeamlensError(f"none of the {result.listed} files read decodes as a photo (all are dead letters: see "
                            f"errors-*.jsonl in {result.output}): nothing to search")
    return 0
