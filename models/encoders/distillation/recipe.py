"""Fit the static student to MiniLM: the teacher's unit vectors of caption-like text are the targets.

Why this recipe (measured on the shared coco-mini-cc photos through the caption-free heads, and on
the demo's held-out split; see README "Text tower"):

* **text**: generated caption-like sentences (sentences.py), the caption-free class prompts, the
  whole-word vocabulary entries (one-word queries) and captions of the synthetic generator at a
  seed the demo never uses. No evaluation caption enters the fit.
* **start**: Model2Vec's (student.initial_weights): MiniLM's vector of each lone token, PCA-reduced,
  so rare words the sentences never show still land near where MiniLM puts them.
* **loss**: 1 - cosine to the teacher's unit vector; Adam, 6 epochs, learning rate 3e-3
  cosine-decayed (a constant 2e-3 peaked at epoch 5 of 10, then oscillated).

The teacher's pass over the text takes about 7 minutes on two cores and the fit about 6, once:
:func:`student_weights` caches both, keyed by the recipe and the teacher's weights file
(models/io/cache.py).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from beamlens.models.encoders.distillation import sentences
from beamlens.models.encoders.distillation.student import build_student, initial_weights, layer_weights, set_layer_weights
from beamlens.models.io import cache, files

STUDENT_FILE_FORMAT = 1
LENGTH_BUCKETS = (8, 12, 16, 24)
TEACHER_WIDTH = 384  # MiniLM's sentence vector


@dataclass(frozen=True)
class DistillationRecipe:
    """Everything that decides the fitted weights (the cache key)."""

    width: int = 256
    epochs: int = 6
    learning_rate: float = 3e-3  # cosine-decayed to 5% over the fit
    batch_size: int = 256
    generated_sentences: int = 20000
    synthetic_images: int = 3000  # two captions each, from the synthetic generator at synthetic_seed
    synthetic_seed: int = 7  # the demo corpus uses seed 0
    seed: int = 1
    max_tokens: int = 24  # the student's training length; it runs at any length
    word_max_tokens: int = 8  # one vocabulary word: [CLS] pieces [SEP]
    vocabulary_words: bool = True
    class_prompts: bool = True
    version: int = 2  # 2: cosine-decayed learning rate


@dataclass
class Teacher:
    """MiniLM (short inputs cost less at ``word_max_tokens``) and its WordPiece tokenizer."""

    tokenizer: object
    weights: str | None = None
    models: dict = dataclasses.field(default_factory=dict)  # length -> MiniLM built at that length

    @classmethod
    def load(cls, weights: str | None = None) -> "Teacher":
        from beamlens.models.encoders.backbones.minilm import vocab_path  # noqa: PLC0415
        from beamlens.models.encoders.bert_tokenizer import BertTokenizer  # noqa: PLC0415

        return cls(BertTokenizer.load(vocab_path(weights)), weights)

    def at_length(self, length: int):
        from beamlens.models.encoders.backbones import BackboneConfig, build_text_backbone  # noqa: PLC0415

        if length not in self.models:
            self.models[length] = build_text_backbone(BackboneConfig("minilm", max_tokens=length, weights=self.weights))
        return self.models[length]

    def embed(self, texts: Sequence[str], length: int) -> np.ndarray:
        """[N, 384] unit vectors of ``texts`` cut at ``length`` tokens. Each text runs at the shortest
        of LENGTH_BUCKETS that holds it (padding is masked out, so the vectors are the same) because
        most captions are half the full length and MiniLM's cost grows with it."""
        counts = [min(len(self.tokenizer.tokenize(text)) + 2, length) for text in texts]
        buckets = sorted({b for b in LENGTH_BUCKETS if b < length} | {length})
        bucket_of = np.searchsorted(buckets, counts)  # the first bucket that holds each text
        out = np.zeros((len(texts), TEACHER_WIDTH), np.float32)
        for index, bucket in enumerate(buckets):
            rows = np.flatnonzero(bucket_of == index)
            if len(rows):
                print(f"  teacher: {len(rows)} texts at {bucket} tokens", file=sys.stderr, flush=True)
                encoded = self.tokenizer.encode_batch([texts[r] for r in rows], bucket)
                out[rows] = self.at_length(bucket).predict(encoded, batch_size=256, verbose=0)
        return out

    def lone_token_vectors(self) -> np.ndarray:
        """[V, 384]: MiniLM's sentence vector of ``[CLS] token [SEP]`` for every vocab id."""
        ids = np.arange(self.tokenizer.size, dtype=np.int32)
        cls_id, sep_id = self.tokenizer.id_of("[CLS]"), self.tokenizer.id_of("[SEP]")
        rows = np.stack([np.full_like(ids, cls_id), ids, np.full_like(ids, sep_id)], axis=1)
        model_inputs = {"ids": rows, "mask": np.ones_like(rows), "segment_ids": np.zeros_like(rows)}
        return np.asarray(self.at_length(3).predict(model_inputs, batch_size=512, verbose=0), np.float32)


def training_texts(recipe: DistillationRecipe, tokens: Sequence[str]) -> tuple[list[str], list[str]]:
    """(sentences at the full length, single words at the short length), both deterministic."""
    from beamlens.models.corpora.synthetic import captions_for, scene_for  # noqa: PLC0415
    from beamlens.models.encoders import caption_free  # noqa: PLC0415
    from beamlens.models.encoders.imagenet_labels import short_names  # noqa: PLC0415

    nouns = list(sentences.COCO_NAMES) + [name.lower() for name in short_names()]
    texts = sentences.caption_like(recipe.generated_sentences, nouns, recipe.seed)
    if recipe.class_prompts:
        texts += caption_free.prompts(short_names(), caption_free.DEFAULT_TEMPLATES)
    for index in range(recipe.synthetic_images):
        scene, rng = scene_for(recipe.synthetic_seed, index)
        texts += [caption for caption, _ in captions_for(scene, 2, rng)]
    words = sentences.vocabulary_words(tokens) if recipe.vocabulary_words else []
    return texts, words


def _print_epochs(total: int):
    import keras  # noqa: PLC0415

    class EpochLine(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            cosine = 1.0 - float((logs or {}).get("loss", float("nan")))
            print(f"  student epoch {epoch + 1}/{total}: mean cosine to MiniLM {cosine:.4f}", file=sys.stderr, flush=True)

    return EpochLine()


def teacher_targets(recipe: DistillationRecipe, teacher: Teacher, texts: Sequence[str],
                    words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(the teacher's unit vectors of ``texts`` then ``words``, its lone-token vectors): the slow
    half of a distillation (about 7 minutes on 2 cores), so :func:`student_weights` caches it."""
    started = time.perf_counter()
    print(f"distilling MiniLM into the static student: teacher vectors of {len(texts)} sentences, "
          f"{len(words)} words and every token (once; cached)", file=sys.stderr, flush=True)
    targets = np.concatenate([teacher.embed(texts, recipe.max_tokens), teacher.embed(words, recipe.word_max_tokens)])
    lone = teacher.lone_token_vectors()
    print(f"  teacher done in {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
    return targets, lone


def one_minus_cosine(truth, guess):
    """The distillation loss: 1 - cosine of the student's unit vector to the teacher's."""
    import keras  # noqa: PLC0415

    return 1.0 - keras.ops.sum(truth * guess, axis=-1)


def fit_student(recipe: DistillationRecipe, tokenizer, texts: Sequence[str], targets: np.ndarray,
                lone_token_vectors: np.ndarray):
    """Start from the lone-token vectors, fit to the targets with a cosine-decayed learning rate
    (a constant one oscillated after half the epochs); returns the model."""
    import keras  # noqa: PLC0415

    started = time.perf_counter()
    student = build_student(tokenizer.size, recipe.max_tokens, recipe.width, int(targets.shape[1]))
    set_layer_weights(student, initial_weights(lone_token_vectors, recipe.width))
    print(f"  fitting the student: {len(texts)} texts, {recipe.epochs} epochs", file=sys.stderr, flush=True)
    inputs = tokenizer.encode_batch(list(texts), recipe.max_tokens)
    keras.utils.set_random_seed(recipe.seed)
    steps = recipe.epochs * -(-len(texts) // recipe.batch_size)
    learning_rate = keras.optimizers.schedules.CosineDecay(recipe.learning_rate, steps, alpha=0.05)
    student.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=one_minus_cosine)
    student.fit(inputs, targets, batch_size=recipe.batch_size, epochs=recipe.epochs, shuffle=True, verbose=0,
                callbacks=[_print_epochs(recipe.epochs)])
    print(f"  student fitted in {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
    return student


def save_student(student, path: str, recipe: DistillationRecipe) -> str:
    """An .npz of the layer weights plus the recipe, written atomically."""
    payload = {f"weight:{name}": value for name, value in layer_weights(student).items()}
    payload["format"] = np.asarray(STUDENT_FILE_FORMAT)
    payload["recipe"] = np.asarray(repr(dataclasses.asdict(recipe)))
    with files.atomic_path(path, ".npz") as temp:
        np.savez(temp, **payload)
    return path


def load_student_weights(path: str) -> dict[str, np.ndarray]:
    """The layer weights of a file :func:`save_student` wrote; a clear error for anything else."""
    from beamlens.models.errors import BeamlensError  # noqa: PLC0415

    try:
        with np.load(path) as stored:
            if int(stored.get("format", -1)) != STUDENT_FILE_FORMAT:
                raise BeamlensError(f"{path}: not a beamlens text-student file (format {STUDENT_FILE_FORMAT})")
            return {key.removeprefix("weight:"): stored[key] for key in stored.files if key.startswith("weight:")}
    except (OSError, ValueError) as error:
        raise BeamlensError(f"cannot read the text-student weights {path}: {error}") from None


TEXT_FIELDS = ("generated_sentences", "synthetic_images", "synthetic_seed", "seed", "max_tokens", "word_max_tokens",
               "vocabulary_words", "class_prompts")  # what decides the teacher's targets


def _targets_path(recipe: DistillationRecipe, stamp: dict) -> str:
    key = {"texts": {name: getattr(recipe, name) for name in TEXT_FIELDS}, "teacher": stamp, "version": 1}
    return cache.cache_file("teacher-targets", key, ".npz")


def _read_targets(path: str, rows: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(targets, lone-token vectors) from a cache file holding ``rows`` targets, else None."""
    if not os.path.exists(path):
        return None
    with np.load(path) as stored:
        if stored["targets"].shape[0] != rows:
            return None
        return stored["targets"], stored["lone"]


def _cached_targets(recipe: DistillationRecipe, teacher: Teacher, texts: list[str], words: list[str],
                    stamp: dict) -> tuple[np.ndarray, np.ndarray]:
    path = _targets_path(recipe, stamp)
    stored = _read_targets(path, len(texts) + len(words))
    if stored is not None:
        return stored
    targets, lone = teacher_targets(recipe, teacher, texts, words)
    with files.atomic_path(path, ".npz") as temp:
        np.savez(temp, targets=targets, lone=lone)
    return targets, lone


def recipe_sample(recipe: DistillationRecipe, teacher: Teacher, count: int,
                  teacher_weights: str | None = None) -> tuple[list[str], np.ndarray]:
    """A seeded sample of ``count`` of the recipe's sentences and the teacher's unit vectors of them
    (from the distillation's cached targets when they are there, else embedded now): what an
    adaptation mixes in so the student keeps the rest of its language."""
    from beamlens.models.encoders.backbones.minilm import weights_stamp  # noqa: PLC0415

    texts, words = training_texts(recipe, teacher.tokenizer.tokens)
    rows = np.sort(np.random.default_rng(recipe.seed).permutation(len(texts))[:count])
    sample = [texts[row] for row in rows]
    stored = _read_targets(_targets_path(recipe, weights_stamp(teacher_weights)), len(texts) + len(words))
    if stored is not None:
        return sample, np.asarray(stored[0][rows])
    return sample, teacher.embed(sample, recipe.max_tokens)


def student_weights(recipe: DistillationRecipe = DistillationRecipe(), teacher_weights: str | None = None) -> str:
    """The path of the fitted student for ``recipe``: from the cache, or distilled now and cached
    (the teacher's targets too, so a changed fitting recipe refits in minutes)."""
    from beamlens.models.encoders.backbones.minilm import weights_stamp  # noqa: PLC0415

    stamp = weights_stamp(teacher_weights)
    path = cache.cache_file("text-student", {"recipe": dataclasses.asdict(recipe), "teacher": stamp}, ".npz")
    if os.path.exists(path):
        return path
    teacher = Teacher.load(teacher_weights)
    texts, words = training_texts(recipe, teacher.tokenizer.tokens)
    targets, lone = _cached_targets(recipe, teacher, texts, words, stamp)
    student = fit_student(recipe, teacher.tokenizer, texts + words, targets, lone)
    save_student(student, path, recipe)
    print(f"  student cached at {path}", file=sys.stderr, flush=True)
    return path
