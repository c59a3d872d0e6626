"""Listing images (COCO caption file or a glob) and reading their bytes through Beam filesystems.

Every path goes through ``apache_beam.io.filesystems.FileSystems``, so local folders, ``gs://``
and any other registered Beam filesystem work the same way.

Why listing is one ``Create`` + ``ParDo`` and not ``fileio.MatchFiles``/``ReadFromText``:
the DaskRunner only runs Create, ParDo, GroupByKey and Flatten (no ``Read``), and we want ONE code
path on every runner. The listing step also numbers the images (0, 1, 2, ...), which lets
:class:`BatchImageRefs` form exact batches with a GroupByKey on ``index // batch_size``. That
GroupByKey replaces the Reshuffle that ``MatchFiles`` needs (it does not split work on its own),
and it is the batching Dask needs (elements a DoFn emits in ``finish_bundle``, as
``BatchElements`` does, are dropped on Dask). Only small references (id, path, captions) are
listed and shuffled; image bytes are read after the shuffle, on the worker that embeds them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from models.coco import default_image_root, parse_coco_captions
from models.errors import BeamlensError

METRICS_NAMESPACE = "beamlens.embed"


class ImageRef(NamedTuple):
    """What we know about an image before reading it."""

    image_id: str  # COCO id as text, or the path for glob input
    uri: str
    captions: tuple[str, ...] = ()


class ImageError(NamedTuple):
    """A dead-letter record: the image was listed but could not be embedded."""

    image_id: str
    uri: str
    reason: str
    stage: str  # "read", "decode" or "inference"

    def to_json_dict(self) -> dict:
        return {"image_id": self.image_id, "uri": self.uri, "reason": self.reason, "stage": self.stage}


class ImageReadError(BeamlensError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageSource:
    """Where the images come from: a COCO caption file (+ image root) or a glob."""

    captions_file: str | None = None
    image_root: str | None = None
    input_glob: str | None = None

    def __post_init__(self) -> None:
        if bool(self.captions_file) == bool(self.input_glob):
            raise BeamlensError("give either --captions (with --images) or --input-glob, not both or neither")

    def describe(self) -> str:
        if self.input_glob:
            return f"glob {self.input_glob}"
        return f"COCO captions {self.captions_file} (images under {self.image_root})"


def read_text_file(path: str) -> bytes:
    """The whole file through Beam's filesystems (local or gs://), with a clear error if missing."""
    try:
        with FileSystems.open(path) as stream:
            return stream.read()
    except Exception as error:  # FileSystems raises IOError / BeamIOError / filesystem-specific errors
        raise BeamlensError(f"cannot read {path}: {error}") from None


def iter_image_refs(source: ImageSource) -> Iterator[ImageRef]:
    """Every image of the source, in a stable order (COCO file order, or sorted paths)."""
    if source.input_glob:
        try:
            matched = FileSystems.match([source.input_glob])[0].metadata_list
        except Exception as error:
            raise BeamlensError(f"cannot match {source.input_glob}: {error}") from None
        for path in sorted(m.path for m in matched):
            yield ImageRef(image_id=path, uri=path)
        return
    image_root = source.image_root or default_image_root(source.captions_file)
    data = read_text_file(source.captions_file)
    for image in parse_coco_captions(data, source=source.captions_file, image_root=image_root):
        yield ImageRef(image_id=str(image.image_id), uri=image.path, captions=tuple(image.captions))


class _ListAndNumber(beam.DoFn):
    """One worker lists the source and numbers the images; the count is the ``read`` counter."""

    def __init__(self) -> None:
        self._listed = Metrics.counter(METRICS_NAMESPACE, "read")

    def process(self, source: ImageSource) -> Iterator[tuple[int, ImageRef]]:
        for index, ref in enumerate(iter_image_refs(source)):
            self._listed.inc()
            yield index, ref


class ListImages(beam.PTransform):
    """PBegin -> PCollection[(index, ImageRef)]."""

    def __init__(self, source: ImageSource) -> None:
        super().__init__()
        self._source = source

    def expand(self, pbegin):
        return pbegin | "Source" >> beam.Create([self._source]) | "ListAndNumber" >> beam.ParDo(_ListAndNumber())


def _batch_key(indexed: tuple[int, ImageRef], batch_size: int) -> tuple[int, tuple[int, ImageRef]]:
    return indexed[0] // batch_size, indexed


def _sorted_batch(keyed: tuple[int, Iterable[tuple[int, ImageRef]]]) -> list[ImageRef]:
    # Sorting makes batches identical on every runner (GroupByKey gives no order).
    return [ref for _, ref in sorted(keyed[1], key=lambda item: item[0])]


class BatchImageRefs(beam.PTransform):
    """PCollection[(index, ImageRef)] -> PCollection[list[ImageRef]] of at most ``batch_size``."""

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        if batch_size < 1:
            raise BeamlensError(f"batch size must be at least 1, got {batch_size}")
        self._batch_size = batch_size

    def expand(self, indexed):
        return (
            indexed
            | "KeyByBatch" >> beam.Map(_batch_key, self._batch_size)
            | "GroupBatches" >> beam.GroupByKey()
            | "SortBatch" >> beam.Map(_sorted_batch)
        )


def read_image_bytes(uri: str) -> bytes:
    """Bytes of one image; a missing or unreadable file raises :class:`ImageReadError`."""
    try:
        with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
            return stream.read()
    except FileNotFoundError:
        raise ImageReadError("file not found") from None
    except Exception as error:  # BeamIOError, PermissionError, remote errors...
        text = str(error)
        if "No such file" in text or "not found" in text.lower():
            raise ImageReadError("file not found") from None
        raise ImageReadError(f"cannot read file: {type(error).__name__}: {text[:300]}") from None


def file_stamp(uri: str) -> tuple[int, int] | None:
    """(size in bytes, modification time in microseconds) of a file, or None if it cannot be had.

    A re-index compares it with the stamp stored at embedding time and hashes only files whose
    stamp changed (the quick check of rsync and make); local files are stat-ed, others matched
    through Beam's filesystems (on object stores the time is the upload's).
    """
    try:
        if "://" not in uri:
            info = os.stat(uri)
            return info.st_size, info.st_mtime_ns // 1000
        matched = FileSystems.match([uri])[0].metadata_list
    except Exception:  # missing, unreadable, or a filesystem that cannot match: no stamp, so it is hashed
        return None
    if len(matched) != 1 or matched[0].last_updated_in_seconds is None:
        return None
    return int(matched[0].size_in_bytes), int(round(matched[0].last_updated_in_seconds * 1e6))


def content_hash(data: bytes) -> str:
    """sha256 hex of the file bytes: re-indexing compares it to find changed images."""
    return hashlib.sha256(data).hexdigest()
