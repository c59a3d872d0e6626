"""``beamlens embed``: a COCO layout or an image glob -> RunInference -> embedding shards.

    beamlens embed --captions data/annotations/captions_val2017.json --images data/val2017 \\
        --model build/vision_encoder.keras --output build/embeddings --num-shards 4 \\
        [--runner DirectRunner --direct_running_mode multi_processing --direct_num_workers 2]
    beamlens embed --input-glob 'gs://bucket/photos/*.jpg' --model gs://bucket/vision_encoder.keras \\
        --output gs://bucket/embeddings --runner DataflowRunner --project P --region R ...

The graph (same on every runner)::

    Create(source) -> list + number images -> GroupByKey(index // batch) -> read + decode batch
      -> RunInference(Keyed TF handler, pre-batched, dead-letter) -> L2 normalise
      -> errors-*.jsonl (DoFn) + embeddings-*.tfrecord (WriteToTFRecord)
    then, in this process: read the files back, check counts, write manifest.json last.

``--model`` may also be a Task Library image embedder ``.tflite`` (for example the shared
MobileNetV3 embedder, or ``beamlens export-pretrained``'s): it then runs in ``tf.lite.Interpreter``
with the normalization of its metadata, and images are resized the Task Library's way
(``--resize task_library``, no antialiasing) so that the index matches on-device queries.

Every run reconciles what it listed with what it wrote (distinct embedded ids + distinct failed
ids) and raises ``CountMismatchError`` without writing a manifest when they differ: the DaskRunner
is known to drop and duplicate elements, and a silent loss would poison the index.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Sequence

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import SetupOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult

from models.encoders.inputs import model_input_size
from models.errors import BeamlensError
from models.faults import checkpoint
from models.io.fingerprint import model_fingerprint
from pipelines.options import EmbedOptions, options_help, parse_options, resolved_resize, validate_embed
from transforms.decode import DecodeBatch, ImageBatch, only, preprocess_for
from transforms.inference import EmbedBatches
from transforms.read_images import METRICS_NAMESPACE, BatchImageRefs, ImageError, ImageSource, ListImages, iter_image_refs
from transforms.write_shards import WriteEmbeddingsAndErrors, prepare_output, read_outputs, reconcile, write_manifest


@dataclass(frozen=True)
class EmbedCounts:
    """What a finished run accounted for (also in its manifest), carried on the PipelineResult."""

    listed: int
    embedded: int
    output: str


def build_pipeline(pipeline: beam.Pipeline, source: ImageSource, embed: EmbedOptions, image_size: int, fingerprint: str) -> None:
    outcomes = (
        pipeline
        | "ListImages" >> ListImages(source)
        | "Batch" >> BatchImageRefs(embed.max_batch_size)
        | "ReadDecode" >> beam.ParDo(DecodeBatch(image_size, preprocess_for(resolved_resize(embed)), max_pixels=embed.max_image_pixels))
    )
    batches = outcomes | "OnlyBatches" >> beam.FlatMap(only(ImageBatch))
    decode_errors = outcomes | "OnlyDecodeErrors" >> beam.FlatMap(only(ImageError))
    embedded = batches | "Embed" >> EmbedBatches(embed.model, fingerprint, embed.min_batch_size, embed.max_batch_size)
    _ = (embedded, decode_errors) | "AllOutcomes" >> beam.Flatten() | "Write" >> WriteEmbeddingsAndErrors(embed.output, embed.num_shards)


def _counters(result: PipelineResult) -> dict[str, int] | None:
    """Beam metric counters, or None where the runner has none (DaskRunner)."""
    try:
        query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    except (NotImplementedError, AttributeError):
        return None
    totals: dict[str, int] = {}
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + int(value or 0)
    return totals


def run(argv: Sequence[str] | None = None, save_main_session: bool = True, test_pipeline: beam.Pipeline | None = None) -> PipelineResult:
    """Build and run the pipeline, check counts, write the manifest; returns the PipelineResult."""
    options = parse_options(argv, "embed")
    options.view_as(SetupOptions).save_main_session = save_main_session
    embed = options.view_as(EmbedOptions)
    source = validate_embed(embed)
    listed_ids = {ref.image_id for ref in iter_image_refs(source)}
    if not listed_ids:
        raise BeamlensError(f"no images found in {source.describe()}")
    checkpoint("listing")
    fingerprint = model_fingerprint(embed.model)
    image_size = model_input_size(embed.model, embed.image_size)
    prepare_output(embed.output)
    print(f"beamlens embed: {len(listed_ids)} images from {source.describe()}, model {fingerprint}, "
          f"size {image_size}, {embed.num_shards} shards -> {embed.output}", file=sys.stderr, flush=True)

    pipeline = test_pipeline if test_pipeline is not None else beam.Pipeline(options=options)
    build_pipeline(pipeline, source, embed, image_size, fingerprint)
    started = time.monotonic()
    result = pipeline.run()
    try:
        result.wait_until_finish()
    finally:
        client = getattr(result, "client", None)  # DaskRunner leaves its distributed.Client open
        if client is not None:
            client.close()
    seconds = time.monotonic() - started

    summary = read_outputs(embed.output, embed.num_shards, fingerprint)
    reconcile(summary, listed_ids)
    counters = _counters(result)
    rate = len(summary.embedded_ids) / max(seconds, 1e-9)
    runner = str(options.view_as(StandardOptions).runner or "DirectRunner")
    extra = {
        "read": len(listed_ids),
        "runner": runner,
        "seconds": round(seconds, 3),
        "images_per_second": round(rate, 2),
        "duplicates_dropped": summary.duplicates_dropped,
        "errors_by_stage": summary.reasons,
        "counters": counters,
        "image_size": image_size,
        "resize": resolved_resize(embed),
        "source": source.describe(),
    }
    options_record = {k: v for k, v in embed.get_all_options(drop_default=False).items() if isinstance(v, (str, int, float, bool, type(None)))}
    write_manifest(embed.output, summary, fingerprint, options_record, extra)
    print(f"beamlens embed: read {len(listed_ids)}, embedded {len(summary.embedded_ids)}, failed {len(summary.error_ids)} "
          f"in {seconds:.1f} s ({rate:.1f} images/s, runner {runner}); counters {counters}; manifest written",
          file=sys.stderr, flush=True)
    result.beamlens_counts = EmbedCounts(len(listed_ids), len(summary.embedded_ids), embed.output)  # for main's check
    return result


def main(argv: Sequence[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        options_help("embed", __doc__.split("\n\n")[0], with_reindex=False).print_help()
        return 0
    counts: EmbedCounts = run(argv).beamlens_counts
    if counts.listed and not counts.embedded:
        raise BeamlensError(f"none of the {counts.listed} files read decodes as a photo (all are dead letters: see "
                            f"errors-*.jsonl in {counts.output}): nothing to search")
    return 0
