"""tf.data input from a COCO-layout caption file, and training of the dual encoder.

Input: ``load_coco_captions`` gives images with several captions each; every (image, caption)
pair is one example per epoch, as in the reference. Pixels are decoded by
``models.encoders.preprocessing.preprocess_image_bytes`` (the same code Beam uses: no train/serve skew)
from a Python generator, once: later epochs read a tf.data cache file on disk, so the corpus is
never held in memory and JPEGs are not decoded again every epoch.
Images that fail to decode are found once, up front, skipped and counted.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import tensorflow as tf
import keras

from beamlens.models.io import files
from beamlens.models.corpora.coco import CocoImage, load_coco_captions
from beamlens.models.encoders.dual import build_dual_encoder, make_loss
from beamlens.models.encoders.bert_tokenizer import BertTokenizer
from beamlens.models.encoders.towers import EncoderConfig, trainable_backbones
from beamlens.models.errors import BeamlensError
from beamlens.models.encoders.preprocessing import ImageDecodeError, preprocess_image_bytes
from beamlens.models.encoders.regex_tokenizer import Vocabulary


@dataclass
class TrainOptions:
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 1e-3
    patience: int = 4
    # Contrastive training from scratch first sits on a plateau (it matches backgrounds only)
    # for several epochs before it learns the objects; LR cuts and early stopping during that
    # phase end the run there (measured: stopped at top-10 0.17 instead of 0.4+).
    plateau_warmup_epochs: int = 8
    seed: int = 0
    # Caption-free heads only: weight of the pull toward the caption-free vectors (models.training.heads.anchored_loss).
    anchor_weight: float = 0.0
    verbose: int = 2
    cache_dir: str | None = None  # where decoded pixels are cached (default: a temporary folder)


@dataclass
class Split:
    """Decodable images of one split (paths + captions); ``skipped`` = file -> reason."""

    name: str
    images: list[CocoImage]
    skipped: dict[str, str]


def load_split(name: str, captions_file: str | Sequence[str], image_root: str | None | Sequence[str | None],
               image_size: int) -> Split:
    """Load caption files, drop images without captions, skip (and count) undecodable images.

    Several caption files (each with its image root, ``None`` = the COCO sibling folder) make one
    split: for example a small set of real photos beside the default corpus.
    """
    caption_files = [captions_file] if isinstance(captions_file, str) else list(captions_file)
    roots = list(image_root) if isinstance(image_root, (list, tuple)) else [image_root] * len(caption_files)
    if len(roots) != len(caption_files):
        raise BeamlensError(f"{name}: {len(caption_files)} caption files but {len(roots)} image folders; give one "
                            "image folder per caption file, in the same order")
    images = [im for file, root in zip(caption_files, roots) for im in load_coco_captions(file, root) if im.captions]
    captions_file = ", ".join(caption_files)
    if not images:
        raise BeamlensError(f"{name} split is empty: no captioned images in {captions_file}")
    kept, skipped = [], {}
    for image in images:
        try:
            preprocess_image_bytes(files.read_bytes(image.path), image_size)
            kept.append(image)
        except ImageDecodeError as error:
            skipped[image.path] = error.reason
        except (OSError, tf.errors.NotFoundError) as error:
            skipped[image.path] = f"cannot read: {error}"
    if skipped:
        print(f"{name}: skipped {len(skipped)} of {len(images)} images that failed to decode "
              f"(first: {next(iter(skipped.items()))})", file=sys.stderr)
    if not kept:
        raise BeamlensError(f"{name} split is empty: none of the {len(images)} images of {captions_file} decodes")
    return Split(name, kept, skipped)


def hold_out(split: Split, fraction: float, seed: int = 0, minimum: int = 2) -> tuple[Split, Split]:
    """(rest, held out): a seeded ``fraction`` of the images (at least ``minimum``) set aside as a
    validation split, for early stopping when no validation captions are given."""
    if not 0 < fraction < 1:
        raise BeamlensError(f"--val-fraction must be between 0 and 1, got {fraction}")
    count = max(minimum, int(round(fraction * len(split.images))))
    if count >= len(split.images):
        raise BeamlensError(f"{split.name}: {len(split.images)} images are too few to hold {count} out for "
                            "validation; give --val-captions, or more captioned images")
    order = np.random.default_rng(seed).permutation(len(split.images))
    held = set(order[:count].tolist())
    keep = [im for i, im in enumerate(split.images) if i not in held]
    val = [im for i, im in enumerate(split.images) if i in held]
    return Split(split.name, keep, split.skipped), Split(f"{split.name} (held out)", val, {})


def _caption_ids(image: CocoImage, vocab: Vocabulary, max_tokens: int) -> np.ndarray:
    return np.stack([vocab.encode(caption, max_tokens) for caption in image.captions]).astype(np.int32)


def make_dataset(split: Split, vocab: Vocabulary, config: EncoderConfig, batch_size: int, seed: int,
                 shuffle: bool = True, cache_path: str | None = None) -> tf.data.Dataset:
    """Batches of ({"image": [B,S,S,3] float32, "ids": [B,L] int32}, dummy target).

    One example per (image, caption) pair, as in the reference (an epoch sees every caption).
    Images stream from a generator and are decoded once: with ``cache_path`` the decoded uint8
    pixels go to a tf.data cache file on disk (later epochs read it instead of decoding JPEGs
    again), so memory holds only the shuffle buffers, whatever the corpus size. Pairs are shuffled
    through a buffer so that an image's own captions rarely share a batch (they would be each
    other's false negatives). Without ``shuffle`` the order is still mixed, but fixed (validation).
    """
    def generate():
        for image in split.images:
            pixels = preprocess_image_bytes(files.read_bytes(image.path), config.image_size)
            yield np.clip(np.rint(pixels), 0, 255).astype(np.uint8), _caption_ids(image, vocab, config.max_tokens)

    size, length = config.image_size, config.max_tokens
    signature = (tf.TensorSpec((size, size, 3), tf.uint8), tf.TensorSpec((None, length), tf.int32))
    images = tf.data.Dataset.from_generator(generate, output_signature=signature)
    if cache_path:
        images = images.cache(cache_path)
    buffer = min(len(split.images), 4096)
    images = images.shuffle(buffer, seed=seed, reshuffle_each_iteration=shuffle)
    pairs = images.flat_map(lambda pixels, ids: tf.data.Dataset.from_tensor_slices(ids).map(lambda one: (pixels, one)))
    pairs = pairs.shuffle(4 * batch_size, seed=seed + 1, reshuffle_each_iteration=shuffle)
    examples = pairs.map(lambda pixels, ids: ({"image": tf.cast(pixels, tf.float32), "ids": ids}, tf.constant(0.0)),
                         num_parallel_calls=tf.data.AUTOTUNE)
    batches = -(-sum(len(image.captions) for image in split.images) // batch_size)
    # A known length lets Keras show progress and stops its "input ran out of data" warning.
    return examples.batch(batch_size).apply(tf.data.experimental.assert_cardinality(batches)).prefetch(2)


class _ReduceLROnPlateauAfter(keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau that starts watching at ``start_from_epoch`` (EarlyStopping has this)."""

    def __init__(self, start_from_epoch: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.start_from_epoch = start_from_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch >= self.start_from_epoch:
            super().on_epoch_end(epoch, logs)


class _Progress(keras.callbacks.Callback):
    """One line per epoch with wall time (fit's own verbose=2 line lacks the learning rate)."""

    def __init__(self) -> None:
        super().__init__()
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        parts = " ".join(f"{k}={v:.4f}" for k, v in logs.items() if k != "learning_rate")
        print(f"epoch {epoch + 1}: {parts} lr={lr:.2e} elapsed={time.perf_counter() - self._start:.0f}s", flush=True)


def _callbacks(options: TrainOptions, monitor: str) -> list[keras.callbacks.Callback]:
    return [
        _ReduceLROnPlateauAfter(options.plateau_warmup_epochs, monitor=monitor, factor=0.3,
                                patience=max(1, options.patience // 2)),
        keras.callbacks.EarlyStopping(monitor=monitor, patience=options.patience, restore_best_weights=True,
                                      start_from_epoch=options.plateau_warmup_epochs),
        _Progress(),
    ]


def train(config: EncoderConfig, train_split: Split, val_split: Split | None, vocab: Vocabulary | BertTokenizer,
          options: TrainOptions):
    """Fit the dual encoder; return (vision encoder, text encoder, history dict).

    Both backbones frozen (pretrained ones, by default): their features are computed once and only
    the heads train (models.training.heads). Otherwise the whole dual encoder trains end to end.
    """
    keras.utils.set_random_seed(options.seed)
    monitor = "val_loss" if val_split else "loss"
    cache_dir = tempfile.mkdtemp(prefix=".beamlens-train-cache-", dir=options.cache_dir)
    try:
        if not any(trainable_backbones(config)):
            from beamlens.models.training.heads import train_heads  # noqa: PLC0415

            # No warm-up: the plateau is a from-scratch effect, while heads on pretrained features
            # overfit from the start (measured on COCO-MINI: val loss lowest after epoch 1-2).
            heads_options = dataclasses.replace(options, plateau_warmup_epochs=0)
            return train_heads(config, train_split.images, val_split.images if val_split else None, vocab,
                               heads_options, _callbacks(heads_options, monitor), cache_dir)
        if isinstance(vocab, BertTokenizer):
            raise BeamlensError(
                f"the BERT-like text backbone {config.text_backbone!r} trains frozen, beside a frozen image "
                f"backbone (features cached, heads trained): {config.image_backbone!r} would train end to end; "
                "use a pretrained image backbone such as efficientnet_lite0, without --trainable-backbones")
        model, vision, text = build_dual_encoder(config)
        model.compile(optimizer=keras.optimizers.AdamW(options.learning_rate, weight_decay=options.weight_decay),
                      loss=make_loss(config.embedding_dim, config.temperature, config.target_identity_weight))
        callbacks = _callbacks(options, monitor)
        train_data = make_dataset(train_split, vocab, config, options.batch_size, options.seed,
                                  cache_path=os.path.join(cache_dir, "train"))
        val_data = (make_dataset(val_split, vocab, config, options.batch_size, options.seed, shuffle=False,
                                 cache_path=os.path.join(cache_dir, "val")) if val_split else None)
        history = model.fit(train_data, validation_data=val_data, epochs=options.epochs, callbacks=callbacks,
                            shuffle=False, verbose=0)  # make_dataset shuffles; fit cannot shuffle tf.data
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    record = {k: [float(v) for v in values] for k, values in history.history.items()}
    return vision, text, record


def plot_history(history: dict, path: str) -> None:
    """PNG of loss (and val loss) per epoch."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axis = plt.subplots(figsize=(6, 4))
    for key in ("loss", "val_loss"):
        if key in history:
            axis.plot(range(1, len(history[key]) + 1), history[key], label=key)
    axis.set_xlabel("epoch")
    axis.set_ylabel("dual encoder loss")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


