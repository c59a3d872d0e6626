"""``beamlens evaluate-encoder``: top-k retrieval accuracy of trained encoders (Keras, exact search).

    beamlens evaluate-encoder --model-dir build/model \\
        --captions corpus/annotations/captions_val.json --images corpus/val \\
        --train-captions corpus/annotations/captions_train.json --train-images corpus/train \\
        --corpus-dir corpus --out build/model/encoder_report.json

Each split is scored on its own (captions against the images of that split). With --corpus-dir
(the default corpus from ``beamlens make-corpus``) the attribute recall / precision are added;
see models/training/evaluation.py for the exact definitions and chance levels. The training curves
in the model folder's history.json are plotted next to the report.
"""

from __future__ import annotations

import argparse
import json
import os



def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="beamlens evaluate-encoder", description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", required=True, help="folder written by beamlens train")
    p.add_argument("--captions", required=True, help="held-out COCO captions JSON")
    p.add_argument("--images", default=None)
    p.add_argument("--train-captions", default=None, help="training captions JSON (also scored)")
    p.add_argument("--train-images", default=None)
    p.add_argument("--corpus-dir", default=None, help="default corpus folder: adds attribute recall")
    p.add_argument("--max-attribute-queries", type=int, default=1000)
    p.add_argument("--out", default=None, help="report JSON (default: <model-dir>/encoder_report.json)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from beamlens.models.corpora.coco import split_name_from_captions_file  # noqa: PLC0415
    from beamlens.models.training.evaluation import evaluate_split, load_encoder_models  # noqa: PLC0415

    models, _ = load_encoder_models(args.model_dir)
    from beamlens.models.io.files import write_json  # noqa: PLC0415
    from beamlens.models.training.end_to_end import load_split, plot_history  # noqa: PLC0415

    report: dict = {"model_dir": os.path.abspath(args.model_dir), "splits": {}}
    for label, captions, images in (("held_out", args.captions, args.images), ("train", args.train_captions, args.train_images)):
        if not captions:
            continue
        split = load_split(label, captions, images, models.image_size)
        truth = None
        if args.corpus_dir:
            from beamlens.models.corpora.synthetic import load_ground_truth  # noqa: PLC0415

            name = split_name_from_captions_file(captions)
            truth = load_ground_truth(args.corpus_dir, name or "")
        result = evaluate_split(models, split.images, truth, args.max_attribute_queries)
        result["captions_file"] = os.path.abspath(captions)
        result["skipped_images"] = len(split.skipped)
        report["splits"][label] = result
        line = " ".join(f"top{k}={v:.3f}(chance {result['chance'][k]:.3f})" for k, v in result["top_k_accuracy"].items())
        print(f"{label}: {result['queries']} captions x {result['images']} images: {line}")
        if "attributes" in result:
            a = result["attributes"]
            print(f"{label}: attribute recall " + " ".join(
                f"@{k}={v:.3f}(chance {a['chance_recall'][k]:.3f})" for k, v in a["recall"].items()))
    out = args.out or os.path.join(args.model_dir, "encoder_report.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    history_path = os.path.join(args.model_dir, "history.json")
    if os.path.isfile(history_path):
        with open(history_path) as stream:
            history = json.load(stream)
        plot = os.path.splitext(out)[0] + "_training_curves.png"
        plot_history(history, plot)
        report["training_curves_png"] = plot
    write_json(out, report)
    print(f"wrote {out}")
    return 0
