"""tf.data input from a COCO-layout caption file, and training of the dual encoder.

Input: ``load_coco_captions`` gives images with several captions each. Every epoch pairs each
image with ONE caption drawn at random (the reference pairs a caption with its image; sampling
keeps an epoch one pass over the images while all captions are seen over the epochs). Pixels are
decoded per batch by ``models.preprocessing.preprocess_image_bytes`` (the same code Beam uses:
no train/serve skew), from a Python generator, so the corpus is never held in memory.
Images that fail to decode are found once, up front, skipped and counted.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import keras

from models.coco import CocoImage, load_coco_captions
from models.dual_encoder import build_dual_encoder, make_loss
from models.encoders import EncoderConfig
from models.errors import BeamlensError
from models.preprocessing import ImageDecodeError, preprocess_image_bytes
from models.text_tokenizer import Vocabulary


@dataclass
class TrainOptions:
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-3
    patience: int = 4
    seed: int = 0
    verbose: int = 2


@dataclass
class Split:
    """Decodable images of one split (paths + captions); ``skipped`` = file -> reason."""

    name: str
    images: list[CocoImage]
    skipped: dict[str, str]


def _read(path: str) -> bytes:
    with tf.io.gfile.GFile(path, "rb") as stream:
        return stream.read()


def load_split(name: str, captions_file: str, image_root: str | None, image_size: int) -> Split:
    """Load a caption file, drop images without captions, skip (and count) undecodable images."""
    images = [im for im in load_coco_captions(captions_file, image_root) if im.captions]
    if not images:
        raise BeamlensError(f"{name} split is empty: no captioned images in {captions_file}")
    kept, skipped = [], {}
    for image in images:
        try:
            preprocess_image_bytes(_read(image.path), image_size)
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


def make_dataset(split: Split, vocab: Vocabulary, config: EncoderConfig, batch_size: int, seed: int,
                 shuffle: bool = True) -> tf.data.Dataset:
    """Batches of ({"image": [B,S,S,3] float32, "ids": [B,L] int32}, dummy target)."""
    epoch = [0]

    def generate():
        rng = np.random.default_rng(seed + epoch[0])
        epoch[0] += 1
        order = rng.permutation(len(split.images)) if shuffle else np.arange(len(split.images))
        for i in order:
            image = split.images[int(i)]
            caption = image.captions[int(rng.integers(len(image.captions)))]
            pixels = preprocess_image_bytes(_read(image.path), config.image_size)
            yield {"image": pixels, "ids": vocab.encode(caption, config.max_tokens)}, np.float32(0)

    size, length = config.image_size, config.max_tokens
    signature = ({"image": tf.TensorSpec((size, size, 3), tf.float32), "ids": tf.TensorSpec((length,), tf.int32)},
                 tf.TensorSpec((), tf.float32))
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return dataset.batch(batch_size).prefetch(2)


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


def train(config: EncoderConfig, train_split: Split, val_split: Split | None, vocab: Vocabulary,
          options: TrainOptions):
    """Fit the dual encoder; return (vision encoder, text encoder, history dict)."""
    keras.utils.set_random_seed(options.seed)
    model, vision, text = build_dual_encoder(config)
    model.compile(optimizer=keras.optimizers.AdamW(options.learning_rate, weight_decay=options.weight_decay),
                  loss=make_loss(config.embedding_dim, config.temperature, config.target_identity_weight))
    monitor = "val_loss" if val_split else "loss"
    callbacks = [
        keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=0.3, patience=max(1, options.patience // 2)),
        keras.callbacks.EarlyStopping(monitor=monitor, patience=options.patience, restore_best_weights=True),
        _Progress(),
    ]
    train_data = make_dataset(train_split, vocab, config, options.batch_size, options.seed)
    val_data = make_dataset(val_split, vocab, config, options.batch_size, options.seed, shuffle=False) if val_split else None
    history = model.fit(train_data, validation_data=val_data, epochs=options.epochs, callbacks=callbacks,
                        verbose=0)
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


def write_json(path: str, doc: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as stream:
        json.dump(doc, stream, indent=2, sort_keys=True)
    os.replace(tmp, path)
