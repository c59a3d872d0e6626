"""Training with frozen pretrained backbones: backbone features once, then only the two heads.

The reference design freezes its pretrained base encoders and trains the projection heads. With
the backbones frozen, every epoch would push each image through EfficientNet-Lite0 and each
caption through MiniLM again to get the same numbers, so this module computes them once:

1. image features ``[N, F_image]`` and caption features ``[M, F_text]`` (one row per caption) go
   to ``.npy`` files on disk, written batch by batch (memory-mapped: a 10M-image corpus is never
   in memory, only the batch being computed);
2. the heads — ``models.encoders.towers.projection_head`` on a feature input, the very layers the full
   encoders have, by name — train on (image feature, caption feature) pairs with the reference
   loss (``models.encoders.dual.make_loss``), one example per (image, caption) pair per epoch;
3. the trained head weights are set into full encoders (backbone + head), which export as usual.

Measured on the 2,000-image default corpus with EfficientNet-Lite0 + MiniLM (2 CPU cores): the
feature pass (2,000 images at ~30/s, 6,000 captions at ~90/s) took ~135 s of a 184 s run; an epoch
of head training then takes 1-2 s.

Caption-free start (``config.extra["head"] == "caption_free"``, the default of ``beamlens train``
with EfficientNet-Lite0 + MiniLM): the heads are models/encoders/caption_free.py's, initialised so that
epoch 0 *is* the caption-free model, and a :class:`RetrievalCheckpoint` scores the validation
split (text -> image R@1/5/10, exact search) before training and after every epoch, keeps the
best weights (epoch 0 included, ties keep the earlier) and stops after ``patience`` epochs
without gain: the result is never below the caption-free model on that split.

Linear heads (``config.extra["head"] == "linear"``, ``beamlens train``'s default from 1,000 training
photos; models/encoders/linear_heads.py) start random, so the checkpoint is given the caption-free
model's R@k on the same held-out features (:func:`caption_free_recall`) as epoch 0: it keeps the
best trained epoch, and ``history["improved"]`` says whether that beats the caption-free model
(``beamlens train`` refuses to publish it otherwise, unless ``--allow-worse``).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from beamlens.models.encoders.backbones.static_minilm import NAME as STUDENT_BACKBONE  # adapted to the captions first
from beamlens.models.encoders.dual import make_loss
from beamlens.models.encoders.towers import EncoderConfig, build_text_encoder, build_vision_encoder, projection_head
from beamlens.models.errors import BeamlensError
from beamlens.models.encoders.preprocessing import preprocess_image_bytes
from beamlens.models.io import files
from beamlens.models.knn import exact_knn, top_k_accuracy

IMAGE_FEATURES = "image_features"
TEXT_FEATURES = "text_features"


def _backbone(encoder: keras.Model) -> keras.Model:
    """The backbone sub-model of an encoder built by models.encoders.towers (its only nested Model)."""
    nested = [layer for layer in encoder.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise BeamlensError(f"{encoder.name}: expected one backbone sub-model, found {len(nested)}")
    return nested[0]


def _batched(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _progress(what: str, done: int, total: int, started: float) -> None:
    rate = done / max(time.perf_counter() - started, 1e-9)
    print(f"  {what}: {done}/{total} ({rate:.0f}/s)", file=sys.stderr, flush=True)


def _finite(rows: np.ndarray, inputs: Sequence, kind: str) -> np.ndarray:
    """The rows, unless one is NaN or infinite: then an error naming the input (heads would learn NaN)."""
    bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
    if bad.size:
        raise BeamlensError(f"the {kind} backbone gave non-finite features for {inputs[bad[0]]!r} "
                            f"({bad.size} of this batch of {len(inputs)})")
    return rows


def cache_image_features(backbone: keras.Model, paths: Sequence[str], image_size: int, out_path: str,
                         batch_size: int = 32) -> np.ndarray:
    """Backbone features of every image, row i for paths[i], in a memory-mapped .npy file."""
    width = int(backbone.output_shape[-1])
    features = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.float32, shape=(len(paths), width))
    started, row = time.perf_counter(), 0
    for number, batch in enumerate(_batched(list(paths), batch_size)):
        pixels = np.stack([preprocess_image_bytes(files.read_bytes(p), image_size) for p in batch])
        features[row:row + len(batch)] = _finite(np.asarray(backbone.predict_on_batch(pixels), np.float32), batch, "image")
        row += len(batch)
        if number % 20 == 19 or row == len(paths):
            _progress("image features", row, len(paths), started)
    features.flush()
    return features


def cache_text_features(backbone: keras.Model, captions: Sequence[str], tokenizer, max_tokens: int,
                        out_path: str, batch_size: int = 128) -> np.ndarray:
    """Backbone features of every caption (tokenized as the Task Library will), memory-mapped."""
    width = int(backbone.output_shape[-1])
    features = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.float32, shape=(len(captions), width))
    started, row = time.perf_counter(), 0
    for number, batch in enumerate(_batched(list(captions), batch_size)):
        features[row:row + len(batch)] = _finite(np.asarray(
            backbone.predict_on_batch(tokenizer.encode_batch(batch, max_tokens)), np.float32), batch, "text")
        row += len(batch)
        if number % 20 == 19 or row == len(captions):
            _progress("caption features", row, len(captions), started)
    features.flush()
    return features


class FeatureSplit:
    """One split's cached features and its (image row, caption row) pairs."""

    def __init__(self, name: str, vision_backbone: keras.Model, text_backbone: keras.Model, images, tokenizer,
                 config: EncoderConfig, folder: str) -> None:
        print(f"{name}: computing frozen backbone features once ({len(images)} images)", file=sys.stderr, flush=True)
        self.name = name
        captions = [caption for image in images for caption in image.captions]
        self.owner = np.repeat(np.arange(len(images), dtype=np.int64), [len(image.captions) for image in images])
        self.images = cache_image_features(vision_backbone, [image.path for image in images], config.image_size,
                                           os.path.join(folder, f"{name}-{IMAGE_FEATURES}.npy"))
        self.captions = cache_text_features(text_backbone, captions, tokenizer, config.max_tokens,
                                            os.path.join(folder, f"{name}-{TEXT_FEATURES}.npy"))

    def dataset(self, batch_size: int, seed: int, shuffle: bool) -> tf.data.Dataset:
        """Batches of ({image_features, text_features}, dummy); pairs reshuffled every epoch."""
        pairs = len(self.owner)
        rng = np.random.default_rng(seed)
        fixed = rng.permutation(pairs)  # validation: mixed (own captions rarely share a batch) but fixed

        def generate():
            order = rng.permutation(pairs) if shuffle else fixed
            for batch in _batched(order, batch_size):
                rows = np.sort(batch)  # sorted reads from the memory map; the batch is a set anyway
                yield {IMAGE_FEATURES: self.images[self.owner[rows]], TEXT_FEATURES: self.captions[rows]}, np.float32(0)

        signature = ({IMAGE_FEATURES: tf.TensorSpec((None, self.images.shape[1]), tf.float32),
                      TEXT_FEATURES: tf.TensorSpec((None, self.captions.shape[1]), tf.float32)},
                     tf.TensorSpec((), tf.float32))
        batches = -(-pairs // batch_size)
        data = tf.data.Dataset.from_generator(generate, output_signature=signature)
        return data.apply(tf.data.experimental.assert_cardinality(batches)).prefetch(2)


def _head(width: int, config: EncoderConfig, prefix: str, name: str) -> keras.Model:
    features = keras.Input((width,), dtype="float32", name=name)
    return keras.Model(features, projection_head(features, config.embedding_dim, config.num_projection_layers,
                                                 config.dropout, prefix), name=f"{prefix}_head")


def _set_head_weights(encoder: keras.Model, head: keras.Model) -> None:
    for layer in head.layers:
        if layer.weights:
            encoder.get_layer(layer.name).set_weights(layer.get_weights())


RECALL_KS = (1, 5, 10)


@dataclass(frozen=True)
class FeatureView:
    """Cached features of a split (or a slice of them): what :func:`retrieval_recall` scores."""

    images: np.ndarray
    captions: np.ndarray
    owner: np.ndarray


def retrieval_recall(vision_head: keras.Model, text_head: keras.Model, split: "FeatureSplit | FeatureView",
                     ks=RECALL_KS) -> dict:
    """Text -> image R@k of the heads on a split's cached features (each caption vs all its split's images)."""
    images = np.asarray(vision_head.predict(np.asarray(split.images), batch_size=1024, verbose=0))
    captions = np.asarray(text_head.predict(np.asarray(split.captions), batch_size=1024, verbose=0))
    ranked = exact_knn(captions, images, max(ks))[0]  # THE exact search and metric (models/knn.py)
    return {str(k): v for k, v in top_k_accuracy(ranked.tolist(), np.asarray(split.owner).tolist(), ks).items()}


def recall_score(recall: dict) -> float:
    """What the checkpoint maximises: the mean of R@1, R@5, R@10 (R@10 alone saturates on small splits)."""
    return float(np.mean([recall[str(k)] for k in RECALL_KS]))


class RetrievalCheckpoint(keras.callbacks.Callback):
    """Scores the validation split before training (epoch 0) and after each epoch; keeps the best.

    Ties keep the earlier weights, so training that does not help leaves the starting model."""

    def __init__(self, vision_head: keras.Model, text_head: keras.Model, split: "FeatureSplit", patience: int,
                 baseline: dict | None = None) -> None:
        """``baseline``: the R@k of a model other than the starting weights (the caption-free one, for
        heads that start random); it is reported as epoch 0, and only trained epochs can be kept."""
        super().__init__()
        self.vision_head, self.text_head, self.split, self.patience = vision_head, text_head, split, patience
        self.baseline = baseline
        self.recalls: list[dict] = []
        self.best_epoch, self.best_score, self.best_weights, self.wait = 0, -1.0, None, 0

    def _score(self, epoch: int) -> None:
        recall = retrieval_recall(self.vision_head, self.text_head, self.split)
        self.recalls.append(recall)
        score = recall_score(recall)
        if score > self.best_score + 1e-9:
            self.best_epoch, self.best_score, self.best_weights, self.wait = epoch, score, self.model.get_weights(), 0
        else:
            self.wait += 1
        if epoch:
            print(f"  epoch {epoch}: val R@1/5/10 " + "/".join(f"{recall[str(k)]:.3f}" for k in RECALL_KS)
                  + (" (best so far)" if self.best_epoch == epoch else ""), flush=True)
        if epoch and self.wait >= self.patience:
            self.model.stop_training = True

    def on_train_begin(self, logs=None):
        if self.baseline is None:
            self._score(0)
        else:
            self.recalls.append(self.baseline)
        print(f"  epoch 0 ({'caption-free start' if self.baseline is None else 'the caption-free model'}): val R@1/5/10 "
              + "/".join(f"{self.recalls[0][str(k)]:.3f}" for k in RECALL_KS), flush=True)

    def on_epoch_end(self, epoch, logs=None):
        self._score(epoch + 1)

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)

    def report(self) -> dict:
        return {f"val_recall@{k}": [r[str(k)] for r in self.recalls] for k in RECALL_KS} | {
            "recall_before": self.recalls[0], "recall_after": self.recalls[self.best_epoch],
            "best_epoch": self.best_epoch, "recall_split_images": int(len(self.split.images)),
            "improved": recall_score(self.recalls[self.best_epoch]) > recall_score(self.recalls[0]) + 1e-9}


def anchored_loss(contrastive, dimension: int, weight: float):
    """The contrastive loss on ``[caption | image]`` plus ``weight`` x the mean (1 - cosine) of each
    vector to its caption-free start (the last ``2 * dimension`` columns): a pull toward the
    starting model, so a few captions refine it instead of replacing it."""
    from keras import ops  # noqa: PLC0415

    def loss(targets, both):
        trained, start = both[:, :2 * dimension], both[:, 2 * dimension:]
        text_cos = ops.sum(trained[:, :dimension] * start[:, :dimension], axis=1)
        image_cos = ops.sum(trained[:, dimension:] * start[:, dimension:], axis=1)
        return contrastive(targets, trained) + weight * (2.0 - text_cos - image_cos)
    return loss


def _caption_free_encoders(config: EncoderConfig, tokenizer):
    """Backbones under caption-free heads; records the alignment in ``config.extra``."""
    from beamlens.models.encoders import caption_free as cf  # noqa: PLC0415
    from beamlens.models.encoders.backbones import BackboneConfig, build_image_backbone, build_text_backbone  # noqa: PLC0415

    settings = dict(config.extra.get("caption_free", {}))
    vision_backbone = build_image_backbone(BackboneConfig(config.image_backbone, image_size=config.image_size,
                                                          weights=config.image_backbone_weights))
    text_backbone = build_text_backbone(BackboneConfig(config.text_backbone, max_tokens=config.max_tokens,
                                                       weights=config.text_backbone_weights))
    templates = settings.get("templates") or list(cf.DEFAULT_TEMPLATES)
    alignment = cf.alignment_for(text_backbone, tokenizer, config.embedding_dim,
                                 float(settings.get("temperature", cf.DEFAULT_TEMPERATURE)), templates,
                                 text_backbone_weights=config.text_backbone_weights)
    units = int(settings.get("residual_units", cf.DEFAULT_RESIDUAL_UNITS))
    classifier = cf.classifier_weights(config.image_backbone_weights)
    config.extra.update(cf.head_config(alignment, units))
    vision, text = cf.build_encoders(vision_backbone, text_backbone, config.image_size, config.max_tokens,
                                     alignment, classifier, units)
    return vision, text, (alignment, classifier, units)


def _linear_encoders(config: EncoderConfig):
    """Backbones (the image one multi-scale pooled) under linear heads with input dropout."""
    from beamlens.models.encoders import linear_heads  # noqa: PLC0415
    from beamlens.models.encoders.backbones import BackboneConfig, build_image_backbone, build_text_backbone  # noqa: PLC0415

    recipe = linear_heads.LinearHeads.from_extra(config.extra)
    config.extra.update(recipe.extra())
    vision_backbone = build_image_backbone(BackboneConfig(
        config.image_backbone, image_size=config.image_size, weights=config.image_backbone_weights,
        options=dict(config.extra["image_backbone_options"])))
    text_backbone = build_text_backbone(BackboneConfig(config.text_backbone, max_tokens=config.max_tokens,
                                                       weights=config.text_backbone_weights))
    return linear_heads.build_encoders(vision_backbone, text_backbone, config.image_size, config.max_tokens,
                                       config.embedding_dim, recipe)


def caption_free_recall(config: EncoderConfig, tokenizer, text_backbone: keras.Model, split: "FeatureSplit") -> dict:
    """R@k on ``split`` of the caption-free model (`beamlens export-pretrained`) on the same backbones:
    the bar a trained model must clear. Multi-scale image features start with the pooled head the
    ImageNet classifier reads, so the first 1280 columns are its input."""
    from beamlens.models.encoders import caption_free as cf  # noqa: PLC0415
    from beamlens.models.encoders.backbones.efficientnet_lite import FEATURES  # noqa: PLC0415

    alignment = cf.alignment_for(text_backbone, tokenizer, config.embedding_dim,
                                 text_backbone_weights=config.text_backbone_weights)
    classifier = cf.classifier_weights(config.image_backbone_weights)
    vision_head, text_head = cf.build_heads(FEATURES, split.captions.shape[1], alignment, classifier, 0,
                                            IMAGE_FEATURES, TEXT_FEATURES, names=("cf_vision_head", "cf_text_head"))
    return retrieval_recall(vision_head, text_head, FeatureView(np.asarray(split.images)[:, :FEATURES],
                                                                split.captions, split.owner))


def _heads(kind: str, config: EncoderConfig, tokenizer, encoders, train_split: "FeatureSplit",
           val_split: "FeatureSplit | None", patience: int):
    """(vision head, text head, retrieval checkpoint or None) for the head kind of ``config``."""
    from beamlens.models.encoders import caption_free as cf, linear_heads  # noqa: PLC0415

    vision, text, caption_free_parts = encoders
    image_width, text_width = train_split.images.shape[1], train_split.captions.shape[1]
    baseline = None
    if kind == cf.HEAD_KIND:
        alignment, classifier, units = caption_free_parts
        vision_head, text_head = cf.build_heads(image_width, text_width, alignment, classifier, units,
                                                IMAGE_FEATURES, TEXT_FEATURES)
    elif kind == linear_heads.HEAD_KIND:
        vision_head, text_head = linear_heads.build_heads(image_width, text_width, config.embedding_dim,
                                                          linear_heads.LinearHeads.from_extra(config.extra),
                                                          IMAGE_FEATURES, TEXT_FEATURES)
        if val_split is not None:
            baseline = caption_free_recall(config, tokenizer, _backbone(text), val_split)
    else:
        return _head(image_width, config, "vision", IMAGE_FEATURES), _head(text_width, config, "text", TEXT_FEATURES), None
    checkpoint = (RetrievalCheckpoint(vision_head, text_head, val_split, patience, baseline)
                  if val_split is not None else None)
    return vision_head, text_head, checkpoint


def _adapt_text_student(text: keras.Model, tokenizer, train_images, val_images, config: EncoderConfig) -> dict:
    """Fit the student text backbone further on the training captions (in place; see
    models/encoders/distillation/adaptation.py); the record for history.json."""
    from beamlens.models.encoders.distillation.adaptation import adapt_student  # noqa: PLC0415

    captions = [caption for image in train_images for caption in image.captions]
    held_out = [caption for image in (val_images or []) for caption in image.captions]
    result = adapt_student(_backbone(text), tokenizer, captions, held_out or captions[:1000])
    config.extra["text_student"] = {"adapted_to_training_captions": result.training_captions}
    return {"student_adaptation": result.record()}


def train_heads(config: EncoderConfig, train_images, val_images, tokenizer, options, callbacks, cache_dir: str):
    """Fit the two heads on cached frozen-backbone features; return (vision, text, history).

    ``options`` is a models.training.end_to_end.TrainOptions; ``callbacks`` come from the same module, so
    both training paths stop and cut the learning rate by the same rules. With caption-free or
    linear heads the loss-based early stopping is replaced by a :class:`RetrievalCheckpoint` on
    ``val_images`` (linear heads: epoch 0 is the caption-free model's R@k, the bar to clear).
    """
    from beamlens.models.encoders import caption_free as cf, linear_heads  # noqa: PLC0415

    kind = config.extra.get("head")
    if kind == cf.HEAD_KIND:
        vision, text, parts = _caption_free_encoders(config, tokenizer)
        alignment, classifier, units = parts
    elif kind == linear_heads.HEAD_KIND:
        (vision, text), parts = _linear_encoders(config), None
    else:
        vision, text, parts = build_vision_encoder(config), build_text_encoder(config), None
    adapted = (_adapt_text_student(text, tokenizer, train_images, val_images, config)
               if kind == linear_heads.HEAD_KIND and config.text_backbone == STUDENT_BACKBONE else {})
    vision_backbone, text_backbone = _backbone(vision), _backbone(text)
    train_split = FeatureSplit("train", vision_backbone, text_backbone, train_images, tokenizer, config, cache_dir)
    val_split = (FeatureSplit("val", vision_backbone, text_backbone, val_images, tokenizer, config, cache_dir)
                 if val_images else None)
    vision_head, text_head, checkpoint = _heads(kind, config, tokenizer, (vision, text, parts), train_split, val_split,
                                                options.patience)
    if checkpoint is not None:
        callbacks = [c for c in callbacks if not isinstance(c, (keras.callbacks.EarlyStopping,
                                                                keras.callbacks.ReduceLROnPlateau))] + [checkpoint]
    outputs = [text_head.output, vision_head.output]
    loss = make_loss(config.embedding_dim, config.temperature, config.target_identity_weight)
    anchor_weight = float(getattr(options, "anchor_weight", 0.0)) if kind == cf.HEAD_KIND else 0.0
    if anchor_weight:
        # Frozen copies of the starting (caption-free) heads: the loss adds anchor_weight x
        # (1 - cos) between each trained vector and its caption-free vector.
        start_vision, start_text = cf.build_heads(train_split.images.shape[1], train_split.captions.shape[1], alignment,
                                                  classifier, units, IMAGE_FEATURES, TEXT_FEATURES,
                                                  names=("vision_head_start", "text_head_start"))
        start_vision.trainable = start_text.trainable = False
        outputs += [start_text(text_head.input), start_vision(vision_head.input)]
        loss = anchored_loss(loss, config.embedding_dim, anchor_weight)
    both = keras.layers.Concatenate(name="caption_image")(outputs)
    heads = keras.Model({IMAGE_FEATURES: vision_head.input, TEXT_FEATURES: text_head.input}, both, name="dual_heads")
    heads.compile(optimizer=keras.optimizers.AdamW(options.learning_rate, weight_decay=options.weight_decay),
                  loss=loss)
    history = heads.fit(train_split.dataset(options.batch_size, options.seed, shuffle=True),
                        validation_data=val_split.dataset(options.batch_size, options.seed, shuffle=False) if val_split else None,
                        epochs=options.epochs, callbacks=callbacks, shuffle=False, verbose=0)  # shuffled here
    _set_head_weights(vision, vision_head)
    _set_head_weights(text, text_head)
    record = {k: [float(v) for v in values] for k, values in history.history.items()} | adapted
    if checkpoint is not None:
        record.update(checkpoint.report())
    return vision, text, record
