"""`beamlens demo`: the whole chain on the embedded default corpus, as a user would run it.

Each step is the real subcommand run in its own process, so what the demo shows is exactly what
a user gets from the CLI (and TensorFlow and the Task Library never share a process). A step whose
completion marker exists is reused, so a second run only redoes what is missing; ``--fresh``
starts over.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Sequence

from beamlens.models.corpora.real_photos import REAL_PHOTOS, REAL_QUERIES, skimage_data_dir, stage_real_photos  # noqa: F401 (re-exported)
from beamlens.models.encoders.backbones.wheels import MINILM_TEXT_BACKBONES
from beamlens.models.errors import BeamlensError
from beamlens.models.export import model_folder
from beamlens.pipelines.demo_plan import (  # noqa: F401 (re-exported: the demo's recipe)
    EXAMPLE_QUERIES, PRETRAINED, SCRATCH, Step, beamlens_argv, choose_backbones, plan_real_photo_steps, plan_steps,
    real_photo_text_backbone,
)

def print_real_photo_ranks(workdir: Path) -> None:
    """The rank of each query's expected photo among all indexed real photos."""
    searcher = workdir / "real-searchers" / "text_searcher.tflite"
    print(f"\ncaption-free search over {len(REAL_PHOTOS)} scikit-image photos (no captions anywhere):")
    for number, (query, expected) in enumerate(REAL_QUERIES, start=1):
        done = subprocess.run(beamlens_argv("search", str(searcher), query, "-k", str(len(REAL_PHOTOS)), "--json"),
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise BeamlensError(f"real-photo query {query!r} failed: {done.stderr.strip()[-300:]}")
        hits = json.loads(done.stdout)["hits"]
        names = [Path(hit.get("uri") or hit.get("image_id") or "").name for hit in hits]
        rank = names.index(expected) + 1 if expected in names else None
        print(f"  {query!r}: {expected} at rank {rank if rank else 'not found'} of {len(names)} "
              f"(first: {', '.join(names[:3])}); gallery {workdir / 'report' / f'real-query-{number}.html'}")


def _resolve_placeholders(argv: list[str]) -> list[str]:
    """``{first:DIR}`` becomes the first JPEG in DIR (known only after the corpus exists)."""
    resolved = []
    for arg in argv:
        if arg.startswith("{first:") and arg.endswith("}"):
            folder = Path(arg[len("{first:"):-1])
            images = sorted(folder.glob("*.jpg"))
            if not images:
                raise BeamlensError(f"no images in {folder}")
            arg = str(images[0])
        resolved.append(arg)
    return resolved


def run_steps(steps: Sequence[Step]) -> None:
    started = time.perf_counter()
    for number, step in enumerate(steps, start=1):
        header = f"[{number}/{len(steps)}] {step.title}"
        if step.marker is not None and step.marker.exists():
            print(f"{header}: done before, reusing {step.marker.parent}", flush=True)
            continue
        print(f"\n{header}\n  $ beamlens {' '.join(step.argv[3:])}", flush=True)
        step_started = time.perf_counter()
        done = subprocess.run(_resolve_placeholders(step.argv))
        if done.returncode != 0:
            raise BeamlensError(f"step {number} ({step.title}) failed with exit code {done.returncode}")
        print(f"  ({time.perf_counter() - step_started:.1f} s)", flush=True)
    print(f"\ndemo finished in {time.perf_counter() - started:.1f} s", flush=True)


def print_summary(figures: dict, build: dict | None = None) -> None:
    """The few numbers a user decides on: quality through the real searcher, exact, and speed;
    with the searcher build report, the recall the builder promised beside the one measured."""
    accuracy = figures.get("top_k_accuracy", {})
    print(f"\nheld-out text->image top-k accuracy over {figures.get('num_items')} images "
          f"({figures.get('num_queries')} caption queries; chance@10 = "
          f"{min(1.0, 10 / max(1, figures.get('num_items') or 1)):.3f}):")
    for source in ("searcher", "exact"):
        row = accuracy.get(source, {})
        print(f"  {source:<9}" + "  ".join(f"@{k}: {float(v):.3f}" for k, v in row.items()))
    recall = figures.get("ann_recall", {})
    latency = figures.get("latency_ms_by_k", {}).get("10", figures.get("latency_ms", {}))
    sizes = figures.get("size_bytes", {})
    promised = (build or {}).get("estimated_recall_at_10")
    if promised is not None:
        print(f"  recall@10 the builder promised: {float(promised):.3f} (on {build.get('recall_query_kind') or 'image'} "
              "queries); measured here on the held-out captions:")
    print(f"  ANN recall@10 vs exact: {float(recall.get('10', float('nan'))):.3f}; "
          f"TextSearcher p50 {float(latency.get('p50', float('nan'))):.2f} ms, "
          f"p99 {float(latency.get('p99', float('nan'))):.2f} ms at k=10; "
          f"searcher file {sizes.get('searcher', 0) / 1e6:.2f} MB")


def forget_other_backbones(workdir: Path, backbones: dict[str, str]) -> None:
    """A model made with other backbones (and all made from it) is redone; the corpus is kept."""
    _forget_if_other(workdir / "model", (backbones["image"], backbones["text"]),
                     [workdir / name for name in ("model", "shards", "searchers", "report")])
    _forget_if_other(workdir / "caption-free", (PRETRAINED["image"], real_photo_text_backbone(backbones)),
                     [workdir / name for name in ("caption-free", "real-shards", "real-searchers")])


def _forget_if_other(model: Path, wanted: tuple[str, str], made_from_it: list[Path]) -> None:
    trained = model / model_folder.CONFIG
    if not trained.exists():
        return
    done = json.loads(trained.read_text())
    if (done.get("image_backbone"), done.get("text_backbone")) == wanted:
        return
    print(f"{model} was made with {done.get('image_backbone')} + {done.get('text_backbone')}: "
          f"making it again with {wanted[0]} + {wanted[1]} (the corpus is reused)", flush=True)
    for folder in made_from_it:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="beamlens demo", description=__doc__)
    parser.add_argument("--workdir", default="build/demo", help="where everything is written (default %(default)s)")
    parser.add_argument("--num-images", type=int, default=2000, help="size of the default corpus (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the trainer's)")
    parser.add_argument("--fresh", action="store_true", help="delete the workdir first and redo every step")
    parser.add_argument("--backbones", choices=("auto", "pretrained", "scratch"), default="auto",
                        help="auto (default): frozen pretrained EfficientNet-Lite0 + MiniLM when their weight wheels "
                             "are installed (heads trained on cached features), else the from-scratch pair")
    parser.add_argument("--text-backbone", choices=MINILM_TEXT_BACKBONES, default=None,
                        help="with the pretrained pair: minilm_static (default; MiniLM's phone-grade student, "
                             "a 9 MB text searcher at about 1 ms a query) or minilm (the 92 MB teacher, 20 ms)")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir).resolve()
    if args.fresh and workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    backbones = choose_backbones(args.backbones, args.text_backbone)
    print(f"backbones: image {backbones['image']}, text {backbones['text']}"
          + (" (pretrained, frozen: only the projection heads train)" if backbones["image"] == PRETRAINED["image"] else " (trained from scratch)"),
          flush=True)
    forget_other_backbones(workdir, backbones)
    real = skimage_data_dir()
    steps = plan_steps(workdir, args.num_images, args.epochs, backbones)
    if real is not None:
        steps += plan_real_photo_steps(workdir, stage_real_photos(workdir, real), backbones)
    else:
        print("scikit-image is not installed: the real-photo steps are skipped (run `make install`)", flush=True)
    run_steps(steps)
    report = workdir / "report" / "report.html"
    summary = workdir / "report" / "report.json"
    build_report = workdir / "searchers" / "searcher_report.json"
    if summary.exists():
        print_summary(json.loads(summary.read_text()),
                      json.loads(build_report.read_text()).get("build") if build_report.exists() else None)
    if real is not None:
        print_real_photo_ranks(workdir)
    print(f"\nHTML report: {report}")
    searchers = workdir / "searchers"
    print("try the searchers in the browser (then open http://127.0.0.1:8080/):\n"
          f"  beamlens serve --searcher {shlex.quote(str(searchers / 'text_searcher.tflite'))} "
          f"--image-searcher {shlex.quote(str(searchers / 'image_searcher.tflite'))}")
    return 0
