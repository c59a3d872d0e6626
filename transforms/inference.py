"""RunInference with the vision encoder: keyed, pre-batched, dead-lettered, L2-normalised.

* ``KeyedModelHandler`` keeps each image's metadata attached to its vector.
* ``.with_no_batching()``: batches arrive already formed (see ``listing.BatchImageRefs``);
  Beam's ``BatchElements`` emits its last batch in ``finish_bundle``, which the DaskRunner drops.
* ``.with_exception_handling()``: a batch the model rejects becomes one error record per image.
  Both consumers of RunInference's outputs filter by shape, because on Dask every consumer
  receives both the results and the failures (tagged outputs are merged there).
* The model is loaded once per worker process by RunInference's shared handle.
* Inference calls the model through one compiled ``tf.function`` with a free batch dimension
  instead of Beam's default eager ``model(x)``: same numbers, several times faster for small
  models, and traced once per worker whatever the batch sizes.
* A ``.tflite`` image embedder (a Task Library model with no Keras twin, e.g. a pretrained
  MobileNetV3) runs in ``tf.lite.Interpreter`` through :class:`TFLiteEmbedderModelHandler`, with the
  input normalization from its metadata (``models.encoders.tflite_image_embedder``).
* ``--engine auto`` runs a model folder's ``vision_encoder.keras`` as that folder's
  ``image_embedder.tflite`` (the same weights; :func:`inference_model` says why and when).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable, Iterator, Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference

from beamlens.models import compat
from beamlens.models.errors import BeamlensError
from beamlens.models.io import files
from beamlens.models.shards.records import EmbeddingRecord
from beamlens.transforms.decode import ImageBatch, ImageMeta
from beamlens.transforms.read_images import METRICS_NAMESPACE, ImageError

compat.ensure_pkg_resources()  # before Beam's TensorFlow handler imports tensorflow_hub
from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerNumpy  # noqa: E402

PROGRESS_SECONDS = 10.0
_LOG = logging.getLogger("beamlens.embed")


def _compiled_forward(model: Any):
    """The model's inference-mode forward pass as ONE tf.function for every batch size.

    ``model.predict_on_batch`` traces again for a second batch shape (the last, shorter batch of
    a run): measured 1.6 s per trace for MobileNetV3-Small, most of a small re-index's embedding
    time. A None batch dimension in the signature makes the first trace the only one.
    """
    forward = getattr(model, "_beamlens_forward", None)
    if forward is None:
        import tensorflow as tf  # noqa: PLC0415 (the TF model handler has it loaded)

        spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32)
        forward = tf.function(lambda pixels: model(pixels, training=False), input_signature=[spec])
        model._beamlens_forward = forward
    return forward


def predict_on_batch(model: Any, batch: Sequence[np.ndarray], inference_args: Optional[dict], model_id: Optional[str] = None) -> Iterable[PredictionResult]:
    """Inference function for TFModelHandlerNumpy: one compiled call per pre-formed batch."""
    outputs = np.asarray(_compiled_forward(model)(np.stack(batch, axis=0).astype(np.float32)))
    return [PredictionResult(example, output, model_id) for example, output in zip(batch, outputs)]


class TFLiteEmbedderModelHandler(ModelHandler):
    """RunInference handler for a Task Library image embedder ``.tflite`` (raw 0..255 pixels in).

    The pixels must have been resized the Task Library's way (``--resize task_library`` in
    ``beamlens embed``, the default for ``.tflite`` models) for the index to match on-device queries."""

    def __init__(self, model_path: str, min_batch_size: int = 1, max_batch_size: int = 64) -> None:
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self._model_path = model_path

    def load_model(self):
        import tempfile  # noqa: PLC0415

        from beamlens.models.encoders.tflite_image_embedder import TFLiteImageEmbedder  # noqa: PLC0415

        path = self._model_path
        if files.is_remote(path):  # the interpreter reads local files only: copy gs:// and the like
            with tempfile.NamedTemporaryFile(suffix=".tflite", delete=False) as local:
                local.write(files.read_bytes(path))
            path = local.name
        return TFLiteImageEmbedder(path)

    def run_inference(self, batch: Sequence[np.ndarray], model: Any, inference_args: Optional[dict] = None) -> Iterable[PredictionResult]:
        outputs = model.embed(np.stack(batch, axis=0))
        return [PredictionResult(example, output, self._model_path) for example, output in zip(batch, outputs)]

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return sum(np.asarray(example).nbytes for example in batch)

    def get_metrics_namespace(self) -> str:
        return "BeamML_TFLite"


ENGINES = ("auto", "keras", "tflite")


def check_engine(engine: str) -> None:
    """The one check of an ``--engine`` value (the request check and :func:`inference_model` share it)."""
    if engine not in ENGINES:
        raise BeamlensError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")


def _twin_unusable(folder: str, image_size: int) -> str | None:
    """Why the model folder's ``.tflite`` twin cannot run this job, or None when it can."""
    from beamlens.models.encoders.inputs import tflite_image_size  # noqa: PLC0415
    from beamlens.models.export import model_folder  # noqa: PLC0415

    twin, config = files.join(folder, model_folder.IMAGE_EMBEDDER), files.join(folder, model_folder.CONFIG)
    if not (files.exists(twin) and files.exists(config)):
        return f"no {model_folder.IMAGE_EMBEDDER} beside it in a model folder ({folder})"
    twin_size = tflite_image_size(twin)
    if twin_size != image_size:
        return f"{twin} takes {twin_size} px images, the job resizes to {image_size}"
    return None


def accelerator_requested(options: Any) -> bool:
    """Whether the job asks its workers for an accelerator (GPU): a Beam ``--resource_hints
    accelerator=...`` or Dataflow's ``--dataflow_service_options worker_accelerator=...``."""
    if options is None:
        return False
    parsed = options.get_all_options(retain_unknown_options=True)
    hints = parsed.get("resource_hints") or []
    service = parsed.get("dataflow_service_options") or []
    return any(str(hint).strip().startswith("accelerator") for hint in hints) or \
        any(str(option).strip().startswith("worker_accelerator") for option in service)


def inference_model(model_path: str, engine: str, image_size: int, accelerator: bool = False) -> str:
    """The file RunInference runs for ``--model model_path --engine engine``.

    Why: a model folder (``train`` / ``export-pretrained``) holds the same weights twice, as
    ``vision_encoder.keras`` and as ``image_embedder.tflite`` (the ImageSearcher's file), and the
    ``.tflite`` in ``tf.lite.Interpreter`` (XNNPACK) is the cheaper CPU worker: measured by
    benchmarks/encoder_engines.py on real photos, one thread, 1.7x the Keras encoder's images/s
    with the same vectors (cosine 1.0000). ``auto`` therefore runs the folder's ``.tflite`` when
    it takes the ``image_size`` the job resizes to, and the ``.keras`` otherwise; the images are
    still resized the ``.keras`` way (``--resize auto`` follows ``--model``, not the engine).
    On workers with an accelerator (``accelerator``: :func:`accelerator_requested`) ``auto`` runs
    the ``.keras``: TensorFlow uses the GPU, the TFLite interpreter (XNNPACK) only the CPU.
    """
    from beamlens.models.export import model_folder  # noqa: PLC0415

    check_engine(engine)
    if model_path.endswith(".tflite"):
        if engine == "keras":
            raise BeamlensError(f"--engine keras needs a .keras --model, got {model_path}")
        return model_path
    if engine == "keras" or (engine == "auto" and accelerator):
        return model_path
    folder = files.dirname(model_path)
    why_not = _twin_unusable(folder, image_size)
    if why_not is None:
        return files.join(folder, model_folder.IMAGE_EMBEDDER)
    if engine == "tflite":
        raise BeamlensError(f"--engine tflite: {why_not}")
    return model_path


def make_model_handler(model_path: str, min_batch_size: int = 1, max_batch_size: int = 64):
    """Keyed, pre-batched handler: TF for a Keras 3 ``.keras`` file, TFLite for a ``.tflite`` embedder."""
    if model_path.endswith(".tflite"):
        return KeyedModelHandler(TFLiteEmbedderModelHandler(model_path, min_batch_size, max_batch_size)).with_no_batching()
    base = TFModelHandlerNumpy(
        model_uri=model_path,
        inference_fn=predict_on_batch,
        min_batch_size=min_batch_size,
        max_batch_size=max_batch_size,
    )
    return KeyedModelHandler(base).with_no_batching()


def l2_normalize(vector: np.ndarray) -> np.ndarray:
    """Unit length (searchers use dot product); a zero vector stays zero instead of NaN."""
    vector = np.asarray(vector, dtype=np.float32).ravel()
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def _is_keyed_result(element: Any) -> bool:
    return (
        isinstance(element, tuple)
        and len(element) == 2
        and isinstance(element[0], ImageMeta)
        and isinstance(element[1], PredictionResult)
    )


def _is_failed_batch(element: Any) -> bool:
    """(batch, (exception type, repr, traceback)); careful: ImageMeta and PredictionResult are tuples too."""
    return (
        isinstance(element, tuple)
        and len(element) == 2
        and isinstance(element[0], list)
        and isinstance(element[1], tuple)
        and not isinstance(element[1], PredictionResult)
        and len(element[1]) == 3
        and isinstance(element[1][0], type)
    )


class ToEmbeddingRecord(beam.DoFn):
    """(ImageMeta, PredictionResult) -> EmbeddingRecord with an L2-normalised vector."""

    def __init__(self, model_fingerprint: str) -> None:
        self._fingerprint = model_fingerprint
        self._embedded = Metrics.counter(METRICS_NAMESPACE, "embedded")

    def setup(self) -> None:
        self._count = 0
        self._started = time.monotonic()
        self._last_report = self._started

    def process(self, element: Any) -> Iterator[EmbeddingRecord]:
        # Anything else is a failed batch: Dask hands both RunInference outputs to every consumer.
        if _is_keyed_result(element):
            meta, result = element
            inference = result.inference
            vector = inference.numpy() if hasattr(inference, "numpy") else np.asarray(inference)
            self._embedded.inc()
            self._report_progress()
            yield EmbeddingRecord(
                image_id=meta.image_id,
                uri=meta.uri,
                embedding=l2_normalize(vector),
                captions=tuple(meta.captions),
                model_fingerprint=self._fingerprint,
                content_hash=meta.content_hash,
                file_size=meta.file_size,
                file_mtime_us=meta.file_mtime_us,
            )

    def _report_progress(self) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._last_report >= PROGRESS_SECONDS:
            self._last_report = now
            rate = self._count / max(now - self._started, 1e-9)
            _LOG.warning("beamlens embed: this worker embedded %d images (%.1f images/s)", self._count, rate)


class FailedBatchToErrors(beam.DoFn):
    """(failed batch, (type, repr, traceback)) -> one ImageError per image of the batch."""

    def __init__(self) -> None:
        self._failed = Metrics.counter(METRICS_NAMESPACE, "failed")

    def process(self, element: Any) -> Iterator[ImageError]:
        # Anything else is a good result: Dask hands both RunInference outputs to every consumer.
        if _is_failed_batch(element):
            batch, (error_type, error_repr, _) = element
            name = getattr(error_type, "__name__", str(error_type))
            reason = f"inference failed: {name}: {error_repr}"[:500]
            for meta, _pixels in batch:
                self._failed.inc()
                yield ImageError(meta.image_id, meta.uri, reason, "inference")


def _batch_items(batch: ImageBatch) -> list[tuple[ImageMeta, np.ndarray]]:
    return list(batch.items)


class EmbedBatches(beam.PTransform):
    """PCollection[ImageBatch] -> PCollection[EmbeddingRecord | ImageError]."""

    def __init__(self, model_path: str, model_fingerprint: str, min_batch_size: int = 1, max_batch_size: int = 64) -> None:
        super().__init__()
        self._handler = make_model_handler(model_path, min_batch_size, max_batch_size)
        self._fingerprint = model_fingerprint

    def expand(self, batches):
        keyed = batches | "Items" >> beam.Map(_batch_items)
        results, dead_letters = keyed | "RunInference" >> RunInference(self._handler).with_exception_handling()
        records = results | "ToRecords" >> beam.ParDo(ToEmbeddingRecord(self._fingerprint))
        errors = dead_letters.failed_inferences | "FailedToErrors" >> beam.ParDo(FailedBatchToErrors())
        return (records, errors) | "Merge" >> beam.Flatten()
