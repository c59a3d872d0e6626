"""Text-to-image quality on real photos: pretrained frozen backbones against the from-scratch default.

    .venv/bin/python benchmarks/real_photo_quality.py [--corpus build/demo/corpus] [--workdir build/quality]

Both models train on the same data — the COCO-MINI train split (29 real COCO photos, 5 human
captions each) plus the default synthetic corpus's train split — and are scored side by side on
the COCO-MINI val split (56 photos, 280 captions) with ``beamlens evaluate-encoder``: top-k
accuracy (a caption is a hit when its own photo is among the k best), against chance k / 56.

1. pretrained: ``--image-backbone efficientnet_lite0 --text-backbone minilm`` (frozen; features
   computed once, heads trained);
2. scratch: the default ``scratch_cnn`` + ``scratch_text`` trained end to end.

Every step is the real CLI in its own process. Issue 8's target: pretrained top-10 >= 2x chance.
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
VARIANTS = {
    "pretrained (EfficientNet-Lite0 + MiniLM, heads only)": ["--image-backbone", "efficientnet_lite0", "--text-backbone", "minilm"],
    "scratch (default scratch_cnn + scratch_text)": [],
}


def beamlens(*args: str) -> None:
    command = [sys.executable, "-m", "pipelines.cli", *args]
    print("$ beamlens " + " ".join(args), flush=True)
    subprocess.run(command, cwd=ROOT, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=str(ROOT / "build" / "demo" / "corpus"),
                        help="default corpus folder (made with beamlens make-corpus when missing)")
    parser.add_argument("--workdir", default=str(ROOT / "build" / "quality"))
    args = parser.parse_args(argv)
    corpus, work = Path(args.corpus), Path(args.workdir)
    if not (corpus / "corpus.json").exists():
        beamlens("make-corpus", "--out", str(corpus))
    train_data = ["--captions", str(COCO_MINI / "annotations" / "captions_train2017.json"),
                  "--images", str(COCO_MINI / "train2017"),
                  "--captions", str(corpus / "annotations" / "captions_train.json"), "--images", str(corpus / "train"),
                  "--val-captions", str(COCO_MINI / "annotations" / "captions_val2017.json"),
                  "--val-images", str(COCO_MINI / "val2017")]
    rows = []
    for name, backbones in VARIANTS.items():
        model = work / ("pretrained" if backbones else "scratch")
        started = time.perf_counter()
        beamlens("train", *train_data, "--out", str(model), *backbones)
        seconds = time.perf_counter() - started
        report = model / "coco_mini_val.json"
        beamlens("evaluate-encoder", "--model-dir", str(model),
                 "--captions", str(COCO_MINI / "annotations" / "captions_val2017.json"),
                 "--images", str(COCO_MINI / "val2017"), "--out", str(report))
        rows.append((name, seconds, json.loads(report.read_text())))

    print("\nCOCO-MINI val (real photos), text -> image top-k accuracy; trained on COCO-MINI train + default corpus")
    for name, seconds, report in rows:
        split = report["splits"]["held_out"]
        accuracy, chance = split["top_k_accuracy"], split["chance"]
        cells = "  ".join(f"@{k}: {float(accuracy[k]):.3f} (chance {float(chance[k]):.3f})" for k in ("1", "5", "10"))
        print(f"  {name:<52} {cells}   train {seconds:.0f} s")
    top10 = {name: float(r["splits"]["held_out"]["top_k_accuracy"]["10"]) / float(r["splits"]["held_out"]["chance"]["10"]) for name, _, r in rows}
    print("  top-10 over chance: " + ", ".join(f"{name.split(' ')[0]} {ratio:.2f}x" for name, ratio in top10.items())
          + "  (target for pretrained: >= 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
