"""Read, decode and resize a batch of images, routing every bad one to the dead-letter stream.

Pixels come from ``models.encoders.preprocessing.preprocess_image_bytes``: the same function training uses,
so the pipeline cannot drift from the model's training inputs.

Dead letters travel in the MAIN output as :class:`ImageError` elements, next to
:class:`ImageBatch` elements, and consumers pick their kind with :func:`only`. We do not use
tagged outputs (``TaggedOutput`` / ``with_outputs``) because the DaskRunner (Beam 2.77) merges all
tags of a ParDo into one collection and gives it to every consumer (measured: each of the two
consumers of a 10-element split saw all 10). A typed union works the same on every runner.

Hostile images are data, not crashes: ``max_pixels`` (``--max-image-pixels``) is the pixel budget
checked from each image's header before decoding, and any exception that escapes the preprocessing
for one image (a decoder bug: the preprocessing itself raises only ImageDecodeError) still becomes
that image's dead letter, so the rest of the batch, and the job, go on.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterator, NamedTuple, Sequence, Type, TypeVar, Union

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from beamlens.models.io import files
from beamlens.models.faults import checkpoint
from beamlens.models.encoders.preprocessing import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageDecodeError,
    check_max_image_pixels,
    exception_name,
    preprocess_image_bytes,
    short_reason,
)
from beamlens.transforms.read_images import (
    METRICS_NAMESPACE,
    ImageError,
    ImageReadError,
    ImageRef,
    content_hash,
    file_stamp,
    read_image_bytes,
)


class ImageMeta(NamedTuple):
    """Everything about an image that must travel with its pixels into the shard record."""

    image_id: str
    uri: str
    captions: tuple[str, ...]
    content_hash: str
    file_size: int = -1  # the file's stamp when read (transforms.read_images.file_stamp)
    file_mtime_us: int = -1


class ImageBatch(NamedTuple):
    """Decoded images of one batch: ``items[i] = (meta, float32 [S, S, 3] pixels)``."""

    items: list[tuple[ImageMeta, np.ndarray]]


Outcome = Union[ImageBatch, ImageError]
T = TypeVar("T")
Preprocess = Callable[..., np.ndarray]  # (bytes, size, *, max_pixels) -> float32 [S, S, 3]
_LOG = logging.getLogger(__name__)


def only(kind: Type[T]):
    """A FlatMap function keeping the elements of one kind (our stand-in for tagged outputs)."""

    def keep(element) -> Iterator[T]:
        if isinstance(element, kind):
            yield element

    keep.__name__ = f"only_{kind.__name__}"
    return keep


def preprocess_for(resize: str) -> Preprocess:
    """The (bytes, size) -> pixels function of a ``--resize`` choice: ``task_library`` resizes as
    the Task Library resizes a query (for a foreign .tflite embedder's index), ``pil`` as training."""
    if resize == "task_library":
        from beamlens.models.encoders.tflite_image_embedder import preprocess_image_bytes_like_task_library  # noqa: PLC0415

        return preprocess_image_bytes_like_task_library
    return preprocess_image_bytes


class DecodeBatch(beam.DoFn):
    """list[ImageRef] -> one ImageBatch of the good images, plus one ImageError per bad image.

    ``preprocess`` (bytes, size, max_pixels=...) -> float32 pixels defaults to the training
    preprocessing; an index for a foreign Task Library embedder passes
    ``models.encoders.tflite_image_embedder.preprocess_image_bytes_like_task_library`` instead.
    ``max_pixels`` is the pixel budget each image's header is checked against."""

    def __init__(self, image_size: int, preprocess: Preprocess = preprocess_image_bytes,
                 max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        self._image_size = int(image_size)
        self._preprocess = preprocess
        self._max_pixels = check_max_image_pixels(max_pixels)  # a bad budget fails at construction
        self._decoded = Metrics.counter(METRICS_NAMESPACE, "decoded")
        self._failed = Metrics.counter(METRICS_NAMESPACE, "failed")
        self._logged_escape = False

    def _pixels(self, ref: ImageRef, data: bytes) -> np.ndarray | ImageError:
        """The image's pixels, or its dead letter: whatever goes wrong stays with this one image."""
        try:
            return self._preprocess(data, self._image_size, max_pixels=self._max_pixels)
        except ImageDecodeError as error:
            return ImageError(ref.image_id, ref.uri, error.reason, "decode")
        except Exception as error:  # noqa: BLE001 (defence in depth: a decoder bug must not end the job)
            if not self._logged_escape:  # once per worker: a bug worth a traceback, not a flood of them
                self._logged_escape = True
                _LOG.warning("preprocessing raised %s for %s (dead-lettered)", exception_name(error), ref.uri,
                             exc_info=True)
            reason = short_reason(f"preprocessing failed ({exception_name(error)}: {error})")
            return ImageError(ref.image_id, ref.uri, reason, "decode")

    def process(self, refs: Sequence[ImageRef]) -> Iterator[Outcome]:
        items: list[tuple[ImageMeta, np.ndarray]] = []
        for ref in refs:
            # Before reading: a file changed meanwhile is re-hashed next time. Local files only: on an
            # object store the stamp is one more request per image; a later re-index hashes such an
            # image once and stores its stamp then (pipelines/reindex.py Classify).
            stamp = (file_stamp(ref.uri) if not files.is_remote(ref.uri) else None) or (-1, -1)
            try:
                data = read_image_bytes(ref.uri)
            except ImageReadError as error:
                self._failed.inc()
                yield ImageError(ref.image_id, ref.uri, error.reason, "read")
                continue
            pixels = self._pixels(ref, data)
            if isinstance(pixels, ImageError):
                self._failed.inc()
                yield pixels
                continue
            self._decoded.inc()
            items.append((ImageMeta(ref.image_id, ref.uri, tuple(ref.captions), content_hash(data), *stamp), pixels))
        checkpoint("decode")
        if items:
            yield ImageBatch(items)
