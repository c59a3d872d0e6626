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

from beamlens.models.export import model_folder
from beamlens.models.errors import BeamlensError


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


def load_models(model_dir: str):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # noqa: PLC0415

    import beamlens.models.encoders.backbones  # noqa: F401,PLC0415 (registers custom layers a backbone may use)
    from beamlens.models.encoders.backbones import _load_all  # noqa: PLC0415
    from beamlens.models.training.evaluation import EncoderModels  # noqa: PLC0415
    from beamlens.models.encoders.bert_tokenizer import load_caption_tokenizer  # noqa: PLC0415

    _load_all()
    needed = (model_folder.CONFIG, model_folder.VISION_ENCODER, model_folder.TEXT_ENCODER, model_folder.VOCAB)
    missing = [n for n in needed if not os.path.isfile(os.path.join(model_dir, n))]
    if missing:
        raise BeamlensError(f"{model_dir} is not a trained model folder (missing {', '.join(missing)}); run beamlens train")
    with open(os.path.join(model_dir, model_folder.CONFIG)) as stream:
        config = json.load(stream)
    return EncoderModels(
        vision=keras.saving.load_model(os.path.join(model_dir, model_folder.VISION_ENCODER)),
        text=keras.saving.load_model(os.path.join(model_dir, model_folder.TEXT_ENCODER)),
        vocab=load_caption_tokenizer(os.path.join(model_dir, model_folder.VOCAB), config.get("text_backbone")),
        image_size=int(config["image_size"]), max_tokens=int(config["max_tokens"])), config


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    models, config = load_models(args.model_dir)
    from beamlens.models.corpora.coco import split_name_from_captions_file  # noqa: PLC0415
    from beamlens.models.training.evaluation import evaluate_split  # noqa: PLC0415
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
