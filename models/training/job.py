"""The train job as a library call: ``train(TrainRequest(...)) -> TrainResult``.

``beamlens train`` is this call behind a parser, and ``beamlens.train`` is this call. It chooses
the backbones and the heads for the corpus (the corpus-size policy: caption-free heads below
:data:`SMALL_CORPUS` photos, linear heads from there on), trains, refuses to publish a model that
scores below the caption-free one on the held-out split, and writes the model folder
(models/export/model_folder.py): in a temporary sibling folder first, then moved into place file
by file with encoder_config.json last, so a killed run never leaves a half-written model behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Any, Optional, Sequence

from beamlens.models.errors import BeamlensError
from beamlens.models.export import model_folder

# Below this many photos caption-free heads train only their linear maps, anchored (coco-mini-cc,
# 29 -> 56 and 56 -> 29: the residual branch lost up to 0.2 R@10 on unseen photos after one epoch).
SMALL_CORPUS = 1000

ARTIFACTS = model_folder.TRAINED
INITS = ("auto", "caption-free", "linear", "random")


@dataclass(frozen=True)
class TrainRequest:
    """The ``beamlens train`` options as fields (``beamlens train --help`` says what each does).

    ``captions``: COCO captions files of the training split (several make one split); ``images``:
    their image folders in the same order (default: the split's folder next to each file).
    ``None`` means "the recipe's choice" (backbones, batch size, learning rate, image size, heads).
    """

    captions: Sequence[str]
    out: str
    images: Optional[Sequence[str]] = None
    val_captions: Optional[str] = None
    val_images: Optional[str] = None
    epochs: int = 30
    batch_size: Optional[int] = None
    learning_rate: Optional[float] = None
    image_size: Optional[int] = None
    embedding_dim: int = 128
    max_tokens: int = 24
    vocab_min_count: int = 1
    vocab_max_size: int = 20000
    num_projection_layers: int = 1
    image_backbone: Optional[str] = None
    image_backbone_weights: Optional[str] = None
    text_backbone: Optional[str] = None
    text_backbone_weights: Optional[str] = None
    trainable_backbones: bool = False
    target_identity_weight: float = 1.0
    init: str = "auto"
    allow_worse: bool = False
    val_fraction: float = 0.2
    residual_units: Optional[int] = None
    anchor_weight: Optional[float] = None
    seed: int = 0


@dataclass(frozen=True)
class TrainResult:
    """The published model folder and what the held-out split said about it (empty without one)."""

    out: str
    artifacts: Sequence[str]
    seconds: float
    epochs_run: int
    best_epoch: Optional[int] = None
    recall_before: dict[str, float] = field(default_factory=dict)  # the caption-free model's R@1/5/10
    recall_after: dict[str, float] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)


def _validate(request: TrainRequest) -> TrainRequest:
    """Checks before any work; ``captions``/``images`` given as one string become lists."""
    captions = [request.captions] if isinstance(request.captions, str) else list(request.captions)
    images = [request.images] if isinstance(request.images, str) else (list(request.images) if request.images else None)
    if not captions:
        raise BeamlensError("--captions is required (a COCO captions JSON of the training split)")
    if not request.out:
        raise BeamlensError("--out is required (the model folder to write)")
    if request.val_images and not request.val_captions:
        raise BeamlensError("--val-images needs --val-captions")
    if request.init not in INITS:
        raise BeamlensError(f"--init must be one of {', '.join(INITS)}, got {request.init!r}")
    if images and len(images) != len(captions):
        raise BeamlensError(f"{len(captions)} --captions but {len(images)} --images: give one image "
                            "folder per caption file, in the same order (or none: folders next to the files)")
    return replace(request, captions=captions, images=images)


def _choose_backbones(request: TrainRequest) -> TrainRequest:
    """The request with missing backbones filled in; the first line of output says which pair and why."""
    from beamlens.models.encoders.backbones.wheels import resolve_backbone_pair  # noqa: PLC0415

    image_backbone, text_backbone, why = resolve_backbone_pair(request.image_backbone, request.text_backbone)
    print(f"backbones: {image_backbone} + {text_backbone}{why}", flush=True)
    return replace(request, image_backbone=image_backbone, text_backbone=text_backbone)



def head_kind(request: TrainRequest, trainable: bool, training_photos: int) -> str | None:
    """The heads to fit: ``caption_free`` (start from export-pretrained's model; small sets),
    ``linear`` (linear heads with input dropout on multi-scale features; from SMALL_CORPUS photos)
    or None (the reference projection heads)."""
    from beamlens.models.encoders import caption_free as cf, linear_heads  # noqa: PLC0415
    from beamlens.models.encoders.backbones.wheels import MINILM_TEXT_BACKBONES  # noqa: PLC0415

    pair = request.image_backbone == "efficientnet_lite0" and request.text_backbone in MINILM_TEXT_BACKBONES
    if request.init in ("caption-free", "linear") and (not pair or trainable):
        raise BeamlensError(f"--init {request.init} needs --image-backbone efficientnet_lite0 --text-backbone minilm or "
                            "minilm_static, frozen")
    if request.init == "caption-free":
        return cf.HEAD_KIND
    if request.init == "linear":
        return linear_heads.HEAD_KIND
    if request.init == "auto" and pair and not trainable and not (request.image_backbone_weights or request.text_backbone_weights):
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



def _write_model_folder(request: TrainRequest, config, vocab, vision, text, history: dict, train_split, val_split,
                        train_seconds: float) -> str:
    """Export the encoders and write the model folder (models/export/model_folder.py), marker last."""
    from beamlens.models.encoders.bert_tokenizer import BertTokenizer, backbone_vocab_path  # noqa: PLC0415
    from beamlens.models.export.encoders import export_encoders  # noqa: PLC0415
    from beamlens.models.io.files import write_json  # noqa: PLC0415
    from beamlens.models.io.fingerprint import model_fingerprint  # noqa: PLC0415
    from beamlens.models.training.end_to_end import plot_history  # noqa: PLC0415

    out = os.path.abspath(request.out)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    work = tempfile.mkdtemp(prefix=".tmp-train-", dir=os.path.dirname(out))
    try:
        vocab_path = os.path.join(work, model_folder.VOCAB)
        if isinstance(vocab, BertTokenizer):
            shutil.copyfile(backbone_vocab_path(request.text_backbone, request.text_backbone_weights), vocab_path)
        else:
            vocab.save(vocab_path)
        paths = export_encoders(vision, text, config, vocab_path, work)
        write_json(os.path.join(work, model_folder.HISTORY), history)
        plot_history(history, os.path.join(work, model_folder.CURVES))
        doc = {**config.__dict__,
               "fingerprints": {name: model_fingerprint(path) for name, path in paths.items()},
               "training": {"captions": [os.path.abspath(c) for c in request.captions], "images": len(train_split.images),
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



def _vocabulary(request: TrainRequest, train_split):
    """The BERT tokenizer of a BERT-like text backbone, else a vocabulary built from the captions."""
    from beamlens.models.encoders.backbones import text_tokenizer_kind  # noqa: PLC0415
    from beamlens.models.encoders.bert_tokenizer import BertTokenizer, backbone_vocab_path  # noqa: PLC0415
    from beamlens.models.encoders.regex_tokenizer import build_vocabulary  # noqa: PLC0415

    if text_tokenizer_kind(request.text_backbone) == "bert":
        return BertTokenizer.load(backbone_vocab_path(request.text_backbone, request.text_backbone_weights))
    return build_vocabulary((c for im in train_split.images for c in im.captions), request.vocab_min_count,
                            request.vocab_max_size)



def _recipe(request: TrainRequest, head: str | None, training_photos: int):
    """(TrainOptions, EncoderConfig.extra) for the head kind; prints the choice."""
    from beamlens.models.encoders import linear_heads  # noqa: PLC0415
    from beamlens.models.training.end_to_end import TrainOptions  # noqa: PLC0415

    small = training_photos < SMALL_CORPUS
    anchor, weight_decay = 0.0, TrainOptions.weight_decay
    if head == linear_heads.HEAD_KIND:
        learning_rate, batch_size = linear_heads.LEARNING_RATE, linear_heads.BATCH_SIZE
        weight_decay = linear_heads.WEIGHT_DECAY
        extra = linear_heads.LinearHeads().extra()
        print(f"heads: linear with input dropout on multi-scale image features (learning rate "
              f"{request.learning_rate or learning_rate:g}; {training_photos} training photos)", flush=True)
    elif head:
        units = request.residual_units if request.residual_units is not None else (0 if small else 512)
        anchor = request.anchor_weight if request.anchor_weight is not None else (10.0 if small else 0.0)
        learning_rate, batch_size = (3e-4 if small else 1e-3), 64
        extra = {"head": "caption_free", "caption_free": {"residual_units": units}}
        print(f"heads: caption-free start ({'linear maps only' if not units else f'linear maps + {units}-unit residual'}, "
              f"anchor weight {anchor:g}, learning rate {request.learning_rate or learning_rate:g}; "
              f"{'small' if small else 'large'} training set: {training_photos} photos)", flush=True)
    else:
        learning_rate, batch_size, extra = 3e-3, 64, {}
    options = TrainOptions(epochs=request.epochs, batch_size=request.batch_size or batch_size,
                           learning_rate=request.learning_rate or learning_rate, weight_decay=weight_decay,
                           seed=request.seed, anchor_weight=anchor)
    return options, extra


def _report_recall(history: dict, allow_worse: bool) -> None:
    """Print the held-out R@k before and after training; refuse to publish a worse model."""
    if "recall_before" not in history:
        return
    before, after = history["recall_before"], history["recall_after"]
    print(f"held-out R@1/5/10 ({history['recall_split_images']} photos): before training (caption-free) "
          f"{_cells(before)}, after {_cells(after)} (best epoch {history['best_epoch']}"
          + (", the caption-free start: training did not improve on it" if history["best_epoch"] == 0 else "")
          + ")", flush=True)
    _check_improved(history, allow_worse)


def _splits(request: TrainRequest, image_size: int) -> tuple[Any, Any, Optional[str]]:
    """(training split, held-out split, head kind): a held-out share of the training photos when
    the heads need one and no validation captions were given."""
    from beamlens.models.training.end_to_end import hold_out, load_split  # noqa: PLC0415

    train_split = load_split("train", request.captions, request.images, image_size)
    val_split = load_split("val", request.val_captions, request.val_images, image_size) if request.val_captions else None
    head = head_kind(request, request.trainable_backbones, len(train_split.images))
    if head and val_split is None:
        train_split, val_split = hold_out(train_split, request.val_fraction, request.seed)
        print(f"validation: {len(val_split.images)} of the training photos held out (--val-fraction "
              f"{request.val_fraction}) to pick the best epoch by R@k", flush=True)
    return train_split, val_split, head


def train(request: TrainRequest) -> TrainResult:
    """Train the dual encoder and publish the model folder ``request.out``, or raise and publish nothing."""
    request = _validate(request)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from beamlens.models.encoders.towers import EncoderConfig, default_image_size, trainable_backbones  # noqa: PLC0415 (TensorFlow only when training)
    from beamlens.models.training.end_to_end import train as fit  # noqa: PLC0415

    started = time.perf_counter()
    request = _choose_backbones(request)
    image_size = request.image_size or default_image_size(request.image_backbone)
    train_split, val_split, head = _splits(request, image_size)
    vocab = _vocabulary(request, train_split)
    options, extra = _recipe(request, head, len(train_split.images))
    config = EncoderConfig(
        image_size=image_size, embedding_dim=request.embedding_dim, max_tokens=request.max_tokens,
        vocab_size=vocab.size, num_projection_layers=request.num_projection_layers,
        image_backbone=request.image_backbone, text_backbone=request.text_backbone,
        image_backbone_weights=request.image_backbone_weights, text_backbone_weights=request.text_backbone_weights,
        trainable_backbones=request.trainable_backbones, target_identity_weight=request.target_identity_weight, extra=extra)
    print(f"backbones: image {request.image_backbone} ({image_size}px), text {request.text_backbone}; "
          + ("both frozen: features computed once, heads trained" if not any(trainable_backbones(config))
             else "trained end to end"), flush=True)
    print(f"train: {len(train_split.images)} images"
          + (f", val: {len(val_split.images)} images" if val_split else "") + f", vocab {vocab.size} ids", flush=True)
    vision, text, history = fit(config, train_split, val_split, vocab, options)
    _report_recall(history, request.allow_worse)
    out = _write_model_folder(request, config, vocab, vision, text, history, train_split, val_split,
                              time.perf_counter() - started)
    seconds = time.perf_counter() - started
    print(f"wrote {out} ({', '.join(ARTIFACTS)}) in {seconds:.0f}s")
    return TrainResult(out, tuple(ARTIFACTS), round(seconds, 1), len(history.get("loss", [])), history.get("best_epoch"),
                       dict(history.get("recall_before", {})), dict(history.get("recall_after", {})), history)
