"""Text-to-image quality on real photos, side by side: caption-free, trained, and the floor.

    .venv/bin/python benchmarks/real_photo_quality.py [--workdir build/quality] [--no-flickr8k]

Every model is scored on photos it never saw, through the on-device searcher (``beamlens embed`` ->
``build-searcher`` -> ``beamlens evaluate``: the Task Library TextSearcher, R@k = a caption's own
photo among the k first; exact numpy search beside it), on the two coco-mini-cc splits and on the
Flickr8k dev split (1,000 photos, 5,000 human captions; ../shared/testdata/flickr8k):

1. floor: the construction to beat — class probabilities at T = 1, one prompt ("a photo of a {}."),
   384-d (``export-pretrained --temperature 1 --prompts <one line> --embedding-dim 384``);
2. caption-free: ``beamlens export-pretrained`` with its defaults (T = 3, 8 prompts, PCA to 128),
   with MiniLM and with its phone-grade student;
3. trained on Flickr8k train (6,000 photos, 30,000 captions), dev as the held-out split that picks
   the epoch (tuned on dev, as the split is meant for): ``train`` defaults (linear heads with input
   dropout on multi-scale features) with MiniLM and with the student, and the previous default
   (``--init caption-free``: caption-free start plus a 512-unit residual branch); each is also
   scored on coco-mini-cc, another domain;
4. trained on one coco-mini-cc split (the pretrained pair, caption-free start, its own held-out 20 %
   for stopping), scored on the other: train2017 (29) -> val2017 (56) and back; and the same with
   ``--init random`` (the reference projection heads).

Every step is the real CLI in its own process. Flickr8k photos and models trained on them stay in
the work folder (build/, ignored by git): they never enter the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTDATA = Path(os.environ.get("BEAMLENS_SHARED", ROOT.parent / "shared")) / "testdata"
COCO_MINI = TESTDATA / "coco-mini-cc"
FLICKR8K = TESTDATA / "flickr8k"
# scored set -> (captions file, image folder, photos)
SETS = {"train2017": (COCO_MINI / "annotations" / "captions_train2017.json", COCO_MINI / "train2017", 29),
        "val2017": (COCO_MINI / "annotations" / "captions_val2017.json", COCO_MINI / "val2017", 56),
        "flickr8k-dev": (FLICKR8K / "dev" / "annotations" / "captions.json", FLICKR8K / "dev" / "images", 1000)}
SPLITS = ("train2017", "val2017")
KS = ("1", "5", "10")


def beamlens(*args: str) -> None:
    print("$ beamlens " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "beamlens.pipelines.cli", *args], cwd=ROOT, check=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, stdout=sys.stderr)


def captions(split: str) -> str:
    return str(SETS[split][0])


def score(model: Path, split: str, work: Path) -> dict:
    """R@k of ``model`` on ``split`` through the TextSearcher (and exact search)."""
    shards, searchers, report = work / f"shards-{split}", work / f"searchers-{split}", work / f"report-{split}"
    if not (report / "report.json").exists():
        beamlens("embed", "--captions", captions(split), "--images", str(SETS[split][1]),
                 "--model", str(model / "vision_encoder.keras"), "--output", str(shards), "--num-shards", "1",
                 "--runner", "FnApiRunner", "--resize", "task_library")
        beamlens("build-searcher", "--shards", str(shards), "--out", str(searchers),
                 "--text-embedder", str(model / "text_embedder.tflite"), "--score", "brute_force")
        beamlens("evaluate", "--searcher", str(searchers / "text_searcher.tflite"),
                 "--text-embedder", str(model / "text_embedder.tflite"), "--captions", captions(split),
                 "--shards", str(shards), "--out", str(report), "--no-sweep", "--ks", "1,5,10",
                 "--max-queries", str(10 * SETS[split][2]))  # every caption, not a sample
    figures = json.loads((report / "report.json").read_text())
    return {"searcher": figures["top_k_accuracy"]["searcher"], "exact": figures["top_k_accuracy"]["exact"],
            "images": figures.get("num_items")}


def exported(work: Path, rows: list, sets: tuple[str, ...]) -> None:
    """The floor and the caption-free models (no training), scored on every set."""
    one_prompt = work / "one_prompt.txt"
    one_prompt.write_text("a photo of a {}.\n")
    exports = {"floor (T=1, one prompt, 384-d)": ["--temperature", "1", "--prompts", str(one_prompt), "--embedding-dim", "384"],
               "caption-free (export-pretrained defaults)": [],
               "caption-free, student text tower": ["--text-backbone", "minilm_static"]}
    for number, (name, options) in enumerate(exports.items()):
        model = work / f"export-{number}"
        started = time.perf_counter()
        if not (model / "encoder_config.json").exists():
            beamlens("export-pretrained", "--out", str(model), *options)
        seconds = time.perf_counter() - started
        for split in sets:
            rows.append((name, split, score(model, split, model), seconds))


def trained_on_flickr8k(work: Path, rows: list) -> None:
    """Each recipe trained on Flickr8k train (dev picks the epoch), scored on dev and on coco-mini-cc."""
    recipes = {"Flickr8k train: train defaults (linear heads)": [],
               "Flickr8k train: linear heads, student text tower": ["--text-backbone", "minilm_static"],
               "Flickr8k train: --init caption-free (previous default)": ["--init", "caption-free"]}
    for number, (name, options) in enumerate(recipes.items()):
        model = work / f"flickr8k-train-{number}"
        started = time.perf_counter()
        if not (model / "encoder_config.json").exists():
            beamlens("train", "--captions", str(FLICKR8K / "train" / "annotations" / "captions.json"),
                     "--images", str(FLICKR8K / "train" / "images"), "--val-captions", captions("flickr8k-dev"),
                     "--val-images", str(SETS["flickr8k-dev"][1]), "--out", str(model), *options)
        seconds = time.perf_counter() - started
        for split in ("flickr8k-dev", *SPLITS):
            rows.append((name, split, score(model, split, model), seconds))


def trained_on_coco_mini(work: Path, rows: list) -> None:
    for init in ("caption-free", "random"):
        for trained_on, scored_on in (("train2017", "val2017"), ("val2017", "train2017")):
            name = f"trained on {trained_on} ({SETS[trained_on][2]}), heads {init}"
            model = work / f"train-{init}-{trained_on}"
            started = time.perf_counter()
            if not (model / "encoder_config.json").exists():
                beamlens("train", "--captions", captions(trained_on), "--images", str(SETS[trained_on][1]),
                         "--out", str(model), "--init", init)
            seconds = time.perf_counter() - started
            rows.append((name, scored_on, score(model, scored_on, model), seconds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=str(ROOT / "build" / "quality"))
    parser.add_argument("--no-flickr8k", action="store_true", help="coco-mini-cc only (minutes instead of an hour)")
    args = parser.parse_args(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows: list = []  # (name, scored split, result, seconds)
    exported(work, rows, SPLITS if args.no_flickr8k else ("flickr8k-dev", *SPLITS))
    if not args.no_flickr8k:
        trained_on_flickr8k(work, rows)
    trained_on_coco_mini(work, rows)

    print("\ntext -> image R@1/5/10 on photos the model never saw, through the TextSearcher (exact search)")
    print(f"  {'model':<56} {'scored on':<20} {'R@1':>6} {'R@5':>6} {'R@10':>6}  chance@10  (exact R@1/5/10)   time")
    for name, split, result, seconds in rows:
        s, e = result["searcher"], result["exact"]
        n = SETS[split][2]
        print(f"  {name:<56} {split + f' ({n})':<20} " + " ".join(f"{float(s[k]):6.3f}" for k in KS)
              + f"  {min(1.0, 10 / n):9.3f}  (" + "/".join(f"{float(e[k]):.3f}" for k in KS) + f")  {seconds:5.0f} s")
    (work / "summary.json").write_text(json.dumps([{"model": n, "scored_on": s, **r} for n, s, r, _ in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
