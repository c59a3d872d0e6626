"""Which heads to fit on thousands of captioned photos: each lever's dev R@1/5/10 on Flickr8k.

    .venv/bin/python -m benchmarks.head_recipes [--workdir build/head-recipes] [--epochs 60]

The backbones stay frozen (EfficientNet-Lite0, MiniLM), so their features are computed once
(Flickr8k train: 6,000 photos, 30,000 captions; dev: 1,000 photos, 5,000 captions; about 5 minutes
on 2 cores) and cached in the work folder; then each recipe fits its two heads and is scored on
dev (text -> image, exact search over the 1,000 dev photos, the best of every third epoch). An
"epoch" here is one caption per photo, each batch of distinct photos, so 5 epochs see each
caption about once. Flickr8k features and everything fitted on them stay in the work folder
(build/, ignored by git).

This is the measurement behind ``beamlens train``'s linear heads (models/encoders/linear_heads.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FLICKR8K = Path(os.environ.get("BEAMLENS_SHARED", ROOT.parent / "shared")) / "testdata" / "flickr8k"


@dataclass(frozen=True)
class Recipe:
    image: str = "pooled"  # "pooled" (the 1280-d head) or "multi_scale" (1904-d)
    image_dropout: float = 0.0
    text_dropout: float = 0.0
    hidden: int = 0  # > 0: a GELU branch of this width added to the linear map
    batch: int = 256
    learning_rate: float = 1e-3
    temperature: float = 0.05
    learn_temperature: bool = False


RECIPES = {
    "linear maps, no dropout (batch 256, lr 1e-3)": Recipe(),
    "+ trainable temperature": Recipe(learn_temperature=True),
    "+ 1024-unit GELU branch, dropout 0.5 inside it": Recipe(hidden=1024, image_dropout=0.0),
    "input dropout 0.5 image / 0.1 text": Recipe(image_dropout=0.5, text_dropout=0.1),
    "input dropout 0.5 / 0.2, batch 512, lr 2e-3": Recipe(image_dropout=0.5, text_dropout=0.2, batch=512, learning_rate=2e-3),
    "the same, multi-scale image features (train's default)": Recipe(image="multi_scale", image_dropout=0.5,
                                                                     text_dropout=0.2, batch=512, learning_rate=2e-3),
}


def cache_features(work: Path) -> None:
    """Multi-scale image features (the first 1280 columns are the pooled head) and MiniLM caption vectors."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from beamlens.models.corpora.coco import load_coco_captions  # noqa: PLC0415
    from beamlens.models.encoders.backbones import BackboneConfig, build_image_backbone, build_text_backbone  # noqa: PLC0415
    from beamlens.models.encoders.bert_tokenizer import BertTokenizer, backbone_vocab_path  # noqa: PLC0415
    from beamlens.models.training.heads import cache_image_features, cache_text_features  # noqa: PLC0415

    image_backbone = build_image_backbone(BackboneConfig("efficientnet_lite0", image_size=224,
                                                         options={"pooling": "multi_scale"}))
    text_backbone = build_text_backbone(BackboneConfig("minilm", max_tokens=24))
    tokenizer = BertTokenizer.load(backbone_vocab_path("minilm"))
    for split in ("train", "dev"):
        if (work / f"{split}-owner.npy").exists():
            continue
        images = [im for im in load_coco_captions(str(FLICKR8K / split / "annotations" / "captions.json"),
                                                  str(FLICKR8K / split / "images")) if im.captions]
        cache_image_features(image_backbone, [im.path for im in images], 224, str(work / f"{split}-images.npy"))
        captions = [c for im in images for c in im.captions]
        cache_text_features(text_backbone, captions, tokenizer, 24, str(work / f"{split}-captions.npy"))
        owner = np.repeat(np.arange(len(images)), [len(im.captions) for im in images])
        np.save(work / f"{split}-owner.npy", owner)  # last: marks the split complete


def _tower(width: int, dropout: float, hidden: int):
    import keras  # noqa: PLC0415

    inputs = keras.Input((width,))
    x = keras.layers.Dropout(dropout)(inputs) if dropout else inputs
    out = keras.layers.Dense(128)(x)
    if hidden:
        branch = keras.layers.Dropout(0.5)(keras.layers.Dense(hidden, activation="gelu")(x))
        out = keras.layers.Add()([out, keras.layers.Dense(128)(branch)])
    return keras.Model(inputs, keras.layers.UnitNormalization()(out))


def recall(captions: np.ndarray, images: np.ndarray, owner: np.ndarray) -> dict[int, float]:
    """Text -> image R@1/5/10 with the project's exact search and metric (models/knn.py)."""
    from beamlens.models.knn import exact_knn, top_k_accuracy  # noqa: PLC0415

    ranked = exact_knn(captions, images, 10)[0]
    return top_k_accuracy(ranked.tolist(), owner.tolist(), (1, 5, 10))


def fit(work: Path, recipe: Recipe, epochs: int, seed: int = 0) -> tuple[dict[int, float], int, float]:
    """(best dev R@k, its epoch, seconds) of one recipe."""
    import tensorflow as tf  # noqa: PLC0415

    columns = slice(None) if recipe.image == "multi_scale" else slice(0, 1280)
    train_images = np.load(work / "train-images.npy")[:, columns]
    dev_images = np.load(work / "dev-images.npy")[:, columns]
    train_captions, dev_captions = np.load(work / "train-captions.npy"), np.load(work / "dev-captions.npy")
    owner, dev_owner = np.load(work / "train-owner.npy"), np.load(work / "dev-owner.npy")
    captions_of = [np.flatnonzero(owner == i) for i in range(len(train_images))]
    tf.keras.utils.set_random_seed(seed)
    vision = _tower(train_images.shape[1], recipe.image_dropout, recipe.hidden)
    text = _tower(train_captions.shape[1], recipe.text_dropout, 0)
    log_scale = tf.Variable(np.log(1 / recipe.temperature), dtype=tf.float32)
    optimizer = tf.keras.optimizers.AdamW(recipe.learning_rate, weight_decay=1e-2)
    variables = vision.trainable_variables + text.trainable_variables + ([log_scale] if recipe.learn_temperature else [])

    @tf.function
    def step(images, captions):
        with tf.GradientTape() as tape:
            logits = tf.matmul(text(captions, training=True), vision(images, training=True), transpose_b=True)
            logits *= tf.minimum(tf.exp(log_scale), 100.0)
            labels = tf.range(tf.shape(logits)[0])
            loss = (tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
                    + tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.transpose(logits)))) / 2
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    rng, started, best = np.random.default_rng(seed), time.perf_counter(), ({1: 0.0, 5: 0.0, 10: 0.0}, 0)
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(train_images))
        for start in range(0, len(order) - recipe.batch + 1, recipe.batch):
            photos = order[start:start + recipe.batch]
            chosen = np.array([rng.choice(captions_of[i]) for i in photos])
            step(train_images[photos], train_captions[chosen])
        if epoch % 3 == 0:
            scores = recall(text.predict(dev_captions, verbose=0), vision.predict(dev_images, verbose=0), dev_owner)
            if sum(scores.values()) > sum(best[0].values()):
                best = (scores, epoch)
    return best[0], best[1], time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=str(ROOT / "build" / "head-recipes"))
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    cache_features(work)
    print(f"features cached in {time.perf_counter() - started:.0f} s", flush=True)
    print(f"\n{'recipe':<58} {'R@1':>6} {'R@5':>6} {'R@10':>6}  best epoch  fit s")
    for name, recipe in RECIPES.items():
        scores, epoch, seconds = fit(work, recipe, args.epochs)
        print(f"{name:<58} " + " ".join(f"{scores[k]:6.3f}" for k in (1, 5, 10)) + f"  {epoch:10d}  {seconds:5.0f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
