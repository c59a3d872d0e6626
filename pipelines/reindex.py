"""``beamlens reindex``: embed only new or changed images, carry the rest over, publish a new version.

    beamlens reindex --output-root build/index --captions data/annotations/captions_val2017.json \\
        --images data/val2017 --model build/vision_encoder.keras \\
        --text-embedder build/text_embedder.tflite [--image-embedder build/image_embedder.tflite] \\
        [--previous build/index]  [--runner ... any Beam option]

Layout written (see models/versioned_output.py)::

    ROOT/v-YYYYmmdd-HHMMSS-xxxxxx/shards/       embeddings-*.tfrecord, errors-*.jsonl, manifest.json
    ROOT/v-.../plan/plan-*.json                  per-shard counts of carried/new/changed/deleted ids
    ROOT/v-.../searchers/                        text_searcher.tflite, image_searcher.tflite, report
    ROOT/v-.../reindex_report.json               written last: the version's completion marker
    ROOT/LATEST                                  moved atomically after the marker exists

The Beam graph (one graph on every runner; only Create, ParDo, GroupByKey and Flatten, so it
runs on the DaskRunner too)::

    current:  ListImages(source)                       -> (id, Current ref)
    previous: Create(previous shard paths) -> ReadShard -> (id, previous EmbeddingRecord)
    CoGroupByKey -> Classify (models.reindex_plan.decide; hashes the current bytes)
        CARRY  -> the previous record, captions/uri refreshed (vector bytes untouched)
        EMBED  -> key by bucket -> GroupByKey -> chunks of --max-batch-size -> GroupByKey
                  -> DecodeBatch -> EmbedBatches (RunInference)           (transforms/, issue 4)
        every decision -> per-shard plan summary files (a DoFn whose empty output feeds the sink)
    Flatten(carried, embedded, errors) -> WriteEmbeddingsAndErrors (the one sink)

The join is the scalable design: neither side is ever held in one process (the launcher keeps
only the set of listed ids for the final count check, as ``beamlens embed`` does). Then, in the
launcher: read back + reconcile (fail loudly on any lost record), manifest, searcher, report,
LATEST.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import shutil
import sys
import tempfile
import time
import zlib
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions

from models import versioned_output as vo
from models.errors import BeamlensError
from models.faults import checkpoint
from models.fingerprint import model_fingerprint
from models.output_lock import DEFAULT_TTL_SECONDS, OutputLock
from models.preprocessing import DEFAULT_MAX_IMAGE_PIXELS
from models.reindex_plan import Action, Current, Decision, PlanCounts, Previous, decide
from pipelines.embed_images import EmbedOptions, model_image_size
from pipelines.options import parse_pipeline_options
from models.shard_format import MANIFEST_NAME, EmbeddingRecord, Manifest, StoredRecord, decode_record, peek_record
from models.tfrecord import read_records
from transforms.decode import DecodeBatch, ImageBatch, only
from transforms.inference import EmbedBatches
from transforms.read_images import (ImageError, ImageReadError, ImageRef, ImageSource, ListImages, content_hash, file_stamp,
                                    iter_image_refs, read_image_bytes)
from transforms.write_shards import WriteEmbeddingsAndErrors, prepare_output, read_outputs, reconcile, write_manifest

DEFAULT_NUM_SHARDS = 4
DEFAULT_MAX_BATCH_SIZE = 64
DEFAULT_MAX_DELETED_FRACTION = 0.10
PLAN_DIR = "plan"
REPORT_NAME = vo.COMPLETE_MARKER


class ReindexOptions(PipelineOptions):
    """The job's own options. The corpus/model options (--captions, --images, --input-glob, --model,
    --num-shards, --image-size, --max-batch-size) are ``beamlens embed``'s EmbedOptions, shared on
    purpose: Beam registers every PipelineOptions subclass in one parser, so redefining them here
    would conflict. Standard Beam options (--runner, Dataflow, Flink, Dask) pass through."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--output-root", "--output_root", dest="output_root", default=None, help="root folder of the versioned outputs (holds LATEST)")
        parser.add_argument("--previous", dest="previous", default=None, help="previous output: a root (follows LATEST), ROOT/LATEST, a version folder or a `beamlens embed` folder; default: --output-root")
        parser.add_argument("--text-embedder", "--text_embedder", dest="text_embedder", default=None, help="text embedder .tflite -> searchers/text_searcher.tflite")
        parser.add_argument("--image-embedder", "--image_embedder", dest="image_embedder", default=None, help="image embedder .tflite -> searchers/image_searcher.tflite")
        parser.add_argument("--no-searcher", "--no_searcher", dest="no_searcher", action="store_true", default=False, help="publish shards only (build the searcher elsewhere)")
        parser.add_argument("--embed-buckets", "--embed_buckets", dest="embed_buckets", type=int, default=0, help="groups the images to embed are batched in (default: from the corpus size)")
        parser.add_argument("--keep-versions", "--keep_versions", dest="keep_versions", type=int, default=3, help="finished versions kept under the root (older ones deleted); 0 keeps all")
        parser.add_argument("--rehash", dest="rehash", action="store_true", default=False,
                            help="read and hash every file, even those whose size and modification time are the "
                                 "stored ones (default: those are taken as unchanged without reading them)")
        parser.add_argument("--allow-shrink", "--allow_shrink", dest="allow_shrink", action="store_true", default=False,
                            help="publish even when the new version drops more than --max-deleted-fraction of the previous one")
        parser.add_argument("--max-deleted-fraction", "--max_deleted_fraction", dest="max_deleted_fraction", type=float,
                            default=DEFAULT_MAX_DELETED_FRACTION,
                            help="largest share of the previous version's items a run may drop before it refuses "
                                 f"to publish (the shrink guard; default {DEFAULT_MAX_DELETED_FRACTION:g})")
        parser.add_argument("--lock-ttl", "--lock_ttl", dest="lock_ttl", type=float, default=DEFAULT_TTL_SECONDS,
                            help="seconds without a heartbeat after which another run may take over this run's "
                                 f"lock on the root (default {DEFAULT_TTL_SECONDS:g}; a holder on this host whose "
                                 "process is gone is taken over at once)")
        parser.add_argument("--searcher-arg", "--searcher_arg", dest="searcher_args", action="append", default=[], help="extra argument for build-searcher, repeatable (e.g. --searcher-arg=--score=brute_force)")


# ------------------------------------------------------------------------------------------
# Beam side: the join and the decisions
# ------------------------------------------------------------------------------------------
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
        for serialized in read_records(path):
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


def _key_current(indexed: tuple[int, ImageRef]) -> tuple[str, ImageRef]:
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
        path = FileSystems.join(self._plan_dir, f"plan-{shard:05d}-of-{self._shards:05d}.json")
        text = json.dumps(plan.to_dict(), sort_keys=True)
        if "://" in path:
            with FileSystems.create(path) as stream:
                stream.write(text.encode("utf-8"))
        else:
            vo.write_text_atomic(path, text)
        return iter(())


def build_pipeline(
    pipeline: beam.Pipeline,
    source: ImageSource,
    previous_shards: list[str],
    embed: EmbedOptions,
    image_size: int,
    fingerprint: str,
    shards_dir: str,
    plan_dir: str,
    buckets: int,
    trust_stamps: bool = True,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> None:
    current = (
        pipeline
        | "ListImages" >> ListImages(source)
        | "KeyCurrent" >> beam.Map(_key_current)
    )
    previous = (
        pipeline
        | "PreviousShards" >> beam.Create(previous_shards or [], reshuffle=False)
        | "ReadShards" >> beam.ParDo(ReadShard())
    )
    decisions = {"current": current, "previous": previous} | "Join" >> beam.CoGroupByKey() | "Classify" >> beam.ParDo(Classify(fingerprint, trust_stamps))

    carried = decisions | "OnlyCarried" >> beam.FlatMap(only(EmbeddingRecord))
    carried_as_stored = decisions | "OnlyCarriedAsStored" >> beam.FlatMap(only(StoredRecord))
    outcomes = (
        decisions
        | "OnlyToEmbed" >> beam.FlatMap(only(EmbedRef))
        | "Batch" >> BatchForEmbedding(buckets, embed.max_batch_size)
        | "ReadDecode" >> beam.ParDo(DecodeBatch(image_size, max_pixels=max_pixels))
    )
    batches = outcomes | "OnlyBatches" >> beam.FlatMap(only(ImageBatch))
    decode_errors = outcomes | "OnlyDecodeErrors" >> beam.FlatMap(only(ImageError))
    embedded = batches | "Embed" >> EmbedBatches(embed.model, fingerprint, 1, embed.max_batch_size)

    shards = embed.num_shards
    every_plan_shard = pipeline | "PlanShards" >> beam.Create([(i, None) for i in range(shards)])
    plan_written = (
        (
            decisions | "OnlyPlan" >> beam.FlatMap(only(PlanEntry)) | "KeyPlan" >> beam.Map(_plan_key, shards),
            every_plan_shard,
        )
        | "MergePlanShards" >> beam.Flatten()
        | "GroupPlan" >> beam.GroupByKey()
        | "WritePlan" >> beam.ParDo(WritePlanShard(plan_dir, shards))
    )
    # One sink (Dask runs only the last branch): the plan writer's empty output feeds it too.
    _ = (
        (carried, carried_as_stored, embedded, decode_errors, plan_written)
        | "AllOutcomes" >> beam.Flatten()
        | "Write" >> WriteEmbeddingsAndErrors(shards_dir, shards)
    )


# ------------------------------------------------------------------------------------------
# Launcher side
# ------------------------------------------------------------------------------------------
def _progress(message: str) -> None:
    print(f"beamlens reindex: {message}", file=sys.stderr, flush=True)


def _validate(opts: ReindexOptions, embed: EmbedOptions) -> ImageSource:
    if not opts.output_root:
        raise BeamlensError("--output-root is required (the folder that holds the versions and LATEST)")
    if not embed.model or not embed.model.endswith(".keras"):
        raise BeamlensError(f"--model must be the vision encoder .keras file, got {embed.model!r}")
    if not FileSystems.exists(embed.model):
        raise BeamlensError(f"--model {embed.model}: file not found")
    if not opts.no_searcher and not (opts.text_embedder or opts.image_embedder):
        raise BeamlensError("give --text-embedder and/or --image-embedder (or --no-searcher)")
    for flag, path in (("--text-embedder", opts.text_embedder), ("--image-embedder", opts.image_embedder)):
        if path and not FileSystems.exists(path):
            raise BeamlensError(f"{flag} {path}: file not found")
    if embed.num_shards < 1 or embed.max_batch_size < 1:
        raise BeamlensError("--num-shards and --max-batch-size must be at least 1")
    if embed.images and not embed.captions:
        raise BeamlensError("--images needs --captions (or use --input-glob)")
    if embed.captions and not FileSystems.exists(embed.captions):
        raise BeamlensError(f"--captions {embed.captions}: file not found")
    return ImageSource(captions_file=embed.captions, image_root=embed.images, input_glob=embed.input_glob)


def _read_manifest(shards_dir: str) -> Manifest:
    path = vo.join(shards_dir, MANIFEST_NAME)
    try:
        return Manifest.from_json(vo.read_text(path))
    except (OSError, ValueError, TypeError) as error:
        raise BeamlensError(f"{path}: not a readable manifest ({error})") from None


def _read_plan(plan_dir: str, shards: int) -> PlanCounts:
    total = PlanCounts()
    for shard in range(shards):
        path = vo.join(plan_dir, f"plan-{shard:05d}-of-{shards:05d}.json")
        if not vo.exists(path):
            raise BeamlensError(f"{path} is missing: the runner skipped the plan step; refusing to publish")
        total.merge(PlanCounts.from_dict(json.loads(vo.read_text(path))))
    return total


def _file_fingerprint(path: Optional[str]) -> Optional[str]:
    return model_fingerprint(path) if path else None


def _copy_files(sources: list[str], folder: str) -> list[str]:
    """Copy files (any Beam filesystem) into ``folder`` keeping their base names."""
    FileSystems.mkdirs(folder) if not FileSystems.exists(folder) else None
    targets = [FileSystems.join(folder, src.rstrip("/").rsplit("/", 1)[-1]) for src in sources]
    if sources:
        FileSystems.copy(sources, targets)
    return targets


def _list_files(folder: str) -> list[str]:
    return sorted(m.path for m in FileSystems.match([FileSystems.join(folder, "*")])[0].metadata_list)


def _searchers(opts: ReindexOptions, version_dir: str, previous: Optional[vo.Resolved], previous_report: dict,
               plan: PlanCounts, model_changed: bool, embedders: dict) -> dict:
    """Reuse the previous searchers when nothing in the index would change; else build new ones.

    build-searcher works on local files; for a remote root (gs://) the new shards and the
    embedders are copied to a local scratch folder first and the searchers uploaded afterwards.
    """
    out = vo.join(version_dir, vo.SEARCHERS_DIR)
    if opts.no_searcher:
        return {"action": "skipped (--no-searcher)"}
    same_inputs = (
        previous is not None and previous.searchers_dir is not None and not model_changed
        and not plan.changes_index and previous_report.get("embedders") == embedders
        and previous_report.get("searcher_args") == list(opts.searcher_args)
    )
    if same_inputs:
        _copy_files(_list_files(previous.searchers_dir), out)
        _progress(f"nothing in the index changed: searchers copied from {previous.searchers_dir}")
        return {"action": "reused", "from": previous.searchers_dir}
    from pipelines import build_searcher  # noqa: PLC0415

    shards_dir = vo.join(version_dir, vo.SHARDS_DIR)
    remote = any("://" in p for p in (version_dir, opts.text_embedder or "", opts.image_embedder or ""))
    scratch = tempfile.mkdtemp(prefix="beamlens-reindex-") if remote else None
    try:
        local_out = os.path.join(scratch, vo.SEARCHERS_DIR) if scratch else out
        if scratch and "://" in shards_dir:
            shards_dir = os.path.join(scratch, vo.SHARDS_DIR)
            _copy_files([p for p in _list_files(vo.join(version_dir, vo.SHARDS_DIR))], shards_dir)
        argv = ["--shards", shards_dir, "--out", local_out]
        for flag, path in (("--text-embedder", opts.text_embedder), ("--image-embedder", opts.image_embedder)):
            if path:
                if "://" in path and scratch:
                    path = _copy_files([path], os.path.join(scratch, "embedders"))[0]
                argv += [flag, path]
        argv += list(opts.searcher_args)
        started = time.monotonic()
        summary = build_searcher.run(build_searcher.build_parser().parse_args(argv))
        if local_out != out:
            _copy_files(sorted(os.path.join(local_out, n) for n in os.listdir(local_out)), out)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return {"action": "built", "seconds": round(time.monotonic() - started, 3), "outputs": summary.get("outputs")}


def _auto_buckets(listed: int, batch: int) -> int:
    # ~16 batches per bucket at a full re-embed: enough groups to spread, few enough to fill batches.
    return max(1, min(4096, -(-listed // (batch * 16))))


@dataclasses.dataclass
class PreviousState:
    """What the run builds on: the previous version (if any), its manifest and report."""

    resolved: Optional[vo.Resolved]
    manifest: Optional[Manifest]
    report: dict
    model_changed: bool
    shards: list[str]

    def describe(self) -> str:
        if self.resolved is None:
            return "none"
        return f"{self.resolved.version_dir or self.resolved.shards_dir} ({len(self.shards)} shards)"


def _previous_state(opts: ReindexOptions, fingerprint: str) -> PreviousState:
    previous = vo.resolve_previous(opts.previous or opts.output_root)
    manifest = _read_manifest(previous.shards_dir) if previous else None
    report: dict = {}
    if previous and previous.version_dir and vo.exists(vo.join(previous.version_dir, REPORT_NAME)):
        report = json.loads(vo.read_text(vo.join(previous.version_dir, REPORT_NAME)))
    model_changed = bool(manifest and manifest.model_fingerprint != fingerprint)
    if previous is None:
        _progress(f"no previous output at {opts.previous or opts.output_root}: full build")
        shards: list[str] = []
    elif model_changed:
        _progress(f"the encoder changed ({manifest.model_fingerprint} -> {fingerprint}): re-embedding EVERY image")
        shards = []
    else:
        shards = [vo.join(previous.shards_dir, s) for s in manifest.shards]
    return PreviousState(previous, manifest, report, model_changed, shards)


def removed_from_previous(previous: PreviousState, plan: PlanCounts, records: int) -> int:
    """How many of the previous version's items the new one drops: the deleted ones when the
    previous shards were joined, else (encoder changed) the shrink in record count."""
    if previous.manifest is None:
        return 0
    if previous.shards:
        return plan.get(Action.DELETE)
    return max(0, previous.manifest.count - records)


def check_shrink(opts: ReindexOptions, previous: PreviousState, plan: PlanCounts, records: int) -> None:
    """The shrink guard: refuse to publish a version that drops more than --max-deleted-fraction
    of the previous one (a mis-typed or shell-expanded glob looks exactly like mass deletion)."""
    if previous.manifest is None or previous.manifest.count == 0:
        return
    removed = removed_from_previous(previous, plan, records)
    fraction = removed / previous.manifest.count
    _progress(f"shrink check: {removed} of the previous {previous.manifest.count} items would be dropped "
              f"({fraction:.1%}; limit {opts.max_deleted_fraction:.0%}{', --allow-shrink' if opts.allow_shrink else ''})")
    if fraction > opts.max_deleted_fraction and not opts.allow_shrink:
        raise BeamlensError(
            f"refusing to publish: this re-index would drop {removed} of the previous version's "
            f"{previous.manifest.count} items ({fraction:.1%}), more than --max-deleted-fraction "
            f"{opts.max_deleted_fraction:g}; the input ({opts.output_root}) may be wrong (an unquoted glob, a "
            f"missing mount). If the corpus really shrank, pass --allow-shrink. LATEST was not moved")


@dataclasses.dataclass
class EmbedOutcome:
    """What the Beam part of one run wrote, read back and reconciled."""

    summary: Any  # transforms.write_shards.OutputSummary
    plan: PlanCounts
    beam_seconds: float
    runner: str


def _embed_version(options: PipelineOptions, opts: ReindexOptions, embed: EmbedOptions, source: ImageSource,
                   previous: PreviousState, listed_ids: set[str], fingerprint: str, version_dir: str,
                   test_pipeline: Optional[beam.Pipeline]) -> EmbedOutcome:
    """Run the join/embed graph into ``version_dir``, read back, reconcile, write the manifest."""
    image_size = embed.image_size or model_image_size(embed.model)
    shards_dir, plan_dir = vo.join(version_dir, vo.SHARDS_DIR), vo.join(version_dir, PLAN_DIR)
    prepare_output(shards_dir)
    FileSystems.mkdirs(plan_dir)
    buckets = opts.embed_buckets or _auto_buckets(len(listed_ids), embed.max_batch_size)
    pipeline = test_pipeline if test_pipeline is not None else beam.Pipeline(options=options)
    build_pipeline(pipeline, source, previous.shards, embed, image_size, fingerprint, shards_dir, plan_dir, buckets,
                   trust_stamps=not opts.rehash, max_pixels=embed.max_image_pixels)
    beam_started = time.monotonic()
    pipeline.run().wait_until_finish()
    beam_seconds = time.monotonic() - beam_started
    summary = read_outputs(shards_dir, embed.num_shards, fingerprint)
    reconcile(summary, listed_ids)
    plan = _read_plan(plan_dir, embed.num_shards)
    planned = sum(plan.counts.values()) - plan.get(Action.DELETE)
    if planned != len(listed_ids):
        raise BeamlensError(f"the plan covers {planned} current images but {len(listed_ids)} were listed; refusing to publish")
    runner = str(options.view_as(StandardOptions).runner or "DirectRunner")
    compared = plan.get(Action.CARRY) + plan.get(Action.EMBED_CHANGED)
    _progress(f"plan {plan.to_dict()['counts']}, metadata updated {plan.metadata_updated}; files read to compare "
              f"{plan.hashed} of {compared} in both versions{' (--rehash)' if opts.rehash else ' (others: same size and mtime)'}; "
              f"wrote {len(summary.embedded_ids)} records + {len(summary.error_ids)} errors in {beam_seconds:.1f} s ({runner})")
    check_shrink(opts, previous, plan, len(summary.embedded_ids))
    extra = {"runner": runner, "beam_seconds": round(beam_seconds, 3), "reindex": plan.to_dict()["counts"],
             "previous": previous.resolved.shards_dir if previous.resolved else None, "image_size": image_size,
             "source": source.describe()}
    options_record = {k: v for k, v in embed.get_all_options(drop_default=False).items() if isinstance(v, (str, int, float, bool, type(None)))}
    write_manifest(shards_dir, summary, fingerprint, options_record, extra)
    return EmbedOutcome(summary, plan, beam_seconds, runner)


def _report(version: str, previous: PreviousState, fingerprint: str, outcome: EmbedOutcome, searcher: dict,
            opts: ReindexOptions, embedders: dict, removed: list[str], started: float) -> dict:
    return {
        "version": version,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "previous": (previous.resolved.version_dir or previous.resolved.shards_dir) if previous.resolved else None,
        "model_fingerprint": fingerprint,
        "model_changed": previous.model_changed,
        "full_rebuild_reason": ("model changed" if previous.model_changed
                                else ("no previous output" if previous.resolved is None else None)),
        "plan": outcome.plan.to_dict(),
        "records": len(outcome.summary.embedded_ids),
        "errors": len(outcome.summary.error_ids),
        "removed_from_previous": removed_from_previous(previous, outcome.plan, len(outcome.summary.embedded_ids)),
        "searcher": searcher,
        "searcher_args": list(opts.searcher_args),
        "embedders": embedders,
        "runner": outcome.runner,
        "beam_seconds": round(outcome.beam_seconds, 3),
        "seconds": round(time.monotonic() - started, 3),
        "removed_partial_versions": removed,
    }


def _run_locked(options: PipelineOptions, opts: ReindexOptions, embed: EmbedOptions, source: ImageSource,
                lock: OutputLock, version: str, test_pipeline: Optional[beam.Pipeline],
                before_publish: Optional[Callable[[str], None]], started: float) -> dict:
    """Everything a run writes under the root, done while it holds the root's lock."""
    root = opts.output_root
    removed = vo.clean_partial_versions(root, keep=(version,))
    if removed:
        _progress(f"removed unfinished version folders of dead runs: {', '.join(removed)}")
    fingerprint = model_fingerprint(embed.model)
    previous = _previous_state(opts, fingerprint)
    listed_ids = {ref.image_id for ref in iter_image_refs(source)}
    if not listed_ids:
        raise BeamlensError(f"no images found in {source.describe()}")
    checkpoint("listing")
    version_dir = vo.join(root, version)
    _progress(f"{len(listed_ids)} images in {source.describe()}; previous {previous.describe()}; "
              f"model {fingerprint}; writing {version_dir}")
    outcome = _embed_version(options, opts, embed, source, previous, listed_ids, fingerprint, version_dir, test_pipeline)
    embedders = {"text": _file_fingerprint(opts.text_embedder), "image": _file_fingerprint(opts.image_embedder)}
    searcher = _searchers(opts, version_dir, previous.resolved, previous.report, outcome.plan, previous.model_changed, embedders)
    checkpoint("searcher")
    if before_publish is not None:
        before_publish(version_dir)
    report = _report(version, previous, fingerprint, outcome, searcher, opts, embedders, removed, started)
    lock.ensure_held()
    vo.write_text_atomic(vo.join(version_dir, REPORT_NAME), json.dumps(report, indent=2, sort_keys=True))
    checkpoint("report")
    lock.ensure_held()
    vo.set_latest(root, version)
    checkpoint("latest")
    pruned = vo.prune_old_versions(root, opts.keep_versions)
    plan = outcome.plan
    _progress(f"published {version} (LATEST); embedded {plan.embedded}, carried {plan.get(Action.CARRY)}, "
              f"deleted {plan.get(Action.DELETE)}; searcher {searcher['action']}; pruned {pruned or 'nothing'}; "
              f"{report['seconds']:.1f} s")
    return report


def run(argv: Sequence[str] | None = None, save_main_session: bool = True, test_pipeline: beam.Pipeline | None = None,
        before_publish: Optional[Callable[[str], None]] = None) -> dict:
    """Run one re-index under the root's lock; returns the report (also <version>/reindex_report.json)."""
    started = time.monotonic()
    options = parse_pipeline_options(argv, "reindex")
    options.view_as(SetupOptions).save_main_session = save_main_session
    opts = options.view_as(ReindexOptions)
    embed = options.view_as(EmbedOptions)
    source = _validate(opts, embed)
    root = opts.output_root
    FileSystems.mkdirs(root) if not FileSystems.exists(root) else None
    existing = vo.list_versions(root)
    version = vo.new_version_name(after=existing[-1] if existing else None)
    with OutputLock(root, version, "beamlens reindex", opts.lock_ttl, announce=_progress) as lock:
        return _run_locked(options, opts, embed, source, lock, version, test_pipeline, before_publish, started)


def main(argv: Sequence[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        parser = argparse.ArgumentParser(prog="beamlens reindex", description=__doc__.split("\n\n")[0])
        EmbedOptions._add_argparse_args(parser)
        ReindexOptions._add_argparse_args(parser)
        parser.epilog = "All standard Apache Beam options (--runner, Dataflow, Flink, --dask_client_address ...) pass through."
        parser.print_help()
        return 0
    run(argv)
    return 0
