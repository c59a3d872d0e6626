"""The accounting every job that writes shards (``embed`` and ``reindex``) shares, in one place.

Before the run: a source that lists nothing is refused (:func:`require_images`), the Beam options
and runner name of a request. After it (the one post-run path): run the pipeline to the end, read
the shard writers' summaries and hold them to what was listed inside the pipeline: every listed
image embedded or failed exactly once, nothing else (:func:`write_shards.reconcile`). Nothing here
holds or reads per-image data: the launcher's work is O(shards), whatever the corpus size. Only a
run that passes gets a manifest, which its caller writes with :func:`options_record` as the
options it records. One path, so the two jobs cannot drift apart in what they guarantee.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Optional

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult

from beamlens.models.errors import BeamlensError
from beamlens.transforms.listing import has_images
from beamlens.transforms.read_images import METRICS_NAMESPACE, ImageSource
from beamlens.transforms.write_shards import OutputSummary, read_outputs, reconcile

SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class FinishedRun:
    """A run that reconciled: what it wrote, how long Beam took, Beam's counters (None on Dask)."""

    summary: OutputSummary
    seconds: float
    counters: Optional[dict[str, int]]


def require_images(source: ImageSource) -> None:
    """A clear error before any work when a glob matches nothing, from its first match only: the
    listing itself runs inside the pipeline (ListImages), never in this process. An empty COCO
    file is found by the run (:func:`write_shards.reconcile`: nothing listed, no manifest)."""
    if not has_images(source):
        raise BeamlensError(f"no images found in {source.describe()}")


def pipeline_options_of(request: Any) -> PipelineOptions:
    """The request's Beam options, or Beam's defaults (the DirectRunner) when it gave none;
    refused when they would split a Dask job into partitions (:func:`refuse_dask_partitions`)."""
    options = request.pipeline_options if request.pipeline_options is not None else PipelineOptions([])
    refuse_dask_partitions(options)
    return options


def refuse_dask_partitions(options: PipelineOptions) -> None:
    """``--dask_npartitions`` above 1 on the DaskRunner is an error, before any work.

    Beam 2.77's DaskRunner runs elements again and again once a collection has more than one
    partition (``benchmarks/dask_partitions.py``, 2-worker LocalCluster: 32 elements made in 4
    partitions ran 80 times, 735 after one GroupByKey, 8,295 and 8,885 after two in two runs; in
    one partition, 32). Our jobs start from one element, so Dask keeps them in one partition, on
    one worker at a time; asking for more partitions would only multiply the work (the shard
    writers drop the copies).
    """
    if "DaskRunner" not in runner_name(options):
        return
    try:
        from apache_beam.runners.dask.dask_runner import DaskOptions  # noqa: PLC0415  (needs dask)
    except ImportError:  # Beam reports the missing dask itself, when it runs
        return
    asked = options.view_as(DaskOptions).npartitions
    if asked and asked > 1:
        raise BeamlensError(f"--dask_npartitions {asked}: Beam 2.77's DaskRunner runs elements more than once when a "
                            "collection has more than one partition (32 elements in 4 partitions ran 80 times, 735 "
                            "after a GroupByKey: benchmarks/dask_partitions.py); leave it unset (one partition)")


def runner_name(options: PipelineOptions) -> str:
    return str(options.view_as(StandardOptions).runner or "DirectRunner")


def option_values(request_type: Any, options: PipelineOptions) -> dict[str, Any]:
    """The fields of ``request_type`` that parsed Beam options hold a value for (our registered flags)."""
    parsed = options.get_all_options(drop_default=False)
    return {f.name: parsed[f.name] for f in fields(request_type) if f.name in parsed and f.name != "pipeline_options"}


def _counters(result: PipelineResult) -> Optional[dict[str, int]]:
    """Beam metric counters, or None where the runner has none (DaskRunner)."""
    try:
        query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    except (NotImplementedError, AttributeError):
        return None
    totals: dict[str, int] = {}
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + int(value or 0)
    return totals


def run_to_end(pipeline: beam.Pipeline) -> tuple[PipelineResult, float]:
    """Run and wait; the DaskRunner's distributed.Client, which it leaves open, is closed."""
    started = time.monotonic()
    result = pipeline.run()
    try:
        result.wait_until_finish()
    finally:
        client = getattr(result, "client", None)
        if client is not None:
            client.close()
    return result, time.monotonic() - started


def run_and_reconcile(pipeline: beam.Pipeline, output_dir: str, num_shards: int, fingerprint: str) -> FinishedRun:
    """Run the pipeline, read the shard writers' summaries back and reconcile them
    (``CountMismatchError`` when an id is unaccounted for: the caller then writes no manifest)."""
    result, seconds = run_to_end(pipeline)
    summary = read_outputs(output_dir, num_shards, fingerprint)
    reconcile(summary)
    return FinishedRun(summary, seconds, _counters(result))


def options_record(request: Any, options: PipelineOptions) -> dict[str, Any]:
    """The options a manifest records: Beam's scalar options overlaid with the request's fields."""
    record = {k: v for k, v in options.get_all_options(drop_default=False).items() if isinstance(v, SCALARS)}
    if is_dataclass(request):
        values = {f.name: getattr(request, f.name) for f in fields(request)}  # not asdict: no deep copies
        record.update({k: v for k, v in values.items() if isinstance(v, SCALARS)})
    return record
