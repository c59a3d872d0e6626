"""Run one index build in a process of its own, so its wall time and peak RSS are its own.

    build({"npy": ..., "meta": ..., "out": ...})                         # the builder's own choices
    build({..., "tuning": "queries.npy"})                                 # tuned on those text queries
    build({..., "score": "ah", "num_leaves": 1000, "leaves": 16, "lookup": "int16"})  # fixed options

Shared by the searcher benchmarks (searcher_benchmark, million_on_device, streamed_build): the
child prints one JSON line ``{"seconds", "peak_rss_mb", "report"}``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run by path too, not only with -m


def _options(spec: dict):
    from beamlens.models.searcher import options as o  # noqa: PLC0415

    if spec.get("score") == "ah":
        return o.ScaNNOptions("dot_product", o.Tree(spec["num_leaves"], spec["leaves"]),
                              score_ah=o.ScoreAH(1, 0.2, lookup_type=spec.get("lookup", "int8")))
    if spec.get("score") == "brute_force":
        return o.ScaNNOptions("dot_product", o.Tree(spec["num_leaves"], spec["leaves"]),
                              score_brute_force=o.ScoreBruteForce())
    return None


def _tuning(spec: dict):
    if not spec.get("tuning"):
        return None
    import numpy as np  # noqa: PLC0415

    from beamlens.models.searcher.tuning_queries import TuningQueries  # noqa: PLC0415

    count = int(np.load(spec["tuning"], mmap_mode="r").shape[0])
    return TuningQueries(spec["tuning"], count, spec.get("tuning_description", f"text queries: {count} captions"))


def peak_rss_mb() -> float:
    """This process's own peak RSS: VmHWM of its memory map. Not ``ru_maxrss``: Linux carries the
    parent's high-water mark into a child started by vfork + exec (Python's subprocess does), so
    a parent holding 5 GB made every child report at least 5 GB."""
    with open("/proc/self/status", encoding="ascii") as stream:
        for line in stream:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(spec: dict) -> None:
    from beamlens.models import compat  # noqa: PLC0415

    compat.prepare_tflite_process()
    from beamlens.models.searcher.scann_build import build_index  # noqa: PLC0415

    started = time.perf_counter()
    _, report = build_index(spec["npy"], spec["meta"], _options(spec), spec["out"], userinfo="benchmark",
                            tuning=_tuning(spec))
    print(json.dumps({"seconds": time.perf_counter() - started,
                      "peak_rss_mb": peak_rss_mb(),
                      "report": report.to_dict()}))


def build(spec: dict, show_progress: bool = False) -> dict:
    """Build in a child process; its progress lines go to stderr when asked."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.child_build", json.dumps(spec)],
                          capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if show_progress:
        sys.stderr.write("".join(line + "\n" for line in proc.stderr.splitlines() if line.startswith("[build-searcher]")))
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    run_child(json.loads(sys.argv[1]))
