"""The re-index graph: join the current corpus with the previous version's shards, decide per
image, embed only what changed, and write one new set of shards plus a plan.

One graph on every runner; only Create, ParDo, GroupByKey and Flatten, so it runs on the
DaskRunner too::

    current:  ListImages(source)                       -> (id, Current ref)
    previous: Create(previous shard paths) -> ReadShard -> (id, previous StoredRecord)
    CoGroupByKey -> Classify (transforms.reindex_plan.decide; hashes the current bytes)
        CARRY  -> the previous record, captions/uri refreshed (vector bytes untouched)
        EMBED  -> key by bucket -> GroupByKey -> chunks of max_batch_size -> GroupByKey
                  -> DecodeBatch -> EmbedBatches (RunInference)
        every decision -> per-shard plan summary files (a DoFn whose empty output feeds the sink)
    Flatten(carried, embedded, errors) -> WriteEmbeddingsAndErrors (the one sink)

The join is the scalable design: neither side is ever held in one process.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from typing import Any, Iterable, Iterator, NamedTuple, Optional, Sequence

import apache_beam as beam

from beamlens.models.encoders.preprocessing import DEFAULT_MAX_IMAGE_PIXELS, preprocess_image_bytes
from beamlens.models.errors import BeamlensError
from beamlens.models.io import files
from beamlens.models.shards.reader import shard_records
from beamlens.models.shards.records import EmbeddingRecord, StoredRecord, decode_record, peek_record
from beamlens.transforms.decode import DecodeBatch, ImageBatch, Preprocess, only
from beamlens.transforms.inference import EmbedBatches
from beamlens.transforms.listing import ListImages, ListPosition, count_images
from beamlens.transforms.read_images import ImageError, ImageReadError, ImageRef, ImageSource, content_hash, file_stamp, read_image_bytes
from beamlens.transforms.reindex_plan import Action, Current, Decision, PlanCounts, Previous, decide
from beamlens.transforms.run_accounting import run_and_reconcile
from beamlens.transforms.write_shards import WriteEmbeddingsAndErrors, mark_listed, prepare_output


class PlanEntry(NamedTuple):
    """One decision, on its way to the plan summary files (never reaches the shards)."""

    image_id: str
    action: str
    metadata_changed: bool
    hashed: bool = False


class EmbedRef(NamedTuple):
    """An image to embed (wraps ImageRef so the union of Classify's outputs stays unambiguous)."""

    ref: ImageRef


class ReadShard(beam.DoFn):
    """A previous shard path -> (image_id, StoredRecord) for every record in it (vector not decoded)."""

    def process(self, path: str) -> Iterator[tuple[str, StoredRecord]]:
        for serialized in shard_records(path):
            record = peek_record(serialized)
            yield record.image_id, record


def _stored_stamp(record: StoredRecord) -> Optional[tuple[int, int]]:
    return (record.file_size, record.file_mtime_us) if record.file_size >= 0 and record.file_mtime_us >= 0 else None


def _hash_uri(uri: str) -> Optional[str]:
    try:
        return content_hash(read_image_bytes(uri))
    except ImageReadError:
        return None  # the embed path reports the read error for this image


class Classify(beam.DoFn):
    """(id, {current: [ImageRef], previous: [StoredRecord]}) -> carried record | EmbedRef, + PlanEntry.

    A carried image whose captions, uri and file stamp are unchanged keeps its stored bytes
    (StoredRecord); otherwise it is decoded and gets the new ones (EmbeddingRecord, vector
    untouched), so a touched but unchanged file is hashed once, not on every run.
    """

    def __init__(self, model_fingerprint: str, trust_stamps: bool = True) -> None:
        self._fingerprint = model_fingerprint
        self._trust_stamps = trust_stamps

    def process(self, joined: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[Any]:
        image_id, sides = joined
        refs = list(sides["current"])
        records = list(sides["previous"])
        stamp = file_stamp(refs[0].uri) if refs and records else None  # only images in both are compared
        decision: Decision = decide(
            image_id,
            [Current(r.uri, tuple(r.captions), stamp) for r in refs],
            [Previous(r.content_hash, r.model_fingerprint, tuple(r.captions), r.uri, _stored_stamp(r)) for r in records],
            self._fingerprint,
            _hash_uri,
            self._trust_stamps,
        )
        metadata_changed = decision.captions_changed or decision.uri_changed
        yield PlanEntry(image_id, decision.action.value, metadata_changed, decision.hashed)
        if decision.action is Action.CARRY and not metadata_changed and _stored_stamp(records[0]) == stamp:
            yield records[0]
        elif decision.action is Action.CARRY:
            record = decode_record(records[0].serialized)
            size, mtime_us = stamp or (-1, -1)
            yield dataclasses.replace(record, captions=tuple(refs[0].captions), uri=refs[0].uri,
                                      file_size=size, file_mtime_us=mtime_us)
        elif decision.action.embeds:
            yield EmbedRef(refs[0])


def _key_current(indexed: tuple[ListPosition, ImageRef]) -> tuple[str, ImageRef]:
    return indexed[1].image_id, indexed[1]


def _bucket(embed: EmbedRef, buckets: int) -> tuple[int, ImageRef]:
    return zlib.crc32(embed.ref.image_id.encode("utf-8")) % buckets, embed.ref


def _chunks(keyed: tuple[int, Iterable[ImageRef]], size: int) -> Iterator[tuple[tuple[int, int], list[ImageRef]]]:
    bucket, refs = keyed
    ordered = sorted(refs, key=lambda r: r.image_id)  # same batches on every runner
    seen: set[str] = set()
    unique = [r for r in ordered if not (r.image_id in seen or seen.add(r.image_id))]
    for start in range(0, len(unique), size):
        yield (bucket, start // size), unique[start : start + size]


def _first_chunk(keyed: tuple[tuple[int, int], Iterable[list[ImageRef]]]) -> list[ImageRef]:
    return next(iter(keyed[1]))  # a runner that repeats elements gives identical copies


class BatchForEmbedding(beam.PTransform):
    """EmbedRefs -> list[ImageRef] batches of at most ``size``, spread over workers by the 2nd GroupByKey.

    Not ``BatchElements`` (emits in finish_bundle: dropped on Dask) nor ``GroupIntoBatches``
    (stateful: not on Dask).
    """

    def __init__(self, buckets: int, size: int) -> None:
        super().__init__()
        self._buckets, self._size = buckets, size

    def expand(self, embed_refs):
        return (
            embed_refs
            | "Bucket" >> beam.Map(_bucket, self._buckets)
            | "GroupBuckets" >> beam.GroupByKey()
            | "Chunk" >> beam.FlatMap(_chunks, self._size)
            | "SpreadChunks" >> beam.GroupByKey()
            | "Unwrap" >> beam.Map(_first_chunk)
        )


def _plan_key(entry: Optional[PlanEntry], shards: int) -> tuple[int, Optional[PlanEntry]]:
    return (zlib.crc32(entry.image_id.encode("utf-8")) % shards if entry else 0), entry


class WritePlanShard(beam.DoFn):
    """(shard, decisions) -> plan/plan-SSSSS-of-NNNNN.json (counts + id samples); emits nothing."""

    def __init__(self, plan_dir: str, shards: int) -> None:
        self._plan_dir, self._shards = plan_dir, shards

    def process(self, keyed: tuple[int, Iterable[Optional[PlanEntry]]]) -> Iterator[Any]:
        shard, entries = keyed
        unique: dict[str, PlanEntry] = {}
        for entry in entries:
            if entry is not None:
                unique.setdefault(entry.image_id, entry)
        plan = PlanCounts()
        for image_id in sorted(unique):
            entry = unique[image_id]
            plan.add(Decision(image_id, Action(entry.action), captions_changed=entry.metadata_changed, hashed=entry.hashed))
        files.write_atomic(plan_file(self._plan_dir, shard, self._shards), json.dumps(plan.to_dict(), sort_keys=True))
        return iter(())


@dataclasses.dataclass(frozen=True)
class ReindexGraph:
    """Everything the re-index graph is built from (named, so no caller passes ten positionals)."""

    source: ImageSource
    previous_shards: Sequence[str]
    model: str
    fingerprint: str
    image_size: int
    shards_dir: str
    plan_dir: str
    num_shards: int
    max_batch_size: int
    buckets: int
    trust_stamps: bool = True
    preprocess: Preprocess = preprocess_image_bytes
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS


def build_pipeline(pipeline: beam.Pipeline, graph: ReindexGraph) -> None:
    """The one re-index graph (see the module docstring), added to ``pipeline``."""
    refs = pipeline | "ListImages" >> ListImages(graph.source)
    listed = refs | "MarkListed" >> beam.Map(mark_listed)  # each shard's writer accounts for its ids
    current = refs | "KeyCurrent" >> beam.Map(_key_current)
    previous = (
        pipeline
        | "PreviousShards" >> beam.Create(list(graph.previous_shards), reshuffle=False)
        | "ReadShards" >> beam.ParDo(ReadShard())
    )
    decisions = ({"current": current, "previous": previous} | "Join" >> beam.CoGroupByKey()
                 | "Classify" >> beam.ParDo(Classify(graph.fingerprint, graph.trust_stamps)))
    carried = decisions | "OnlyCarried" >> beam.FlatMap(only(EmbeddingRecord))
    carried_as_stored = decisions | "OnlyCarriedAsStored" >> beam.FlatMap(only(StoredRecord))
    outcomes = (
        decisions
        | "OnlyToEmbed" >> beam.FlatMap(only(EmbedRef))
        | "Batch" >> BatchForEmbedding(graph.buckets, graph.max_batch_size)
        | "ReadDecode" >> beam.ParDo(DecodeBatch(graph.image_size, graph.preprocess, max_pixels=graph.max_pixels))
    )
    batches = outcomes | "OnlyBatches" >> beam.FlatMap(only(ImageBatch))
    decode_errors = outcomes | "OnlyDecodeErrors" >> beam.FlatMap(only(ImageError))
    embedded = batches | "Embed" >> EmbedBatches(graph.model, graph.fingerprint, 1, graph.max_batch_size)
    shards = graph.num_shards
    every_plan_shard = pipeline | "PlanShards" >> beam.Create([(i, None) for i in range(shards)])
    plan_written = (
        (decisions | "OnlyPlan" >> beam.FlatMap(only(PlanEntry)) | "KeyPlan" >> beam.Map(_plan_key, shards),
         every_plan_shard)
        | "MergePlanShards" >> beam.Flatten()
        | "GroupPlan" >> beam.GroupByKey()
        | "WritePlan" >> beam.ParDo(WritePlanShard(graph.plan_dir, shards))
    )
    # One sink (Dask runs only the last branch): the plan writer's empty output feeds it too.
    _ = (
        (listed, carried, carried_as_stored, embedded, decode_errors, plan_written)
        | "AllOutcomes" >> beam.Flatten()
        | "Write" >> WriteEmbeddingsAndErrors(graph.shards_dir, shards)
    )


def plan_file(plan_dir: str, shard: int, shards: int) -> str:
    return files.join(plan_dir, f"plan-{shard:05d}-of-{shards:05d}.json")


def read_plan(plan_dir: str, shards: int) -> PlanCounts:
    """The plan summed over its shard files; a missing file means the runner skipped the step."""
    total = PlanCounts()
    for shard in range(shards):
        path = plan_file(plan_dir, shard, shards)
        if not files.exists(path):
            raise BeamlensError(f"{path} is missing: the runner skipped the plan step; refusing to publish")
        total.merge(PlanCounts.from_dict(json.loads(files.read_text(path))))
    return total


MAX_BUCKETS, BATCHES_PER_BUCKET = 4096, 16


def auto_buckets(listed: int, batch: int) -> int:
    """~16 batches per bucket at a full re-embed: enough groups to spread, few enough to fill batches."""
    return max(1, min(MAX_BUCKETS, -(-listed // (batch * BATCHES_PER_BUCKET))))


def corpus_size_for_buckets(source: ImageSource, batch: int, previous_count: int) -> int:
    """The size :func:`auto_buckets` needs, without listing the corpus in this process: the
    previous version's count when there is one, else the listing counted only as far as the
    bucket count still grows (no id is kept)."""
    if previous_count:
        return previous_count
    return count_images(source, MAX_BUCKETS * BATCHES_PER_BUCKET * batch)


@dataclasses.dataclass
class GraphOutcome:
    """What one run of the graph wrote, as its shard writers accounted for it, reconciled with the listing."""

    summary: Any  # transforms.write_shards.OutputSummary
    plan: PlanCounts
    beam_seconds: float


def run_reindex_graph(pipeline: beam.Pipeline, graph: ReindexGraph) -> GraphOutcome:
    """Build and run the graph, then check that every listed image is accounted for exactly once
    (the post-run path ``embed`` takes too: transforms/run_accounting.py) and that the plan covers them."""
    prepare_output(graph.shards_dir)
    files.mkdirs(graph.plan_dir)
    build_pipeline(pipeline, graph)
    run = run_and_reconcile(pipeline, graph.shards_dir, graph.num_shards, graph.fingerprint)
    plan = read_plan(graph.plan_dir, graph.num_shards)
    planned = sum(plan.counts.values()) - plan.get(Action.DELETE)
    if planned != run.summary.listed:
        raise BeamlensError(f"the plan covers {planned} current images but {run.summary.listed} were listed; refusing to publish")
    return GraphOutcome(run.summary, plan, run.seconds)
