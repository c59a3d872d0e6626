"""The re-index job as a library call: ``reindex(ReindexRequest(...)) -> ReindexResult``.

Embed only new or changed images, carry the rest over, build the searchers, publish a version.
``beamlens reindex`` is this call behind a parser, and ``beamlens.reindex`` is this call.

Layout written (see models/shards/versions.py)::

    ROOT/_LOCK                                   held for the whole run (models/shards/lock.py)
    ROOT/v-YYYYmmdd-HHMMSS-ffffff-xxxx/shards/   embeddings-*.tfrecord, errors-*.jsonl, manifest.json
    ROOT/v-.../plan/plan-*.json                  per-shard counts of carried/new/changed/deleted ids
    ROOT/v-.../searchers/                        text_searcher.tflite, image_searcher.tflite, report
    ROOT/v-.../reindex_report.json               written last: the version's completion marker
    ROOT/LATEST                                  moved atomically after the marker exists

The run, under the root's lock: clean up dead runs' folders -> load the previous version -> list
the corpus (inside the graph) -> the re-index graph (transforms/reindex.py) -> the shard summaries reconciled
(transforms/run_accounting.py, as ``embed``) -> the shrink guard -> manifest -> searchers (reused,
or ``models.searcher.build``) -> report -> LATEST.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beamlens.models.encoders.inputs import model_input_size
from beamlens.models.encoders.preprocessing import DEFAULT_MAX_IMAGE_PIXELS
from beamlens.models.errors import BeamlensError
from beamlens.models.faults import checkpoint
from beamlens.models.io import files
from beamlens.models.io.fingerprint import model_fingerprint
from beamlens.models.progress import progress_printer
from beamlens.models.searcher.build import SearcherRequest, build_searchers_anywhere
from beamlens.models.shards import versions as vo
from beamlens.models.shards.lock import DEFAULT_TTL_SECONDS, OutputLock
from beamlens.transforms.decode import preprocess_for
from beamlens.transforms.embed_job import DEFAULT_MAX_BATCH_SIZE, DEFAULT_NUM_SHARDS, EmbedRequest, validate_request
from beamlens.transforms.read_images import ImageSource
from beamlens.transforms.reindex import GraphOutcome, ReindexGraph, auto_buckets, corpus_size_for_buckets, run_reindex_graph
from beamlens.transforms.reindex_plan import Action, ShrinkGuard, removed_from_previous
from beamlens.transforms.run_accounting import options_record, pipeline_options_of, require_images, runner_name
from beamlens.transforms.write_shards import write_manifest

PLAN_DIR = "plan"
REPORT_NAME = vo.COMPLETE_MARKER
DEFAULT_MAX_DELETED_FRACTION = 0.10

_progress = progress_printer("beamlens reindex:")


@dataclass(frozen=True)
class ReindexRequest:
    """The corpus and encoder (as :class:`EmbedRequest`'s), the versioned root, and the searchers.

    ``searcher``: the index options of the searcher build (a :class:`SearcherRequest` whose
    shards, output and embedders this job fills in); None: the builder's automatic defaults.
    """

    output_root: str
    model: str
    captions: Optional[str] = None
    images: Optional[str] = None
    input_glob: Optional[str] = None
    input_list: Optional[str] = None
    text_embedder: Optional[str] = None
    image_embedder: Optional[str] = None
    previous: Optional[str] = None  # default: output_root (follows LATEST)
    no_searcher: bool = False
    searcher: Optional[SearcherRequest] = None
    num_shards: int = DEFAULT_NUM_SHARDS
    image_size: int = 0
    resize: str = "auto"
    engine: str = "auto"  # as EmbedRequest.engine
    min_batch_size: int = 1
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    embed_buckets: int = 0  # 0: from the corpus size
    keep_versions: int = 3  # 0 keeps all
    rehash: bool = False
    allow_shrink: bool = False
    max_deleted_fraction: float = DEFAULT_MAX_DELETED_FRACTION
    lock_ttl: float = DEFAULT_TTL_SECONDS
    pipeline_options: Optional[PipelineOptions] = field(default=None, compare=False)

    def embed_request(self, output: str = "") -> EmbedRequest:
        """The corpus/encoder half, as the embed job's request (one set of checks for both jobs)."""
        shared = {f.name: getattr(self, f.name) for f in fields(EmbedRequest) if hasattr(self, f.name)}
        return EmbedRequest(**{**shared, "output": output})

    def index_options(self) -> SearcherRequest:
        return self.searcher if self.searcher is not None else SearcherRequest(shards=(), out="")


@dataclass(frozen=True)
class ReindexResult:
    """The published version; ``report`` is ``<version>/reindex_report.json``."""

    version: str
    version_dir: str
    records: int
    errors: int
    plan: dict[str, Any]
    searcher: dict[str, Any]
    report: dict[str, Any]


def validate(request: ReindexRequest) -> ImageSource:
    """``reindex``'s own checks on top of the embed job's; returns where the images come from."""
    if not request.output_root:
        raise BeamlensError("--output-root is required (the folder that holds the versions and LATEST)")
    if not request.no_searcher and not (request.text_embedder or request.image_embedder):
        raise BeamlensError("give --text-embedder and/or --image-embedder (or --no-searcher)")
    for flag, path in (("--text-embedder", request.text_embedder), ("--image-embedder", request.image_embedder)):
        if path:
            files.require_file(path, flag)
    if not 0 <= request.max_deleted_fraction <= 1:
        raise BeamlensError(f"--max-deleted-fraction must be between 0 and 1, got {request.max_deleted_fraction}")
    return validate_request(request.embed_request(), needs_output=False)


def _graph(request: ReindexRequest, source: ImageSource, previous: vo.PreviousVersion, fingerprint: str,
           version_dir: str) -> ReindexGraph:
    image_size, encoder = model_input_size(request.model, request.image_size), request.embed_request()
    return ReindexGraph(
        source=source, previous_shards=previous.shards, model=encoder.inference_model(image_size),
        fingerprint=fingerprint, image_size=image_size, shards_dir=files.join(version_dir, vo.SHARDS_DIR),
        plan_dir=files.join(version_dir, PLAN_DIR), num_shards=request.num_shards, max_batch_size=request.max_batch_size,
        buckets=request.embed_buckets or auto_buckets(
            corpus_size_for_buckets(source, request.max_batch_size, previous.count), request.max_batch_size), trust_stamps=not request.rehash,
        preprocess=preprocess_for(encoder.resolved_resize()), max_pixels=request.max_image_pixels)


def _searchers(request: ReindexRequest, version_dir: str, previous: vo.PreviousVersion, changes_index: bool,
               embedders: dict) -> dict:
    """Reuse the previous searchers when nothing in the index would change; else build new ones."""
    out = files.join(version_dir, vo.SEARCHERS_DIR)
    if request.no_searcher:
        return {"action": "skipped (--no-searcher)"}
    index = request.index_options()
    resolved = previous.resolved
    if (resolved is not None and resolved.searchers_dir is not None and not previous.model_changed and not changes_index
            and previous.report.get("embedders") == embedders
            and previous.report.get("searcher_options") == index.index_record()):
        files.copy_into(files.list_folder(resolved.searchers_dir), out)
        _progress(f"nothing in the index changed: searchers copied from {resolved.searchers_dir}")
        return {"action": "reused", "from": resolved.searchers_dir}
    build = replace(index, shards=[files.join(version_dir, vo.SHARDS_DIR)], out=out,
                    text_embedder=request.text_embedder, image_embedder=request.image_embedder)
    started = time.monotonic()
    summary = build_searchers_anywhere(build)
    return {"action": "built", "seconds": round(time.monotonic() - started, 3), "outputs": summary.get("outputs")}


def _report(version: str, previous: vo.PreviousVersion, fingerprint: str, outcome: GraphOutcome, searcher: dict,
            request: ReindexRequest, embedders: dict, removed: list[str], runner: str, started: float) -> dict:
    records = outcome.summary.embedded
    return {
        "version": version, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "previous": (previous.resolved.version_dir or previous.resolved.shards_dir) if previous.resolved else None,
        "model_fingerprint": fingerprint, "model_changed": previous.model_changed,
        "full_rebuild_reason": ("model changed" if previous.model_changed
                                else ("no previous output" if previous.resolved is None else None)),
        "plan": outcome.plan.to_dict(), "records": records, "errors": outcome.summary.failed,
        "removed_from_previous": removed_from_previous(previous.count, bool(previous.shards), outcome.plan, records),
        "searcher": searcher, "searcher_options": request.index_options().index_record(), "embedders": embedders,
        "runner": runner, "beam_seconds": round(outcome.beam_seconds, 3), "seconds": round(time.monotonic() - started, 3),
        "removed_partial_versions": removed,
    }


def _embed_and_check(request: ReindexRequest, options: PipelineOptions, source: ImageSource, previous: vo.PreviousVersion,
                     fingerprint: str, version_dir: str, pipeline: Optional[beam.Pipeline]) -> GraphOutcome:
    """List, run the graph, reconcile, apply the shrink guard, write the manifest."""
    require_images(source)
    _progress(f"{source.describe()} (listed inside the pipeline); previous {previous.describe()}; "
              f"model {fingerprint}; writing {version_dir}")
    graph = _graph(request, source, previous, fingerprint, version_dir)
    outcome = run_reindex_graph(pipeline if pipeline is not None else beam.Pipeline(options=options), graph)
    plan, summary = outcome.plan, outcome.summary
    compared = plan.get(Action.CARRY) + plan.get(Action.EMBED_CHANGED)
    _progress(f"plan {plan.to_dict()['counts']}, metadata updated {plan.metadata_updated}; files read to compare "
              f"{plan.hashed} of {compared} in both versions{' (--rehash)' if request.rehash else ' (others: same size and mtime)'}; "
              f"listed {summary.listed}, wrote {summary.embedded} records + {summary.failed} errors in {outcome.beam_seconds:.1f} s")
    if previous.count:
        removed = removed_from_previous(previous.count, bool(previous.shards), plan, summary.embedded)
        guard = ShrinkGuard(request.max_deleted_fraction, request.allow_shrink)
        _progress(guard.describe(removed, previous.count))
        guard.enforce(removed, previous.count)
    extra = {"beam_seconds": round(outcome.beam_seconds, 3), "reindex": plan.to_dict()["counts"],
             "previous": previous.resolved.shards_dir if previous.resolved else None, "image_size": graph.image_size,
             "source": source.describe(), "runner": runner_name(options)}
    write_manifest(graph.shards_dir, summary, fingerprint, options_record(request.embed_request(graph.shards_dir), options), extra)
    return outcome


def _publish(request: ReindexRequest, lock: OutputLock, version: str, report: dict) -> list[str]:
    """The completion marker, then LATEST, each only while the lock is still ours; then pruning."""
    lock.ensure_held()
    files.write_atomic(files.join(request.output_root, version, REPORT_NAME), json.dumps(report, indent=2, sort_keys=True))
    checkpoint("report")
    lock.ensure_held()
    vo.set_latest(request.output_root, version)
    checkpoint("latest")
    return vo.prune_old_versions(request.output_root, request.keep_versions)


def _run_locked(request: ReindexRequest, options: PipelineOptions, source: ImageSource, lock: OutputLock, version: str,
                pipeline: Optional[beam.Pipeline], before_publish: Optional[Callable[[str], None]], started: float) -> ReindexResult:
    """Everything a run writes under the root, done while it holds the root's lock."""
    root = request.output_root
    removed = vo.clean_partial_versions(root, keep=(version,))
    if removed:
        _progress(f"removed unfinished version folders of dead runs: {', '.join(removed)}")
    fingerprint = model_fingerprint(request.model)
    previous = vo.load_previous(request.previous or root, fingerprint)
    if previous.resolved is None:
        _progress(f"no previous output at {request.previous or root}: full build")
    elif previous.model_changed:
        _progress(f"the encoder changed ({previous.manifest.model_fingerprint} -> {fingerprint}): re-embedding EVERY image")
    version_dir = files.join(root, version)
    outcome = _embed_and_check(request, options, source, previous, fingerprint, version_dir, pipeline)
    embedders = {"text": model_fingerprint(request.text_embedder) if request.text_embedder else None,
                 "image": model_fingerprint(request.image_embedder) if request.image_embedder else None}
    searcher = _searchers(request, version_dir, previous, outcome.plan.changes_index, embedders)
    checkpoint("searcher")
    if before_publish is not None:
        before_publish(version_dir)
    report = _report(version, previous, fingerprint, outcome, searcher, request, embedders, removed, runner_name(options), started)
    pruned = _publish(request, lock, version, report)
    plan = outcome.plan
    _progress(f"published {version} (LATEST); embedded {plan.embedded}, carried {plan.get(Action.CARRY)}, "
              f"deleted {plan.get(Action.DELETE)}; searcher {searcher['action']}; pruned {pruned or 'nothing'}; "
              f"{report['seconds']:.1f} s")
    return ReindexResult(version, version_dir, report["records"], report["errors"], report["plan"], searcher, report)


def reindex(request: ReindexRequest, *, pipeline: Optional[beam.Pipeline] = None,
            before_publish: Optional[Callable[[str], None]] = None) -> ReindexResult:
    """Run one re-index under the root's lock and publish it (LATEST), or raise and publish nothing.

    ``pipeline``: build into this one (a ``TestPipeline``); ``before_publish(version_dir)``: a hook
    called after the searchers, before the marker and LATEST (fault-injection tests use it).
    """
    started = time.monotonic()
    source = validate(request)
    options = pipeline_options_of(request)
    files.mkdirs(request.output_root)
    existing = vo.list_versions(request.output_root)
    version = vo.new_version_name(after=existing[-1] if existing else None)
    with OutputLock(request.output_root, version, "beamlens reindex", request.lock_ttl, announce=_progress) as lock:
        return _run_locked(request, options, source, lock, version, pipeline, before_publish, started)
