"""Write embedding shards and error files, then check the counts and write the manifest last.

Layout (names from ``models.shards.records``)::

    <out>/embeddings-SSSSS-of-NNNNN.tfrecord   TFRecord of tf.train.Example, one per image
    <out>/errors-SSSSS-of-NNNNN.jsonl          one JSON line per bad image (id, uri, reason, stage)
    <out>/manifest.json                        written last, atomically, only if counts reconcile

One sink, written by our own GroupByKey + DoFn rather than ``WriteToTFRecord``, because of what
the DaskRunner (Beam 2.77) does:
* it computes only the LAST branch of a pipeline, so a second sink (errors) would never run;
  here embeddings and errors of a shard are written by the same DoFn call;
* it may run the steps feeding a write twice; ``WriteToTFRecord`` then failed in finalize
  ("src and dst files do not exist", measured with a 2-process LocalCluster). Our shard files are
  written under a temporary name and renamed, keyed by ``crc32(image id) % num_shards``, so a
  re-run rewrites the same file, and copies of one id meet in one call and are dropped there.
The file format is exactly what ``WriteToTFRecord`` writes (``tf.io.TFRecordWriter`` framing).

The runner is still not trusted to have written what it was given: :func:`read_outputs` reads
every file back and :func:`reconcile` fails loudly unless
``listed images == distinct embedded ids + distinct failed ids``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import apache_beam as beam
import numpy as np

from beamlens.models.errors import BeamlensError
from beamlens.models.faults import checkpoint
from beamlens.models.io import files
from beamlens.models.io.tfrecord import write_record
from beamlens.models.shards.records import (
    ERRORS_PREFIX,
    MANIFEST_NAME,
    SHARD_PREFIX,
    SHARD_SUFFIX,
    EmbeddingRecord,
    Manifest,
    StoredRecord,
    decode_record,
    encode_record,
)
from beamlens.models.shards.reader import check_record_vector, shard_records
from beamlens.transforms.read_images import ImageError

ERRORS_SUFFIX = ".jsonl"


class CountMismatchError(BeamlensError):
    """The output does not account for every listed image: the run must not be trusted."""


def join(folder: str, name: str) -> str:
    return files.join(folder, name)


def shard_name(prefix: str, index: int, total: int, suffix: str) -> str:
    return f"{prefix}-{index:05d}-of-{total:05d}{suffix}"


def shard_of(image_id: str, num_shards: int) -> int:
    """Stable across processes (unlike hash()): copies of one id always meet in one file."""
    return zlib.crc32(image_id.encode("utf-8")) % num_shards


def _key_outcome(outcome: EmbeddingRecord | StoredRecord | ImageError, num_shards: int) -> tuple[int, Any]:
    return shard_of(outcome.image_id, num_shards), outcome


class WriteShard(beam.DoFn):
    """(shard, records and errors) -> embeddings-i.tfrecord + errors-i.jsonl; emits one count line."""

    def __init__(self, output_dir: str, num_shards: int) -> None:
        self._output_dir = output_dir
        self._num_shards = num_shards

    def process(self, keyed: tuple[int, Iterable[Any]]) -> Iterator[tuple[int, int, int]]:
        shard, outcomes = keyed
        shard_path = join(self._output_dir, shard_name(SHARD_PREFIX, shard, self._num_shards, SHARD_SUFFIX))
        seen: set[str] = set()
        errors: dict[str, ImageError] = {}
        with files.atomic_stream(shard_path) as stream:  # the one atomic writer, any filesystem
            for outcome in outcomes:
                if isinstance(outcome, (EmbeddingRecord, StoredRecord)) and outcome.image_id not in seen:
                    seen.add(outcome.image_id)
                    write_record(stream, outcome.serialized if isinstance(outcome, StoredRecord) else encode_record(outcome))
                elif isinstance(outcome, ImageError):
                    errors.setdefault(outcome.image_id, outcome)
            checkpoint("write")  # written, not yet renamed
        checkpoint("rename")
        lines = [json.dumps(errors[i].to_json_dict(), sort_keys=True) + "\n" for i in sorted(errors)]
        files.write_atomic(join(self._output_dir, shard_name(ERRORS_PREFIX, shard, self._num_shards, ERRORS_SUFFIX)), "".join(lines))
        yield shard, len(seen), len(errors)


class WriteEmbeddingsAndErrors(beam.PTransform):
    """PCollection[EmbeddingRecord | StoredRecord | ImageError] -> shards + error files (one sink on every runner).

    A StoredRecord (a re-index carrying an unchanged image) is written byte for byte."""

    def __init__(self, output_dir: str, num_shards: int) -> None:
        super().__init__()
        if num_shards < 1:
            raise BeamlensError(f"--num-shards must be at least 1, got {num_shards}")
        self._output_dir = output_dir
        self._num_shards = num_shards

    def expand(self, outcomes):
        n = self._num_shards
        keyed = outcomes | "KeyByShard" >> beam.Map(_key_outcome, n)
        # One (shard, None) per shard so that every file exists, empty or not.
        every_shard = outcomes.pipeline | "EveryShard" >> beam.Create([(i, None) for i in range(n)])
        return (
            (keyed, every_shard)
            | "WithEveryShard" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShards" >> beam.ParDo(WriteShard(self._output_dir, n))
        )


def prepare_output(output_dir: str) -> None:
    """Remove a previous run's manifest first (the output now reads as unfinished), then its files."""
    files.mkdirs(output_dir)
    manifest = join(output_dir, MANIFEST_NAME)
    if files.exists(manifest):
        files.delete([manifest])
    stale = []
    patterns = (f"{SHARD_PREFIX}-*-of-*{SHARD_SUFFIX}", f"{ERRORS_PREFIX}-*-of-*{ERRORS_SUFFIX}",
                f"{SHARD_PREFIX}-*{SHARD_SUFFIX}.tmp-*")  # the last: temp files of a crashed run
    for pattern in patterns:
        stale += files.match_paths(join(output_dir, pattern))
    if stale:
        files.delete(stale)


@dataclass
class OutputSummary:
    """What was really written, read back from the files."""

    embedded_ids: set[str]
    error_ids: set[str]
    dimension: int
    shards: list[str]
    error_files: list[str]
    duplicates_dropped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def _expected_files(output_dir: str, prefix: str, suffix: str, num_shards: int) -> list[str]:
    names = [shard_name(prefix, i, num_shards, suffix) for i in range(num_shards)]
    pattern = join(output_dir, f"{prefix}-*-of-*{suffix}")
    found = {files.basename(path) for path in files.match_paths(pattern)}
    missing = [n for n in names if n not in found]
    extra = sorted(found - set(names))
    if missing or extra:
        raise CountMismatchError(
            f"{output_dir}: expected {num_shards} files {prefix}-*-of-{num_shards:05d}{suffix}; "
            f"missing {missing[:5]}, unexpected {extra[:5]}"
        )
    return names


def read_outputs(output_dir: str, num_shards: int, model_fingerprint: str) -> OutputSummary:
    """Read every shard and error file back; duplicates (same id, same vector) are tolerated."""
    shards = _expected_files(output_dir, SHARD_PREFIX, SHARD_SUFFIX, num_shards)
    error_files = _expected_files(output_dir, ERRORS_PREFIX, ERRORS_SUFFIX, num_shards)
    digests: dict[str, bytes] = {}
    dimension = -1
    duplicates = 0
    for name in shards:
        for serialized in shard_records(join(output_dir, name)):
            record: EmbeddingRecord = decode_record(serialized)
            vector = np.asarray(record.embedding, np.float32)
            where = f"{name}: record {record.image_id!r}"
            if dimension < 0:
                dimension = vector.size
            if vector.size != dimension or vector.size == 0:
                raise CountMismatchError(f"{where} has dimension {vector.size}, others {dimension}")
            if record.model_fingerprint != model_fingerprint:
                raise CountMismatchError(f"{where} has model fingerprint {record.model_fingerprint!r}, expected {model_fingerprint!r}")
            try:  # the reader's rule; an all-zero vector (a blank image through L2 normalisation) passes
                check_record_vector(vector, where, unit_norm=bool(np.any(vector)))
            except BeamlensError as error:
                raise CountMismatchError(str(error)) from None
            digest = hashlib.sha256(serialized).digest()
            if record.image_id in digests:
                if digests[record.image_id] != digest:
                    raise CountMismatchError(f"{where} appears twice with different contents")
                duplicates += 1
                continue
            digests[record.image_id] = digest
    error_ids: set[str] = set()
    reasons: dict[str, int] = {}
    for name in error_files:
        for line in files.read_text(join(output_dir, name)).splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            if entry["image_id"] in error_ids:
                duplicates += 1
                continue
            error_ids.add(entry["image_id"])
            reasons[entry["stage"]] = reasons.get(entry["stage"], 0) + 1
    return OutputSummary(set(digests), error_ids, max(dimension, 0), shards, error_files, duplicates, reasons)


def reconcile(summary: OutputSummary, listed_ids: set[str]) -> None:
    """Fail loudly unless every listed image is embedded or failed, exactly once, and nothing else."""
    both = summary.embedded_ids & summary.error_ids
    written = summary.embedded_ids | summary.error_ids
    missing = listed_ids - written
    unknown = written - listed_ids
    if both or missing or unknown or len(listed_ids) != len(summary.embedded_ids) + len(summary.error_ids):
        raise CountMismatchError(
            f"counts do not reconcile: read {len(listed_ids)} images, wrote {len(summary.embedded_ids)} "
            f"embeddings + {len(summary.error_ids)} errors; missing {len(missing)} {sorted(missing)[:5]}, "
            f"unknown {len(unknown)} {sorted(unknown)[:5]}, both embedded and failed {len(both)} {sorted(both)[:5]}. "
            "The runner lost or invented elements; no manifest was written."
        )


def write_manifest(output_dir: str, summary: OutputSummary, model_fingerprint: str, options: dict[str, Any], extra: dict[str, Any]) -> Manifest:
    manifest = Manifest(
        count=len(summary.embedded_ids),
        dimension=summary.dimension,
        model_fingerprint=model_fingerprint,
        shards=list(summary.shards),
        errors=len(summary.error_ids),
        error_files=list(summary.error_files),
        options=options,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        extra=extra,
    )
    files.write_atomic(join(output_dir, MANIFEST_NAME), manifest.to_json())
    checkpoint("manifest")
    return manifest
