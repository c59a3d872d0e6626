"""How often Beam 2.77's DaskRunner runs each element when a collection has several partitions.

    .venv/bin/python -m benchmarks.dask_partitions

A 2-worker ``distributed.LocalCluster`` (threads, as the test suite's) runs
``Create(4) -> FlatMap(8 each) -> [GroupByKey]* -> note`` where ``note`` writes one file per call:
32 elements, counted after zero, one and two GroupByKeys, with ``--dask_npartitions`` unset (the
Create's 4 elements in one partition) and 4. beamlens refuses ``--dask_npartitions`` above 1
(transforms/run_accounting.refuse_dask_partitions) because of what this prints.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"


def _note(item: object, folder: str) -> None:
    with open(os.path.join(folder, f"{time.time_ns()}-{threading.get_ident()}.seen"), "w") as out:
        out.write(str(item))


def _regroup(collection, stage: int):
    import apache_beam as beam  # noqa: PLC0415

    return (collection | f"Key{stage}" >> beam.Map(lambda value, m: (value % m, value), 5 - stage)
            | f"Group{stage}" >> beam.GroupByKey() | f"Ungroup{stage}" >> beam.FlatMap(lambda keyed: keyed[1]))


def count_runs(address: str, npartitions: int | None, groupings: int) -> int:
    """How many times ``note`` ran for the 32 elements."""
    import apache_beam as beam  # noqa: PLC0415
    from apache_beam.options.pipeline_options import PipelineOptions  # noqa: PLC0415

    seen = Path(tempfile.mkdtemp(prefix="beamlens-dask-"))
    args = ["--runner", DASK_RUNNER, "--dask_client_address", address]
    if npartitions:
        args += ["--dask_npartitions", str(npartitions)]
    pipeline = beam.Pipeline(options=PipelineOptions(args))
    elements = pipeline | beam.Create(list(range(4))) | beam.FlatMap(lambda start: [start * 100 + n for n in range(8)])
    for stage in range(groupings):
        elements = _regroup(elements, stage)
    _ = elements | beam.Map(_note, str(seen))
    pipeline.run().wait_until_finish()
    return sum(1 for _ in seen.glob("*.seen"))


def main() -> int:
    import distributed  # noqa: PLC0415

    print("| --dask_npartitions | GroupByKeys | runs of the last step for 32 elements |")
    print("|---|---|---|")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        for npartitions in (None, 4):
            for groupings in (0, 1, 2):
                runs = count_runs(cluster.scheduler_address, npartitions, groupings)
                print(f"| {npartitions or 'unset (1 partition)'} | {groupings} | {runs:,} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
