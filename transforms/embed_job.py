"""The embed job as a library call: ``embed(EmbedRequest(...)) -> EmbedResult``.

``beamlens embed`` is this call behind a parser, and ``beamlens.embed`` is this call. The graph
(same on every runner)::

    Create(source) -> plan listing parts -> GroupByKey(part) -> list + number each part (many workers)
      -> GroupByKey((part, index // batch)) -> read + decode batch
      -> RunInference(Keyed TF handler, pre-batched, dead-letter) -> L2 normalise
      -> one writer per shard (the listed ids keyed to it too): embeddings-*.tfrecord,
         errors-*.jsonl, summary-*.json (its accounting)

then, in this process, the post-run accounting every job shares (:func:`run_and_reconcile`):
the shard summaries are read back (O(shards), never a record), every listed image must be
embedded or failed exactly once, and only then is manifest.json written. The DaskRunner is known to drop and duplicate elements, and a
silent loss would poison the index.

Runner options travel as Beam's own :class:`PipelineOptions` (``EmbedRequest.pipeline_options``):
the request's fields are the job's, everything else (``--runner``, Dataflow, Dask) is Beam's.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beamlens.models.encoders.inputs import model_input_size
from beamlens.models.encoders.preprocessing import DEFAULT_MAX_IMAGE_PIXELS
from beamlens.models.errors import BeamlensError
from beamlens.models.io import files
from beamlens.models.io.fingerprint import model_fingerprint
from beamlens.models.shards.records import Manifest
from beamlens.transforms.decode import DecodeBatch, ImageBatch, only, preprocess_for
from beamlens.transforms.inference import EmbedBatches, accelerator_requested, check_engine, inference_model
from beamlens.transforms.listing import BatchImageRefs, ListImages
from beamlens.transforms.read_images import ImageError, ImageSource
from beamlens.transforms.run_accounting import (
    require_images, option_values, options_record, pipeline_options_of, run_and_reconcile, runner_name)
from beamlens.transforms.write_shards import WriteEmbeddingsAndErrors, mark_listed, prepare_output, write_manifest

DEFAULT_NUM_SHARDS = 4
DEFAULT_MAX_BATCH_SIZE = 64
RESIZES = ("auto", "pil", "task_library")


@dataclass(frozen=True)
class EmbedRequest:
    """Which images, which encoder, where to: the ``beamlens embed`` options as fields.

    Exactly one image source: ``captions`` (a COCO captions file; ``images`` defaults to the
    split's folder beside it), ``input_glob``, or ``input_list`` (a text file of paths, one a line). ``model`` is a vision encoder ``.keras`` (raw
    0..255 pixels in) or a Task Library image embedder ``.tflite``.
    """

    model: str
    output: str
    captions: Optional[str] = None
    images: Optional[str] = None
    input_glob: Optional[str] = None
    input_list: Optional[str] = None
    num_shards: int = DEFAULT_NUM_SHARDS
    image_size: int = 0  # 0: read from the model's input shape
    resize: str = "auto"  # pil | task_library | auto (task_library for .tflite, pil for .keras)
    engine: str = "auto"  # auto | keras | tflite: what runs the model (transforms.inference.inference_model)
    min_batch_size: int = 1
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    pipeline_options: Optional[PipelineOptions] = field(default=None, compare=False)

    @classmethod
    def from_options(cls, options: PipelineOptions) -> "EmbedRequest":
        """The request parsed Beam options describe (their view with our fields must be registered)."""
        return cls(**option_values(cls, options), pipeline_options=options)

    def resolved_resize(self) -> str:
        """``resize`` with auto decided: task_library for a .tflite model, pil (training's) for .keras."""
        if self.resize == "auto":
            return "task_library" if self.model.endswith(".tflite") else "pil"
        return self.resize

    def inference_model(self, image_size: int) -> str:
        """The file RunInference runs: ``model``, or its model folder's ``.tflite`` twin (``engine``;
        ``auto`` keeps the ``.keras`` when the options ask for workers with a GPU)."""
        return inference_model(self.model, self.engine, image_size, accelerator_requested(self.pipeline_options))

    def source(self) -> ImageSource:
        return ImageSource(captions_file=self.captions, image_root=self.images, input_glob=self.input_glob,
                           input_list=self.input_list)


@dataclass(frozen=True)
class EmbedResult:
    """What a finished run accounted for; the same figures are in ``<output>/manifest.json``."""

    output: str
    listed: int
    embedded: int
    failed: int
    duplicates_dropped: int
    seconds: float
    images_per_second: float
    errors_by_stage: dict[str, int]
    manifest: Manifest


def validate_request(request: EmbedRequest, *, needs_output: bool = True) -> ImageSource:
    """The corpus/model checks ``embed`` and ``reindex`` share; returns where the images come from."""
    if not request.model:
        raise BeamlensError("--model is required (the vision encoder .keras file or an image embedder .tflite)")
    if needs_output and not request.output:
        raise BeamlensError("--output is required (a folder for the shards)")
    if not request.model.endswith((".keras", ".tflite")):
        raise BeamlensError(f"--model {request.model}: give a Keras 3 .keras file (RunInference with Keras 3 loads "
                            ".keras files only) or a Task Library image embedder .tflite")
    files.require_file(request.model, "--model")
    check_engine(request.engine)
    if request.resize not in RESIZES:
        raise BeamlensError(f"--resize must be one of {', '.join(RESIZES)}, got {request.resize!r}")
    if request.num_shards < 1:
        raise BeamlensError(f"--num-shards must be at least 1, got {request.num_shards}")
    if request.max_batch_size < 1 or request.min_batch_size < 1 or request.min_batch_size > request.max_batch_size:
        raise BeamlensError(f"need 1 <= --min-batch-size <= --max-batch-size, got {request.min_batch_size} and {request.max_batch_size}")
    if request.max_image_pixels < 1:
        raise BeamlensError(f"--max-image-pixels must be at least 1, got {request.max_image_pixels}")
    if request.image_size < 0:
        raise BeamlensError(f"--image-size must be positive, got {request.image_size}")
    if request.images and not request.captions:
        raise BeamlensError("--images needs --captions (or use --input-glob or --input-list)")
    if request.captions:
        files.require_file(request.captions, "--captions")
    if request.input_list:
        files.require_file(request.input_list, "--input-list")
    return request.source()


def build_pipeline(pipeline: beam.Pipeline, source: ImageSource, request: EmbedRequest, image_size: int, fingerprint: str,
                   engine_model: Optional[str] = None) -> None:
    """The embed graph, from listing to shards and dead letters; ``engine_model`` is the file
    RunInference runs, when the caller has already resolved it (:meth:`EmbedRequest.inference_model`)."""
    preprocess = preprocess_for(request.resolved_resize())
    refs = pipeline | "ListImages" >> ListImages(source)
    listed = refs | "MarkListed" >> beam.Map(mark_listed)  # each shard's writer accounts for its ids
    outcomes = (
        refs
        | "Batch" >> BatchImageRefs(request.max_batch_size)
        | "ReadDecode" >> beam.ParDo(DecodeBatch(image_size, preprocess, max_pixels=request.max_image_pixels))
    )
    batches = outcomes | "OnlyBatches" >> beam.FlatMap(only(ImageBatch))
    decode_errors = outcomes | "OnlyDecodeErrors" >> beam.FlatMap(only(ImageError))
    embedded = batches | "Embed" >> EmbedBatches(engine_model or request.inference_model(image_size), fingerprint, request.min_batch_size, request.max_batch_size)
    _ = ((listed, embedded, decode_errors) | "AllOutcomes" >> beam.Flatten()
         | "Write" >> WriteEmbeddingsAndErrors(request.output, request.num_shards))


def embed(request: EmbedRequest, *, pipeline: Optional[beam.Pipeline] = None) -> EmbedResult:
    """Embed the corpus into ``request.output``; reconciled and manifested, or an error and no manifest.

    ``pipeline``: build into this one instead (a ``TestPipeline``); its options then run it.
    """
    source = validate_request(request)
    options = pipeline_options_of(request)
    require_images(source)
    fingerprint = model_fingerprint(request.model)
    image_size = model_input_size(request.model, request.image_size)
    engine_model = request.inference_model(image_size)
    engine_file = files.basename(engine_model)
    prepare_output(request.output)
    print(f"beamlens embed: {source.describe()} (listed inside the pipeline), model {fingerprint} (runs {engine_file}), "
          f"size {image_size}, {request.num_shards} shards -> {request.output}", file=sys.stderr, flush=True)
    pipeline = pipeline if pipeline is not None else beam.Pipeline(options=options)
    build_pipeline(pipeline, source, request, image_size, fingerprint, engine_model)
    run = run_and_reconcile(pipeline, request.output, request.num_shards, fingerprint)
    summary, runner = run.summary, runner_name(options)
    rate = summary.embedded / max(run.seconds, 1e-9)
    extra = {"read": summary.listed, "runner": runner, "seconds": round(run.seconds, 3),
             "images_per_second": round(rate, 2), "duplicates_dropped": summary.duplicates_dropped,
             "errors_by_stage": summary.reasons, "counters": run.counters, "image_size": image_size,
             "resize": request.resolved_resize(), "inference_model": engine_file, "source": source.describe()}
    manifest = write_manifest(request.output, summary, fingerprint, options_record(request, options), extra)
    print(f"beamlens embed: read {summary.listed}, embedded {summary.embedded}, failed {summary.failed} "
          f"in {run.seconds:.1f} s ({rate:.1f} images/s, runner {runner}); counters {run.counters}; manifest written",
          file=sys.stderr, flush=True)
    return EmbedResult(request.output, summary.listed, summary.embedded, summary.failed,
                       summary.duplicates_dropped, round(run.seconds, 3), round(rate, 2), dict(summary.reasons), manifest)
