"""Write embedding shards and error files, then check the counts and write the manifest last.

Layout (names from ``models.shards.records``)::

    <out>/embeddings-SSSSS-of-NNNNN.tfrecord   TFRecord of tf.train.Example, one per image
    <out>/errors-SSSSS-of-NNNNN.jsonl          one JSON line per bad image (id, uri, reason, stage)
    <out>/summary-SSSSS-of-NNNNN.json          the shard's accounting (:class:`ShardSummary`), its writer's last file
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

The runner is still not trusted to have written what it was given, and the launcher must not
read every record back (at 100M images that is ~50 GB through one process after the workers are
done). So the listed ids travel to the sink too (:class:`Listed`, keyed like the records): each
shard's writer sees its listed ids, records and errors together, checks every vector as it writes
it, and writes its accounting last. :func:`read_outputs` reads those O(shards) summaries and the
files' sizes; :func:`reconcile` fails loudly unless every shard accounts for each listed id
exactly once and ``listed == embedded + failed``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
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
from beamlens.models.shards.reader import check_record_vector
from beamlens.transforms.read_images import ImageError

ERRORS_SUFFIX = ".jsonl"
SUMMARY_PREFIX, SUMMARY_SUFFIX = "summary", ".json"  # one per shard, its writer's accounting


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


@dataclass(frozen=True)
class Listed:
    """A listed image id on its way to its shard's writer, which accounts for it there."""

    image_id: str


def mark_listed(indexed: tuple[Any, Any]) -> Listed:
    """(ListPosition, ImageRef) from ListImages -> the id its shard must account for."""
    return Listed(indexed[1].image_id)


@dataclass
class ShardSummary:
    """One shard's accounting, written by its writer beside the shard (``summary-*.json``).

    The launcher reads these, O(shards) bytes, instead of every record: an id always lands in
    the shard ``shard_of`` names, so its listing, its record and its error all meet in one writer,
    which can tell missing, unknown and doubly-accounted ids there."""

    shard: int
    listed: int = 0
    embedded: int = 0
    failed: int = 0
    duplicates_dropped: int = 0
    dimension: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    fingerprints: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # listed, neither embedded nor failed (first few)
    unknown: list[str] = field(default_factory=list)  # written, never listed (first few)
    both: list[str] = field(default_factory=list)  # embedded and failed (first few)
    anomalies: int = 0  # missing + unknown + both, all of them
    bad_record: str = ""  # the first record that breaks a vector rule
    shard_bytes: int = 0
    errors_bytes: int = 0

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ShardSummary":
        return cls(**json.loads(text))


class _ShardCheck:
    """The per-record rules of a shard: one dimension, finite unit vectors (an all-zero vector,
    a blank image through L2 normalisation, passes), the fingerprints seen."""

    def __init__(self, summary: ShardSummary, name: str) -> None:
        self.summary, self.name, self.fingerprints = summary, name, set()

    def check(self, record: EmbeddingRecord) -> None:
        vector = np.asarray(record.embedding, np.float32)
        self.fingerprints.add(record.model_fingerprint)
        where = f"{self.name}: record {record.image_id!r}"
        if self.summary.bad_record:
            return
        if self.summary.dimension and vector.size != self.summary.dimension:
            self.summary.bad_record = f"{where} has dimension {vector.size}, others {self.summary.dimension}"
            return
        self.summary.dimension = vector.size
        try:
            check_record_vector(vector, where, unit_norm=bool(np.any(vector)))
        except BeamlensError as error:
            self.summary.bad_record = str(error)


def _account(summary: ShardSummary, listed: set[str], embedded: set[str], failed: set[str]) -> None:
    both, written = embedded & failed, embedded | failed
    missing, unknown = listed - written, written - listed
    summary.listed, summary.embedded, summary.failed = len(listed), len(embedded), len(failed)
    summary.anomalies = len(missing) + len(unknown) + len(both)
    summary.missing, summary.unknown, summary.both = (sorted(ids)[:5] for ids in (missing, unknown, both))


class WriteShard(beam.DoFn):
    """(shard, listed ids, records and errors) -> embeddings-i.tfrecord + errors-i.jsonl, then
    summary-i.json (the shard's accounting, written last); emits one count line."""

    def __init__(self, output_dir: str, num_shards: int) -> None:
        self._output_dir = output_dir
        self._num_shards = num_shards

    def _name(self, prefix: str, shard: int, suffix: str) -> str:
        return join(self._output_dir, shard_name(prefix, shard, self._num_shards, suffix))

    def process(self, keyed: tuple[int, Iterable[Any]]) -> Iterator[tuple[int, int, int]]:
        shard, outcomes = keyed
        summary = ShardSummary(shard)
        shard_path = self._name(SHARD_PREFIX, shard, SHARD_SUFFIX)
        rules = _ShardCheck(summary, files.basename(shard_path))
        seen: set[str] = set()
        listed: set[str] = set()
        errors: dict[str, ImageError] = {}
        with files.atomic_stream(shard_path) as stream:  # the one atomic writer, any filesystem
            for outcome in outcomes:
                if isinstance(outcome, Listed):
                    listed.add(outcome.image_id)
                elif isinstance(outcome, (EmbeddingRecord, StoredRecord)) and outcome.image_id not in seen:
                    seen.add(outcome.image_id)
                    serialized = outcome.serialized if isinstance(outcome, StoredRecord) else encode_record(outcome)
                    rules.check(decode_record(serialized) if isinstance(outcome, StoredRecord) else outcome)
                    summary.shard_bytes += write_record(stream, serialized)
                elif isinstance(outcome, (EmbeddingRecord, StoredRecord)):
                    summary.duplicates_dropped += 1
                elif isinstance(outcome, ImageError):
                    summary.duplicates_dropped += int(outcome.image_id in errors)
                    errors.setdefault(outcome.image_id, outcome)
            checkpoint("write")  # written, not yet renamed
        checkpoint("rename")
        lines = "".join(json.dumps(errors[i].to_json_dict(), sort_keys=True) + "\n" for i in sorted(errors))
        files.write_atomic(self._name(ERRORS_PREFIX, shard, ERRORS_SUFFIX), lines)
        summary.errors_bytes = len(lines.encode("utf-8"))
        for error in errors.values():
            summary.reasons[error.stage] = summary.reasons.get(error.stage, 0) + 1
        summary.fingerprints = sorted(rules.fingerprints)
        _account(summary, listed, seen, set(errors))
        files.write_atomic(self._name(SUMMARY_PREFIX, shard, SUMMARY_SUFFIX), summary.to_json())
        yield shard, len(seen), len(errors)


class WriteEmbeddingsAndErrors(beam.PTransform):
    """PCollection[Listed | EmbeddingRecord | StoredRecord | ImageError] -> shards, error files and
    their summaries (one sink on every runner).

    Every listed id must come in as a :class:`Listed` (``| beam.Map(mark_listed)`` on ListImages'
    output) for its shard to account for it. A StoredRecord (a re-index carrying an unchanged
    image) is written byte for byte."""

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
                f"{SUMMARY_PREFIX}-*-of-*{SUMMARY_SUFFIX}",
                f"{SHARD_PREFIX}-*{SHARD_SUFFIX}.tmp-*")  # the last: temp files of a crashed run
    for pattern in patterns:
        stale += files.match_paths(join(output_dir, pattern))
    if stale:
        files.delete(stale)


@dataclass
class OutputSummary:
    """What the shard writers accounted for, summed over their ``summary-*.json`` files."""

    listed: int
    embedded: int
    failed: int
    dimension: int
    shards: list[str]
    error_files: list[str]
    duplicates_dropped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # what does not reconcile, shard by shard


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


def _shard_problems(summary: ShardSummary, output_dir: str, names: tuple[str, str], fingerprint: str) -> list[str]:
    """What is wrong with one shard: its ids, its vectors, or files that are not what its writer wrote."""
    problems = [summary.bad_record] if summary.bad_record else []
    if [f for f in summary.fingerprints if f != fingerprint]:
        problems.append(f"{names[0]}: model fingerprint {summary.fingerprints}, expected {fingerprint!r}")
    for name, size in zip(names, (summary.shard_bytes, summary.errors_bytes)):
        stat = files.size_and_mtime(join(output_dir, name))
        if stat is None or stat[0] != size:
            problems.append(f"{name}: {stat[0] if stat else 'no'} bytes on disk, its writer wrote {size}")
    if summary.anomalies:
        problems.append(f"shard {summary.shard}: missing {summary.missing}, unknown {summary.unknown}, "
                        f"both embedded and failed {summary.both} ({summary.anomalies} ids in all)")
    return problems


def read_outputs(output_dir: str, num_shards: int, model_fingerprint: str) -> OutputSummary:
    """The writers' per-shard summaries, summed (O(shards) reads, whatever the corpus size); each
    shard and error file must be there with the size its writer recorded."""
    shards = _expected_files(output_dir, SHARD_PREFIX, SHARD_SUFFIX, num_shards)
    error_files = _expected_files(output_dir, ERRORS_PREFIX, ERRORS_SUFFIX, num_shards)
    names = _expected_files(output_dir, SUMMARY_PREFIX, SUMMARY_SUFFIX, num_shards)
    total = OutputSummary(0, 0, 0, 0, shards, error_files)
    for shard, name in enumerate(names):
        summary = ShardSummary.from_json(files.read_text(join(output_dir, name)))
        total.problems += _shard_problems(summary, output_dir, (shards[shard], error_files[shard]), model_fingerprint)
        if summary.dimension and total.dimension and summary.dimension != total.dimension:
            total.problems.append(f"{shards[shard]} has dimension {summary.dimension}, others {total.dimension}")
        total.dimension = total.dimension or summary.dimension
        total.listed += summary.listed
        total.embedded += summary.embedded
        total.failed += summary.failed
        total.duplicates_dropped += summary.duplicates_dropped
        for stage, count in summary.reasons.items():
            total.reasons[stage] = total.reasons.get(stage, 0) + count
    return total


def reconcile(summary: OutputSummary) -> None:
    """Fail loudly unless every listed image is embedded or failed, exactly once, and nothing else;
    a source that listed nothing is an error too (there is nothing to publish)."""
    if summary.listed == 0 and not summary.problems:
        raise BeamlensError("no images found: the source listed none; no manifest was written")
    if summary.problems or summary.listed != summary.embedded + summary.failed:
        raise CountMismatchError(
            f"counts do not reconcile: read {summary.listed} images, wrote {summary.embedded} embeddings + "
            f"{summary.failed} errors; " + "; ".join(summary.problems[:5])
            + ". The runner lost or invented elements; no manifest was written.")


def write_manifest(output_dir: str, summary: OutputSummary, model_fingerprint: str, options: dict[str, Any], extra: dict[str, Any]) -> Manifest:
    manifest = Manifest(
        count=summary.embedded,
        dimension=summary.dimension,
        model_fingerprint=model_fingerprint,
        shards=list(summary.shards),
        errors=summary.failed,
        error_files=list(summary.error_files),
        options=options,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        extra=extra,
    )
    files.write_atomic(join(output_dir, MANIFEST_NAME), manifest.to_json())
    checkpoint("manifest")
    return manifest
