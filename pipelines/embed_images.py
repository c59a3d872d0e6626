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

import argparse
import json
import sys
import time
import zipfile
from typing import Any, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult

from models.errors import BeamlensError
from models.faults import checkpoint
from models.fingerprint import model_fingerprint
from models.preprocessing import DEFAULT_MAX_IMAGE_PIXELS
from pipelines.options import parse_pipeline_options
from transforms.decode import DecodeBatch, ImageBatch, only
from transforms.inference import EmbedBatches
from transforms.read_images import METRICS_NAMESPACE, BatchImageRefs, ImageError, ImageSource, ListImages, iter_image_refs
from transforms.write_shards import WriteEmbeddingsAndErrors, prepare_output, read_outputs, reconcile, write_manifest

DEFAULT_NUM_SHARDS = 4
DEFAULT_MAX_BATCH_SIZE = 64
RESIZES = ("auto", "pil", "task_library")


class EmbedOptions(PipelineOptions):
    """The pipeline's own options; every standard Beam option passes through untouched."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--captions", dest="captions", default=None, help="COCO captions_*.json (local or any Beam filesystem)")
        parser.add_argument("--images", dest="images", default=None, help="image folder of the COCO split (default: <captions>/../../<split>)")
        parser.add_argument("--input-glob", "--input_glob", dest="input_glob", default=None, help="glob of image files instead of a COCO layout, e.g. 'gs://b/photos/*.jpg'")
        parser.add_argument("--model", dest="model", default=None, help="vision encoder .keras file (raw 0..255 pixels in, vectors out), or a Task Library image embedder .tflite")
        parser.add_argument("--output", dest="output", default=None, help="output folder for shards, error files and manifest.json")
        parser.add_argument("--num-shards", "--num_shards", dest="num_shards", type=int, default=DEFAULT_NUM_SHARDS, help="number of embedding shards (and error files)")
        parser.add_argument("--image-size", "--image_size", dest="image_size", type=int, default=0, help="square input size; default: read from the model's input shape")
        parser.add_argument("--resize", dest="resize", choices=RESIZES, default="auto",
                            help="how images are resized: pil (the training preprocessing, antialiased), task_library "
                                 "(bilinear without antialiasing, as the Task Library resizes a query); "
                                 "auto: task_library for a .tflite model, pil for .keras")
        parser.add_argument("--min-batch-size", "--min_batch_size", dest="min_batch_size", type=int, default=1, help="smallest inference batch the handler accepts")
        parser.add_argument("--max-image-pixels", "--max_image_pixels", dest="max_image_pixels", type=int,
                            default=DEFAULT_MAX_IMAGE_PIXELS,
                            help="pixel budget per image, checked from the header before decoding: a larger image "
                                 f"(a decompression bomb) is dead-lettered, not decoded (default {DEFAULT_MAX_IMAGE_PIXELS:,})")
        parser.add_argument("--max-batch-size", "--max_batch_size", dest="max_batch_size", type=int, default=DEFAULT_MAX_BATCH_SIZE, help="images per inference batch (batches are formed before RunInference)")


def _find_batch_shape(node: Any) -> list | None:
    """First InputLayer ``batch_shape`` in a Keras 3 config (functional, sequential or nested)."""
    if isinstance(node, dict):
        if node.get("class_name") == "InputLayer":
            shape = node.get("config", {}).get("batch_shape") or node.get("config", {}).get("batch_input_shape")
            if shape:
                return list(shape)
        for value in node.values():
            found = _find_batch_shape(value)
            if found:
                return found
    elif isinstance(node, list):
        for value in node:
            found = _find_batch_shape(value)
            if found:
                return found
    return None


def model_image_size(model_path: str) -> int:
    """Read S from the ``.keras`` file's input shape [None, S, S, 3] without loading weights."""
    try:
        with FileSystems.open(model_path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
            with zipfile.ZipFile(stream) as archive:
                config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as error:
        raise BeamlensError(f"{model_path} is not a Keras 3 .keras file ({error}); RunInference loads .keras files only") from None
    shape = _find_batch_shape(config)
    if not shape or len(shape) != 4 or shape[1] is None or shape[1] != shape[2] or shape[3] != 3:
        raise BeamlensError(f"{model_path}: expected an image input [None, S, S, 3], found {shape}; give --image-size")
    return int(shape[1])


def tflite_image_size(model_path: str) -> int:
    """S of a square image embedder ``.tflite`` input [1, S, S, 3] (read from the file, no TF)."""
    from models.tflite_image_embedder import read_input_spec  # noqa: PLC0415

    local = model_path
    if "://" in model_path:
        import tempfile  # noqa: PLC0415

        with FileSystems.open(model_path) as source, tempfile.NamedTemporaryFile(suffix=".tflite", delete=False) as copy:
            copy.write(source.read())
        local = copy.name
    spec = read_input_spec(local)
    if spec.height != spec.width:
        raise BeamlensError(f"{model_path}: the image input is {spec.height}x{spec.width}; only square inputs are supported")
    return spec.height


def resolved_resize(embed: EmbedOptions) -> str:
    """--resize with auto decided: task_library for a .tflite model, pil (training's) for .keras."""
    if embed.resize == "auto":
        return "task_library" if embed.model.endswith(".tflite") else "pil"
    return embed.resize


def preprocess_function(embed: EmbedOptions):
    """The (bytes, size) -> pixels function for --resize."""
    from models.preprocessing import preprocess_image_bytes  # noqa: PLC0415
    from models.tflite_image_embedder import preprocess_image_bytes_like_task_library  # noqa: PLC0415

    return preprocess_image_bytes_like_task_library if resolved_resize(embed) == "task_library" else preprocess_image_bytes


def _validate(embed: EmbedOptions) -> ImageSource:
    if not embed.model:
        raise BeamlensError("--model is required (the vision encoder .keras file or an image embedder .tflite)")
    if not embed.output:
        raise BeamlensError("--output is required (a folder for the shards)")
    if not embed.model.endswith((".keras", ".tflite")):
        raise BeamlensError(f"--model {embed.model}: give a Keras 3 .keras file (RunInference with Keras 3 loads "
                            ".keras files only) or a Task Library image embedder .tflite")
    if embed.resize not in RESIZES:
        raise BeamlensError(f"--resize must be one of {RESIZES}, got {embed.resize!r}")
    if not FileSystems.exists(embed.model):
        raise BeamlensError(f"--model {embed.model}: file not found")
    if embed.num_shards < 1:
        raise BeamlensError(f"--num-shards must be at least 1, got {embed.num_shards}")
    if embed.max_batch_size < 1 or embed.min_batch_size < 1 or embed.min_batch_size > embed.max_batch_size:
        raise BeamlensError(f"need 1 <= --min-batch-size <= --max-batch-size, got {embed.min_batch_size} and {embed.max_batch_size}")
    if embed.max_image_pixels < 1:
        raise BeamlensError(f"--max-image-pixels must be at least 1, got {embed.max_image_pixels}")
    if embed.image_size < 0:
        raise BeamlensError(f"--image-size must be positive, got {embed.image_size}")
    if embed.images and not embed.captions:
        raise BeamlensError("--images needs --captions (or use --input-glob)")
    if embed.captions and not FileSystems.exists(embed.captions):
        raise BeamlensError(f"--captions {embed.captions}: file not found")
    return ImageSource(captions_file=embed.captions, image_root=embed.images, input_glob=embed.input_glob)


def build_pipeline(pipeline: beam.Pipeline, source: ImageSource, embed: EmbedOptions, image_size: int, fingerprint: str) -> None:
    outcomes = (
        pipeline
        | "ListImages" >> ListImages(source)
        | "Batch" >> BatchImageRefs(embed.max_batch_size)
        | "ReadDecode" >> beam.ParDo(DecodeBatch(image_size, preprocess_function(embed), max_pixels=embed.max_image_pixels))
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
    options = parse_pipeline_options(argv, "embed")
    options.view_as(SetupOptions).save_main_session = save_main_session
    embed = options.view_as(EmbedOptions)
    source = _validate(embed)
    listed_ids = {ref.image_id for ref in iter_image_refs(source)}
    if not listed_ids:
        raise BeamlensError(f"no images found in {source.describe()}")
    checkpoint("listing")
    fingerprint = model_fingerprint(embed.model)
    if embed.model.endswith(".tflite"):
        image_size = tflite_image_size(embed.model)
        if embed.image_size and embed.image_size != image_size:
            raise BeamlensError(f"--image-size {embed.image_size}: the .tflite model takes {image_size}x{image_size} images")
    else:
        image_size = embed.image_size or model_image_size(embed.model)
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
    try:
        result.beamlens_summary = (len(listed_ids), len(summary.embedded_ids), embed.output)  # for main's check
    except AttributeError:
        pass
    return result


def main(argv: Sequence[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        parser = argparse.ArgumentParser(prog="beamlens embed", description=__doc__.split("\n\n")[0])
        EmbedOptions._add_argparse_args(parser)
        parser.epilog = "All standard Apache Beam pipeline options (--runner, --direct_num_workers, Dataflow options, --dask_client_address ...) are passed through."
        parser.print_help()
        return 0
    result = run(argv)
    summary = getattr(result, "beamlens_summary", None)
    if summary is not None and summary[0] and not summary[1]:
        raise BeamlensError(f"none of the {summary[0]} files read decodes as a photo (all are dead letters: see "
                            f"errors-*.jsonl in {summary[2]}): nothing to search")
    return 0
