"""The launcher's peak memory as the corpus grows, with the pipeline run by another process.

    .venv/bin/python -m benchmarks.launcher_memory [--sizes 10000 1000000]

On Dataflow or Flink the process that calls ``embed`` (the launcher) builds the graph, submits
it, waits, and checks the outcome; the service and its workers run it. Here the launcher is a
child process calling ``embed`` with a runner that does just that: it translates the pipeline to
its portable form (the proto a job service receives), hands it to a separate "service" process
that executes it with Beam's FnApiRunner, and waits. The launcher's own peak RSS is its kernel
high-water mark (``VmHWM``), which the service's memory does not touch. Under DirectRunner the
launcher would *be* the runner and hold the shuffle, which says nothing about its own work; the
DaskRunner here runs the single listing element's whole output in one partition (one Dask worker
passed 10 GB within 15 minutes of a 1M tiny-file run on this 24 GB machine, and was stopped).

The corpus is N copies of one 8x8 PNG under distinct names and the encoder is the cheapest
possible (mean colour -> 8-d unit vector): this measures the launcher, not the model. Issue 27's
target: peak RSS flat (+-10%) from 10,000 to 1,000,000 listed files.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.runner import PipelineResult, PipelineState

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))



@dataclass(frozen=True)
class LauncherRun:
    """One launcher process: how many files it was given, its peak RSS and wall time."""

    files: int
    peak_mb: float
    seconds: float
    embedded: str


def write_tiny_corpus(folder: Path, count: int) -> Path:
    """``count`` copies of one 8x8 PNG under distinct names (ids), written once each."""
    from PIL import Image  # noqa: PLC0415

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 60, 200)).save(buffer, format="PNG")
    blob = buffer.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        with open(folder / f"t{n:08d}.png", "wb") as out:
            out.write(blob)
    return folder


def cheapest_encoder(path: Path) -> Path:
    """8x8 pixels -> mean colour -> Dense(8) -> unit vector: the least model can cost."""
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255.0)(inputs))
    outputs = keras.layers.UnitNormalization()(keras.layers.Dense(8)(x))
    keras.Model(inputs, outputs).save(path)
    return path


class ServiceProcessRunner(FnApiRunner):
    """Submits the portable pipeline to a separate process and waits, as a remote runner does.

    ``FnApiRunner.run_pipeline`` prepares the graph in the launcher (cheap, independent of the
    corpus); its last step, executing the proto, is what moves to the service process."""

    def run_via_runner_api(self, pipeline_proto, options):
        with tempfile.NamedTemporaryFile(suffix=".pb", delete=False) as handle:
            handle.write(pipeline_proto.SerializeToString())
        try:
            subprocess.run([sys.executable, "-m", "benchmarks.launcher_memory", "--service", handle.name],
                           cwd=ROOT, check=True)
        finally:
            os.unlink(handle.name)
        return PipelineResult(PipelineState.DONE)


def own_peak_rss_mb() -> float:
    """This process's own high-water mark (VmHWM), its children's memory not included."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def service_main(proto_file: str) -> int:
    """The "service": run the launcher's portable pipeline to the end."""
    from apache_beam.options.pipeline_options import PipelineOptions  # noqa: PLC0415
    from apache_beam.portability.api import beam_runner_api_pb2  # noqa: PLC0415

    proto = beam_runner_api_pb2.Pipeline.FromString(Path(proto_file).read_bytes())
    FnApiRunner().run_via_runner_api(proto, PipelineOptions([])).wait_until_finish()
    return 0


def child_main(folder: str, model: str, out: str) -> int:
    """The launcher itself: one library call, as a user's batch job makes it; prints its peak RSS."""
    import apache_beam as beam  # noqa: PLC0415
    from apache_beam.options.pipeline_options import PipelineOptions  # noqa: PLC0415

    from beamlens import EmbedRequest, embed  # noqa: PLC0415

    request = EmbedRequest(model=model, output=out, input_glob=os.path.join(folder, "*.png"), num_shards=16,
                           max_batch_size=256, pipeline_options=PipelineOptions([]))
    result = embed(request, pipeline=beam.Pipeline(runner=ServiceProcessRunner(), options=PipelineOptions([])))
    print(f"{own_peak_rss_mb():.1f} listed {result.listed}, embedded {result.embedded}, failed {result.failed}")
    return 0


def run_launcher(folder: Path, model: Path, out: Path) -> LauncherRun:
    """Run ``embed`` in a child process; its own peak RSS as it reports it."""
    started = time.perf_counter()
    printed = subprocess.run([sys.executable, "-m", "benchmarks.launcher_memory", "--child", str(folder), str(model),
                              str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    peak, _, accounted = printed.splitlines()[-1].partition(" ")
    return LauncherRun(len(os.listdir(folder)), float(peak), time.perf_counter() - started, accounted)


def launcher_part(work: Path, sizes: list[int]) -> list[LauncherRun]:
    model = cheapest_encoder(work / "cheapest.keras")
    runs = []
    for size in sizes:
        folder = write_tiny_corpus(work / f"tiny-{size}", size)
        runs.append(run_launcher(folder, model, work / f"out-tiny-{size}"))
        print(f"launcher, {size} files: peak RSS {runs[-1].peak_mb:.0f} MB, {runs[-1].seconds:.0f} s "
              f"({runs[-1].embedded})", flush=True)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(work / f"out-tiny-{size}", ignore_errors=True)
    if len(runs) > 1:
        print(f"launcher peak RSS, {runs[-1].files} vs {runs[0].files} files: "
              f"{runs[-1].peak_mb / runs[0].peak_mb:.3f}x (target: within 1.10x)")
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 1_000_000])
    parser.add_argument("--child", nargs=3, metavar=("FOLDER", "MODEL", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--service", metavar="PROTO", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(*args.child)
    if args.service:
        return service_main(args.service)
    with tempfile.TemporaryDirectory(prefix="beamlens-launcher-") as work:
        launcher_part(Path(work), args.sizes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
