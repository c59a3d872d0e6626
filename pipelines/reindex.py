"""``beamlens reindex``: embed only new or changed images, carry the rest over, publish a new version.

    beamlens reindex --output-root build/index --captions data/annotations/captions_val2017.json \\
        --images data/val2017 --model build/vision_encoder.keras \\
        --text-embedder build/text_embedder.tflite [--image-embedder build/image_embedder.tflite] \\
        [--previous build/index]  [--runner ... any Beam option]

Layout written (see models/shards/versions.py)::

    ROOT/_LOCK                                   held for the whole run (models/shards/lock.py)
    ROOT/v-YYYYmmdd-HHMMSS-ffffff-xxxx/shards/   embeddings-*.tfrecord, errors-*.jsonl, manifest.json
    ROOT/v-.../plan/plan-*.json                  per-shard counts of carried/new/changed/deleted ids
    ROOT/v-.../searchers/                        text_searcher.tflite, image_searcher.tflite, report
    ROOT/v-.../reindex_report.json               written last: the version's completion marker
    ROOT/LATEST                                  moved atomically after the marker exists

The run, under the root's lock: clean up dead runs' folders -> load the previous version -> list
the corpus -> the re-index graph (transforms/reindex.py) -> read back and reconcile -> the shrink
guard -> manifest -> searchers (reused, or ``models.searcher.build``) -> report -> LATEST.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from typing import Callable, Optional, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions

from models.progress import progress_printer
from models.encoders.inputs import model_input_size
from models.errors import BeamlensError
from models.faults import checkpoint
from models.io import files
from models.io.fingerprint import model_fingerprint
from models.searcher.build import build_searchers_anywhere
from models.shards import versions as vo
from models.shards.lock import OutputLock
from pipelines.index_options import index_arguments_parser, searcher_request
from pipelines.options import EmbedOptions, ReindexOptions, options_help, parse_options, resolved_resize, validate_reindex
from transforms.decode import preprocess_for
from transforms.read_images import ImageSource, iter_image_refs
from transforms.reindex import GraphOutcome, ReindexGraph, auto_buckets, run_reindex_graph
from transforms.reindex_plan import Action, ShrinkGuard, removed_from_previous
from transforms.write_shards import write_manifest

PLAN_DIR = "plan"
REPORT_NAME = vo.COMPLETE_MARKER


_progress = progress_printer("beamlens reindex:")


def _runner(options: PipelineOptions) -> str:
    return str(options.view_as(StandardOptions).runner or "DirectRunner")


def _graph(opts: ReindexOptions, embed: EmbedOptions, source: ImageSource, previous: vo.PreviousVersion,
           fingerprint: str, version_dir: str, listed: int) -> ReindexGraph:
    return ReindexGraph(
        source=source, previous_shards=previous.shards, model=embed.model, fingerprint=fingerprint,
        image_size=model_input_size(embed.model, embed.image_size), shards_dir=files.join(version_dir, vo.SHARDS_DIR),
        plan_dir=files.join(version_dir, PLAN_DIR), num_shards=embed.num_shards, max_batch_size=embed.max_batch_size,
        buckets=opts.embed_buckets or auto_buckets(listed, embed.max_batch_size), trust_stamps=not opts.rehash,
        preprocess=preprocess_for(resolved_resize(embed)), max_pixels=embed.max_image_pixels)


def _searchers(opts: ReindexOptions, version_dir: str, previous: vo.PreviousVersion, changes_index: bool,
               embedders: dict) -> dict:
    """Reuse the previous searchers when nothing in the index would change; else build new ones."""
    out = files.join(version_dir, vo.SEARCHERS_DIR)
    if opts.no_searcher:
        return {"action": "skipped (--no-searcher)"}
    resolved = previous.resolved
    if (resolved is not None and resolved.searchers_dir is not None and not previous.model_changed and not changes_index
            and previous.report.get("embedders") == embedders
            and previous.report.get("searcher_args") == list(opts.searcher_args)):
        files.copy_into(files.list_folder(resolved.searchers_dir), out)
        _progress(f"nothing in the index changed: searchers copied from {resolved.searchers_dir}")
        return {"action": "reused", "from": resolved.searchers_dir}
    args = index_arguments_parser("reindex").parse_args(list(opts.searcher_args))
    request = searcher_request(args, [files.join(version_dir, vo.SHARDS_DIR)], out, opts.text_embedder, opts.image_embedder)
    started = time.monotonic()
    summary = build_searchers_anywhere(request)
    return {"action": "built", "seconds": round(time.monotonic() - started, 3), "outputs": summary.get("outputs")}


def _report(version: str, previous: vo.PreviousVersion, fingerprint: str, outcome: GraphOutcome, searcher: dict,
            opts: ReindexOptions, embedders: dict, removed: list[str], runner: str, started: float) -> dict:
    records = len(outcome.summary.embedded_ids)
    return {
        "version": version, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "previous": (previous.resolved.version_dir or previous.resolved.shards_dir) if previous.resolved else None,
        "model_fingerprint": fingerprint, "model_changed": previous.model_changed,
        "full_rebuild_reason": ("model changed" if previous.model_changed
                                else ("no previous output" if previous.resolved is None else None)),
        "plan": outcome.plan.to_dict(), "records": records, "errors": len(outcome.summary.error_ids),
        "removed_from_previous": removed_from_previous(previous.count, bool(previous.shards), outcome.plan, records),
        "searcher": searcher, "searcher_args": list(opts.searcher_args), "embedders": embedders, "runner": runner,
        "beam_seconds": round(outcome.beam_seconds, 3), "seconds": round(time.monotonic() - started, 3),
        "removed_partial_versions": removed,
    }


def _embed_and_check(options: PipelineOptions, opts: ReindexOptions, embed: EmbedOptions, source: ImageSource,
                     previous: vo.PreviousVersion, fingerprint: str, version_dir: str,
                     test_pipeline: Optional[beam.Pipeline]) -> GraphOutcome:
    """List, run the graph, reconcile, apply the shrink guard, write the manifest."""
    listed_ids = {ref.image_id for ref in iter_image_refs(source)}
    if not listed_ids:
        raise BeamlensError(f"no images found in {source.describe()}")
    checkpoint("listing")
    _progress(f"{len(listed_ids)} images in {source.describe()}; previous {previous.describe()}; "
              f"model {fingerprint}; writing {version_dir}")
    graph = _graph(opts, embed, source, previous, fingerprint, version_dir, len(listed_ids))
    pipeline = test_pipeline if test_pipeline is not None else beam.Pipeline(options=options)
    outcome = run_reindex_graph(pipeline, graph, listed_ids)
    plan, summary = outcome.plan, outcome.summary
    compared = plan.get(Action.CARRY) + plan.get(Action.EMBED_CHANGED)
    _progress(f"plan {plan.to_dict()['counts']}, metadata updated {plan.metadata_updated}; files read to compare "
              f"{plan.hashed} of {compared} in both versions{' (--rehash)' if opts.rehash else ' (others: same size and mtime)'}; "
              f"wrote {len(summary.embedded_ids)} records + {len(summary.error_ids)} errors in {outcome.beam_seconds:.1f} s")
    if previous.count:
        removed = removed_from_previous(previous.count, bool(previous.shards), plan, len(summary.embedded_ids))
        guard = ShrinkGuard(opts.max_deleted_fraction, opts.allow_shrink)
        _progress(guard.describe(removed, previous.count))
        guard.enforce(removed, previous.count)
    extra = {"beam_seconds": round(outcome.beam_seconds, 3), "reindex": plan.to_dict()["counts"],
             "previous": previous.resolved.shards_dir if previous.resolved else None, "image_size": graph.image_size,
             "source": source.describe(), "runner": _runner(options)}
    options_record = {k: v for k, v in embed.get_all_options(drop_default=False).items() if isinstance(v, (str, int, float, bool, type(None)))}
    write_manifest(graph.shards_dir, summary, fingerprint, options_record, extra)
    return outcome


def _run_locked(options: PipelineOptions, source: ImageSource, lock: OutputLock, version: str,
                test_pipeline: Optional[beam.Pipeline], before_publish: Optional[Callable[[str], None]], started: float) -> dict:
    """Everything a run writes under the root, done while it holds the root's lock."""
    opts, embed = options.view_as(ReindexOptions), options.view_as(EmbedOptions)
    root = opts.output_root
    removed = vo.clean_partial_versions(root, keep=(version,))
    if removed:
        _progress(f"removed unfinished version folders of dead runs: {', '.join(removed)}")
    fingerprint = model_fingerprint(embed.model)
    previous = vo.load_previous(opts.previous or root, fingerprint)
    if previous.resolved is None:
        _progress(f"no previous output at {opts.previous or root}: full build")
    elif previous.model_changed:
        _progress(f"the encoder changed ({previous.manifest.model_fingerprint} -> {fingerprint}): re-embedding EVERY image")
    version_dir = files.join(root, version)
    outcome = _embed_and_check(options, opts, embed, source, previous, fingerprint, version_dir, test_pipeline)
    embedders = {"text": model_fingerprint(opts.text_embedder) if opts.text_embedder else None,
                 "image": model_fingerprint(opts.image_embedder) if opts.image_embedder else None}
    searcher = _searchers(opts, version_dir, previous, outcome.plan.changes_index, embedders)
    checkpoint("searcher")
    if before_publish is not None:
        before_publish(version_dir)
    report = _report(version, previous, fingerprint, outcome, searcher, opts, embedders, removed, _runner(options), started)
    lock.ensure_held()
    files.write_atomic(files.join(version_dir, REPORT_NAME), json.dumps(report, indent=2, sort_keys=True))
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
    options = parse_options(argv, "reindex")
    options.view_as(SetupOptions).save_main_session = save_main_session
    opts = options.view_as(ReindexOptions)
    source = validate_reindex(opts, options.view_as(EmbedOptions))
    files.mkdirs(opts.output_root)
    existing = vo.list_versions(opts.output_root)
    version = vo.new_version_name(after=existing[-1] if existing else None)
    with OutputLock(opts.output_root, version, "beamlens reindex", opts.lock_ttl, announce=_progress) as lock:
        return _run_locked(options, source, lock, version, test_pipeline, before_publish, started)


def main(argv: Sequence[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        options_help("reindex", __doc__.split("\n\n")[0], with_reindex=True).print_help()
        return 0
    run(argv)
    return 0
