"""Text-to-image quality on real photos, side by side: caption-free, trained from it, and the floor.

    .venv/bin/python benchmarks/real_photo_quality.py [--workdir build/quality]

Every model is scored on photos it never saw, through the on-device searcher (``beamlens embed`` ->
``build-searcher`` -> ``beamlens evaluate``: the Task Library TextSearcher, R@k = a caption's own
photo among the k first; exact numpy search beside it), on both coco-mini-cc splits:

1. floor: the construction to beat — class probabilities at T = 1, one prompt ("a photo of a {}."),
   384-d (``export-pretrained --temperature 1 --prompts <one line> --embedding-dim 384``; it centres
   the class vectors, which the floor as first measured did not);
2. caption-free: ``beamlens export-pretrained`` with its defaults (T = 3, 8 prompts, PCA to 128);
3. trained: ``beamlens train`` with its defaults on one split (the pretrained pair, caption-free
   start, its own held-out 20 % for stopping), scored on the other split: train2017 (29) ->
   val2017 (56) and val2017 (56) -> train2017 (29);
4. random heads: the same training with ``--init random`` (the reference projection heads).

Every step is the real CLI in its own process.
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
COCO_MINI = Path(os.environ.get("BEAMLENS_SHARED", ROOT.parent / "shared")) / "testdata" / "coco-mini-cc"
SPLITS = {"train2017": 29, "val2017": 56}
KS = ("1", "5", "10")


def beamlens(*args: str) -> None:
    print("$ beamlens " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=ROOT, check=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, stdout=sys.stderr)


def captions(split: str) -> str:
    return str(COCO_MINI / "annotations" / f"captions_{split}.json")


def score(model: Path, split: str, work: Path) -> dict:
    """R@k of ``model`` on ``split`` through the TextSearcher (and exact search)."""
    shards, searchers, report = work / f"shards-{split}", work / f"searchers-{split}", work / f"report-{split}"
    if not (report / "report.json").exists():
        beamlens("embed", "--captions", captions(split), "--images", str(COCO_MINI / split),
                 "--model", str(model / "vision_encoder.keras"), "--output", str(shards), "--num-shards", "1",
                 "--runner", "FnApiRunner", "--resize", "task_library")
        beamlens("build-searcher", "--shards", str(shards), "--out", str(searchers),
                 "--text-embedder", str(model / "text_embedder.tflite"), "--score", "brute_force")
        beamlens("evaluate", "--searcher", str(searchers / "text_searcher.tflite"),
                 "--text-embedder", str(model / "text_embedder.tflite"), "--captions", captions(split),
                 "--shards", str(shards), "--out", str(report), "--no-sweep", "--ks", "1,5,10")
    figures = json.loads((report / "report.json").read_text())
    return {"searcher": figures["top_k_accuracy"]["searcher"], "exact": figures["top_k_accuracy"]["exact"],
            "images": figures.get("num_items")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=str(ROOT / "build" / "quality"))
    args = parser.parse_args(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows = []  # (name, scored split, result, seconds)

    one_prompt = work / "one_prompt.txt"
    one_prompt.write_text("a photo of a {}.\n")
    exports = {"floor (T=1, one prompt, 384-d)": ["--temperature", "1", "--prompts", str(one_prompt), "--embedding-dim", "384"],
               "caption-free (export-pretrained defaults)": []}
    for number, (name, options) in enumerate(exports.items()):
        model = work / f"export-{number}"
        started = time.perf_counter()
        if not (model / "encoder_config.json").exists():
            beamlens("export-pretrained", "--out", str(model), *options)
        seconds = time.perf_counter() - started
        for split in SPLITS:
            rows.append((name, split, score(model, split, model), seconds))

    for init in ("caption-free", "random"):
        for trained_on, scored_on in (("train2017", "val2017"), ("val2017", "train2017")):
            name = f"trained on {trained_on} ({SPLITS[trained_on]}), heads {init}"
            model = work / f"train-{init}-{trained_on}"
            started = time.perf_counter()
            if not (model / "encoder_config.json").exists():
                beamlens("train", "--captions", captions(trained_on), "--images", str(COCO_MINI / trained_on),
                         "--out", str(model), "--init", init)
            seconds = time.perf_counter() - started
            rows.append((name, scored_on, score(model, scored_on, model), seconds))

    print("\ntext -> image R@1/5/10 on coco-mini-cc photos the model never saw, through the TextSearcher (exact search)")
    print(f"  {'model':<48} {'scored on':<16} {'R@1':>6} {'R@5':>6} {'R@10':>6}  chance@10  (exact R@1/5/10)   time")
    for name, split, result, seconds in rows:
        s, e = result["searcher"], result["exact"]
        n = SPLITS[split]
        print(f"  {name:<48} {split + f' ({n})':<16} " + " ".join(f"{float(s[k]):6.3f}" for k in KS)
              + f"  {min(1.0, 10 / n):9.3f}  (" + "/".join(f"{float(e[k]):.3f}" for k in KS) + f")  {seconds:5.0f} s")
    (work / "summary.json").write_text(json.dumps([{"model": n, "scored_on": s, **r} for n, s, r, _ in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
