"""The embedding shard format shared by ``beamlens embed`` (writer) and ``build-searcher`` (reader).

Shards are TFRecord files ``<out>/embeddings-SSSSS-of-NNNNN.tfrecord`` of ``tf.train.Example``
records; ``<out>/manifest.json`` is written last and atomically, so an output without a manifest
is an unfinished run. Keeping names and parsing in one place means the two sides cannot drift.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from beamlens.models.errors import BeamlensError

SHARD_PREFIX = "embeddings"
SHARD_SUFFIX = ".tfrecord"
SHARD_GLOB = f"{SHARD_PREFIX}-*-of-*{SHARD_SUFFIX}"
MANIFEST_NAME = "manifest.json"
ERRORS_PREFIX = "errors"
MANIFEST_FORMAT = "beamlens-embeddings/1"

# tf.train.Example feature keys
IMAGE_ID = "image_id"  # bytes: the image id (COCO id as decimal text, or the file path for globs)
URI = "uri"  # bytes: where the image was read from
EMBEDDING = "embedding"  # float_list: L2-normalized vector
CAPTIONS = "captions"  # bytes_list: zero or more captions
MODEL_FINGERPRINT = "model_fingerprint"  # bytes: fingerprint of the encoder that made the vector
CONTENT_HASH = "content_hash"  # bytes: sha256 hex of the image file bytes (for re-indexing)
FILE_SIZE = "file_size"  # int64: the image file's size when it was read (-1: unknown)
FILE_MTIME_US = "file_mtime_us"  # int64: its modification time, microseconds since the epoch (-1: unknown)


@dataclass(frozen=True)
class EmbeddingRecord:
    image_id: str
    uri: str
    embedding: np.ndarray
    captions: tuple[str, ...] = ()
    model_fingerprint: str = ""
    content_hash: str = ""
    file_size: int = -1
    file_mtime_us: int = -1


class StoredRecord(NamedTuple):
    """A record as stored, with what a re-index decides on; ``serialized`` is written back as is.

    Carrying the bytes (not an :class:`EmbeddingRecord`) through a re-index skips decoding the
    vector, pickling it between steps and encoding it again: those were most of the cost of an
    image that did not change.
    """

    image_id: str
    uri: str
    captions: tuple[str, ...]
    model_fingerprint: str
    content_hash: str
    file_size: int
    file_mtime_us: int
    serialized: bytes


def peek_record(serialized: bytes) -> StoredRecord:
    """The identifying fields of one serialized record, without its vector."""
    import tensorflow as tf  # noqa: PLC0415

    feature = tf.train.Example.FromString(serialized).features.feature

    def _text(key: str) -> str:
        values = feature[key].bytes_list.value if key in feature else []
        return values[0].decode("utf-8") if values else ""

    captions = tuple(v.decode("utf-8") for v in feature[CAPTIONS].bytes_list.value) if CAPTIONS in feature else ()
    return StoredRecord(_text(IMAGE_ID), _text(URI), captions, _text(MODEL_FINGERPRINT), _text(CONTENT_HASH),
                        _int(feature, FILE_SIZE), _int(feature, FILE_MTIME_US), serialized)


def _int(feature, key: str) -> int:
    values = feature[key].int64_list.value if key in feature else []
    return int(values[0]) if values else -1


def encode_record(record: EmbeddingRecord) -> bytes:
    """Serialize one record as a tf.train.Example."""
    import tensorflow as tf  # noqa: PLC0415 (kept out of TF-free importers of this module)

    def _bytes(values: Sequence[str]) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode("utf-8") for v in values]))

    example = tf.train.Example(
        features=tf.train.Features(
            feature={
                IMAGE_ID: _bytes([record.image_id]),
                URI: _bytes([record.uri]),
                EMBEDDING: tf.train.Feature(
                    float_list=tf.train.FloatList(value=np.asarray(record.embedding, np.float32).ravel())
                ),
                CAPTIONS: _bytes(list(record.captions)),
                MODEL_FINGERPRINT: _bytes([record.model_fingerprint]),
                CONTENT_HASH: _bytes([record.content_hash]),
                FILE_SIZE: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(record.file_size)])),
                FILE_MTIME_US: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(record.file_mtime_us)])),
            }
        )
    )
    return example.SerializeToString()


def decode_record(serialized: bytes) -> EmbeddingRecord:
    """Parse one serialized tf.train.Example written by :func:`encode_record`."""
    import tensorflow as tf  # noqa: PLC0415

    example = tf.train.Example.FromString(serialized)
    feature = example.features.feature

    def _text(key: str) -> str:
        values = feature[key].bytes_list.value if key in feature else []
        return values[0].decode("utf-8") if values else ""

    return EmbeddingRecord(
        image_id=_text(IMAGE_ID),
        uri=_text(URI),
        embedding=np.asarray(feature[EMBEDDING].float_list.value, dtype=np.float32),
        captions=tuple(v.decode("utf-8") for v in feature[CAPTIONS].bytes_list.value)
        if CAPTIONS in feature
        else (),
        model_fingerprint=_text(MODEL_FINGERPRINT),
        content_hash=_text(CONTENT_HASH),
        file_size=_int(feature, FILE_SIZE),
        file_mtime_us=_int(feature, FILE_MTIME_US),
    )


@dataclass
class Manifest:
    """What a finished embedding run wrote; ``shards`` are file names relative to the manifest.

    ``count`` is the number of images embedded (distinct ids); ``shard_records``, when a writer
    records it, the number of records in each shard file (empty: not recorded). Readers hold
    the folder to both with :func:`check_manifest_files` and :func:`check_manifest_counts`.
    """

    count: int
    dimension: int
    model_fingerprint: str
    shards: list[str]
    errors: int = 0
    error_files: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    format: str = MANIFEST_FORMAT
    shard_records: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        # Unrecorded per-shard counts are left out: the file stays what readers before the field expect.
        data = {k: v for k, v in self.__dict__.items() if k != "shard_records" or v}
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        data = json.loads(text)
        return cls(**data)


def check_manifest_files(folder: str, manifest: Manifest, present: Iterable[str]) -> None:
    """The folder's shard files are exactly the manifest's, or :class:`BeamlensError` names the difference.

    ``present``: names of the shard files in the folder (matching :data:`SHARD_GLOB`) and of the
    listed ones that exist. Both directions matter: a listed shard that is missing loses images,
    and a shard file the manifest does not list (a stray ``embeddings-*`` of another run) is either
    a leftover the index would silently omit or one a reader globbing the folder would mix in.
    """
    present = set(present)
    missing = [name for name in manifest.shards if name not in present]
    stray = sorted(present - set(manifest.shards))
    problems = []
    if missing:
        problems.append(f"lists {len(missing)} shard file(s) that are missing: {', '.join(missing[:5])}")
    if stray:
        problems.append(f"does not list {len(stray)} shard file(s) in the folder: {', '.join(stray[:5])} "
                        "(left by another run? remove them or re-run `beamlens embed`)")
    if problems:
        raise BeamlensError(f"{folder}: {MANIFEST_NAME} and the shard files disagree: {MANIFEST_NAME} {'; it '.join(problems)}")
    if not manifest.shards:
        raise BeamlensError(f"{folder}: {MANIFEST_NAME} lists no shards")


def check_manifest_counts(folder: str, manifest: Manifest, held: Mapping[str, int], distinct: int | None) -> None:
    """The shards hold the records the manifest counts, in total and per shard where recorded.

    ``held``: records read from each listed shard; ``distinct``: distinct image ids among them
    (None: not known). The total may equal either: ``beamlens embed`` counts distinct ids (a copy a
    runner wrote twice is dropped by its shard's writer), a writer counting what it wrote counts records;
    any other number means the manifest does not describe these shards.
    """
    records = sum(held.values())
    if manifest.count not in (records, distinct):
        also = f" ({distinct} distinct ids)" if distinct is not None and distinct != records else ""
        raise BeamlensError(f"{folder}: {MANIFEST_NAME} says {manifest.count} records, the shards hold {records}{also}; "
                            "the manifest does not belong to these shards (re-run `beamlens embed`)")
    wrong = [f"{name}: {MANIFEST_NAME} says {expected}, the shard holds {held.get(name, 0)}"
             for name, expected in sorted(manifest.shard_records.items()) if held.get(name, 0) != expected]
    if wrong:
        raise BeamlensError(f"{folder}: the records per shard disagree with {MANIFEST_NAME}: {'; '.join(wrong[:5])}")
