"""Caption-free text-to-image search: image and text vectors in one space with no captioned data.

No CLIP-like model installs offline, but two pretrained parts do: an ImageNet classifier
(EfficientNet-Lite0) and a sentence encoder (MiniLM). They meet in the sentence encoder's space:

* a **class vector** per ImageNet class: the mean of the unit MiniLM embeddings of a few prompt
  templates filled with its name ("a photo of a {}.", "a close-up photo of a {}.", ...), unit length;
* an **image vector**: the classifier's class probabilities at temperature ``T``,
  ``softmax(logits / T)``, weighting the class vectors — a description of the photo in sentence
  space;
* a **text vector**: MiniLM's embedding of the query itself.

Both are centred on the mean class vector and projected to ``embedding_dim`` (128) by a PCA fitted
on the 1,000 class vectors only (no photo, no caption enters any fit), then L2-normalised.
Because the image side is ``probabilities @ ((E - mean) @ U)`` (probabilities sum to one) and the
text side ``(t - mean) @ U``, each is a backbone followed by one Dense layer: the heads below are
plain Keras layers, trainable from exactly this starting point (``models.training.heads``).

Each head also has a residual branch (``Dense(gelu) -> Dense``, the output layer zero-initialised)
on the backbone features, so it computes the caption-free function at epoch 0 and training can
add what the class names miss (colours, counts, layouts) without first having to undo random
heads.

Choices and why (measured on the two coco-mini-cc splits, text -> image R@10; see README):

* ``T = 3``: modern ImageNet networks are over-confident (temperature scaling calibrates them at
  T of about 1.5-3, Guo et al. 2017), and a COCO photo shows several things while the classifier
  was trained to name one. R@10 is flat for T in 2..6 on both splits and drops at T = 1 (the raw
  probabilities) and at large T (logits used linearly).
* first class name only, 8 templates: synonyms ("tabby, tabby cat") lowered R@10 by ~0.03 on both
  splits (rare synonyms drag the class vector away from everyday words); the number of
  templates changed little.
* PCA to 128 fitted on the class vectors: costs <= 0.01 R@k against the full 384-d.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from beamlens.models.errors import BeamlensError
from beamlens.models.io import cache, files

IMAGE_BACKBONE, TEXT_BACKBONE = "efficientnet_lite0", "minilm"
HEAD_KIND = "caption_free"  # EncoderConfig.extra["head"]
DEFAULT_TEMPLATES = (
    "a photo of a {}.", "a {}.", "a picture of a {}.", "a close-up photo of a {}.", "a photo of the {}.",
    "a photo of a small {}.", "a photo of a large {}.", "there is a {} in the picture.",
)
DEFAULT_TEMPERATURE = 3.0
DEFAULT_RESIDUAL_UNITS = 512
PROMPT_MAX_TOKENS = 16  # the cache key: prompts are short, so any length from 16 on gives the same vectors


# ----------------------------------------------------------------------------- prompts and classes

def load_templates(path: str) -> list[str]:
    """Prompt templates, one a line, each with ``{}`` where the class name goes; ``#`` comments."""
    try:
        with open(path, encoding="utf-8") as stream:
            lines = [line.strip() for line in stream]
    except OSError as error:
        raise BeamlensError(f"cannot read the prompt file {path}: {error.strerror or error}") from None
    templates = [line for line in lines if line and not line.startswith("#")]
    if not templates:
        raise BeamlensError(f"the prompt file {path} has no prompts: give one template a line, e.g. 'a photo of a {{}}.'")
    missing = [t for t in templates if "{}" not in t]
    if missing:
        raise BeamlensError(f"the prompt file {path}: template {missing[0]!r} has no {{}} for the class name")
    return templates


def load_class_names(path: str | None = None) -> list[str]:
    """One name per ImageNet class, in classifier order: the bundled list's first names, or a file.

    A file has one line per class (``name`` or ``wnid<TAB>name, synonym, ...``: the first name is
    used), exactly as many lines as the classifier has outputs."""
    from beamlens.models.encoders.imagenet_labels import NUM_CLASSES, short_names  # noqa: PLC0415

    if path is None:
        return short_names()
    try:
        with open(path, encoding="utf-8") as stream:
            rows = [line.rstrip("\n") for line in stream if line.strip() and not line.startswith("#")]
    except OSError as error:
        raise BeamlensError(f"cannot read the class-name file {path}: {error.strerror or error}") from None
    if not rows:
        raise BeamlensError(f"the class-name file {path} has no classes (expected {NUM_CLASSES} lines, one per ImageNet class)")
    if len(rows) != NUM_CLASSES:
        raise BeamlensError(f"the class-name file {path} has {len(rows)} classes; the classifier has {NUM_CLASSES} "
                            "(one line per class, in the classifier's order)")
    names = [row.split("\t", 1)[-1].split(",")[0].strip() for row in rows]
    empty = [i for i, name in enumerate(names) if not name]
    if empty:
        raise BeamlensError(f"the class-name file {path}: line {empty[0] + 1} has no name")
    return names


def prompts(names: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Class-major: the prompts of class 0, then of class 1, ..."""
    return [template.format(name) for name in names for template in templates]


def _prompt_encoder(text_backbone, length: int):
    """The model that embeds the prompts: a distilled student's teacher (``model.teacher``), whose
    space the student was fitted to, else the backbone itself."""
    teacher = getattr(text_backbone, "teacher", None)
    if teacher is None:
        return text_backbone
    from beamlens.models.encoders.backbones import BackboneConfig, build_text_backbone  # noqa: PLC0415

    return build_text_backbone(BackboneConfig(teacher, max_tokens=length))


def class_vectors(text_backbone, tokenizer, names: Sequence[str], templates: Sequence[str],
                  text_backbone_weights: str | None = None, use_cache: bool = True) -> np.ndarray:
    """[C, F] unit vectors: per class, the mean of its prompts' unit sentence embeddings, re-normalised.

    The MiniLM pass over 8,000 prompts takes about a minute on 2 cores, so the result is cached
    on disk (``$BEAMLENS_CACHE`` or ``~/.cache/beamlens``), keyed by names, templates and weights."""
    from beamlens.models.encoders.backbones.minilm import weights_stamp  # noqa: PLC0415

    length = int(text_backbone.inputs[0].shape[1])  # padding is masked out: the vectors do not depend on it
    if getattr(text_backbone, "teacher", None):
        text_backbone_weights = None  # a student's weights are its own file; its teacher is the installed MiniLM
    key = {"names": list(names), "templates": list(templates), "max_tokens": min(length, PROMPT_MAX_TOKENS),
           "weights": weights_stamp(text_backbone_weights), "version": 1}
    path = cache.cache_file("class-vectors", key, ".npy")
    if use_cache and os.path.exists(path):
        try:
            cached = np.load(path)
            if cached.shape[0] == len(names):
                return cached
        except (OSError, ValueError):
            pass
    texts = prompts(names, templates)
    started = time.perf_counter()
    print(f"caption-free alignment: embedding {len(texts)} class prompts with MiniLM "
          f"({len(names)} classes x {len(templates)} templates; cached afterwards)", file=sys.stderr, flush=True)
    rows = np.asarray(_prompt_encoder(text_backbone, length).predict(tokenizer.encode_batch(texts, length), batch_size=256, verbose=0),
                      np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    vectors = rows.reshape(len(names), len(templates), -1).mean(axis=1)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    print(f"  {len(texts)} prompts in {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
    if use_cache:
        try:
            with files.atomic_path(path, ".npy") as temp:
                np.save(temp, vectors.astype(np.float32))
        except OSError:
            pass  # a read-only home: no cache, same result
    return vectors.astype(np.float32)


# ----------------------------------------------------------------------------- the alignment

@dataclass
class Alignment:
    """The fitted caption-free map: class vectors, their mean, a PCA basis, the temperature."""

    class_vectors: np.ndarray  # [C, F] unit
    mean: np.ndarray  # [F]
    basis: np.ndarray  # [F, D] orthonormal columns
    temperature: float
    explained_variance: float  # fraction of the class vectors' variance the basis keeps
    info: dict = field(default_factory=dict)

    @property
    def dimension(self) -> int:
        return int(self.basis.shape[1])

    def image_projection(self) -> np.ndarray:
        """[C, D]: class probabilities -> the centred, projected class-vector mixture."""
        return ((self.class_vectors - self.mean) @ self.basis).astype(np.float32)

    def text_kernel_and_bias(self) -> tuple[np.ndarray, np.ndarray]:
        """(``U``, ``-mean @ U``): the text projection ``(t - mean) @ U`` as one Dense layer."""
        return self.basis.astype(np.float32), (-self.mean @ self.basis).astype(np.float32)

    def describe(self) -> dict:
        return {"temperature": self.temperature, "dimension": self.dimension,
                "pca_explained_variance_on_class_vectors": round(float(self.explained_variance), 4), **self.info}


def fit_alignment(vectors: np.ndarray, dimension: int, temperature: float = DEFAULT_TEMPERATURE,
                  info: dict | None = None) -> Alignment:
    """Centre the class vectors and keep their first ``dimension`` principal directions."""
    if temperature <= 0:
        raise BeamlensError(f"the temperature must be positive, got {temperature}")
    width = vectors.shape[1]
    if not 1 <= dimension <= min(width, len(vectors)):
        raise BeamlensError(f"--embedding-dim must be between 1 and {min(width, len(vectors))} for caption-free "
                            f"vectors (the sentence space is {width}-d), got {dimension}")
    mean = vectors.mean(axis=0)
    centred = vectors - mean
    _, singular, rows = np.linalg.svd(centred, full_matrices=False)
    basis = rows[:dimension].T
    kept = float((singular[:dimension] ** 2).sum() / (singular ** 2).sum())
    return Alignment(vectors.astype(np.float32), mean.astype(np.float32), basis.astype(np.float32), float(temperature),
                     kept, dict(info or {}))


def classifier_weights(weights: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """EfficientNet-Lite0's ImageNet classifier (``[1280, 1000]`` kernel, ``[1000]`` bias) from its .pth."""
    from beamlens.models.encoders.backbones.efficientnet_lite import default_weights_path  # noqa: PLC0415
    from beamlens.models.encoders.backbones import require_path  # noqa: PLC0415
    from beamlens.models.encoders.backbones.torch_pickle import load_state_dict  # noqa: PLC0415

    path = require_path(weights, "efficientnet_lite0 weights file") if weights else default_weights_path()
    state = load_state_dict(path)
    try:
        return state["_fc.weight"].T.astype(np.float32), state["_fc.bias"].astype(np.float32)
    except KeyError:
        raise BeamlensError(f"{path} has no ImageNet classifier (_fc.weight / _fc.bias): caption-free vectors "
                            "need the classifier's class probabilities") from None


# ----------------------------------------------------------------------------- heads (Keras)

def vision_head(features, alignment: Alignment, classifier: tuple[np.ndarray, np.ndarray],
                residual_units: int = DEFAULT_RESIDUAL_UNITS):
    """Pooled image features -> unit vector; at initialisation exactly the caption-free image vector."""
    import keras  # noqa: PLC0415

    kernel, bias = classifier
    classes = kernel.shape[1]
    logits_layer = keras.layers.Dense(classes, name="vision_classifier", trainable=False)
    logits = logits_layer(features)
    logits_layer.set_weights([kernel, bias])
    scaled = keras.layers.Rescaling(1.0 / alignment.temperature, name="vision_temperature")(logits)
    probabilities = keras.layers.Softmax(name="vision_class_probabilities")(scaled)
    project = keras.layers.Dense(alignment.dimension, use_bias=False, name="vision_projection")
    base = project(probabilities)
    project.set_weights([alignment.image_projection()])
    return _residual_and_normalise(features, base, alignment.dimension, residual_units, "vision")


def text_head(features, alignment: Alignment, residual_units: int = DEFAULT_RESIDUAL_UNITS):
    """Unit sentence embedding -> unit vector; at initialisation exactly the caption-free text vector."""
    import keras  # noqa: PLC0415

    project = keras.layers.Dense(alignment.dimension, name="text_projection")
    base = project(features)
    project.set_weights(list(alignment.text_kernel_and_bias()))
    return _residual_and_normalise(features, base, alignment.dimension, residual_units, "text")


def _residual_and_normalise(features, base, dimension: int, residual_units: int, prefix: str):
    import keras  # noqa: PLC0415

    if residual_units:
        hidden = keras.layers.Dense(residual_units, activation="gelu", name=f"{prefix}_residual_hidden")(features)
        delta = keras.layers.Dense(dimension, kernel_initializer="zeros", name=f"{prefix}_residual")(hidden)
        base = keras.layers.Add(name=f"{prefix}_add")([base, delta])
    return keras.layers.UnitNormalization(name=f"{prefix}_l2")(base)


def build_encoders(vision_backbone, text_backbone, image_size: int, max_tokens: int, alignment: Alignment,
                   classifier: tuple[np.ndarray, np.ndarray], residual_units: int = DEFAULT_RESIDUAL_UNITS):
    """(vision encoder, text encoder): backbones under the caption-free heads, as models.encoders.towers names them.

    Vision: raw 0..255 pixels ``[None, S, S, 3]`` -> ``[None, D]``; text: ``ids`` / ``mask`` /
    ``segment_ids`` ``[None, L]`` -> ``[None, D]``. Built-in layers only (RunInference, TFLite)."""
    import keras  # noqa: PLC0415

    from beamlens.models.encoders.towers import BERT_INPUTS  # noqa: PLC0415

    pixels = keras.Input((image_size, image_size, 3), dtype="float32", name="image")
    vision = keras.Model(pixels, vision_head(vision_backbone(pixels), alignment, classifier, residual_units),
                         name="vision_encoder")
    inputs = {name: keras.Input((max_tokens,), dtype="int32", name=name) for name in BERT_INPUTS}
    text = keras.Model(inputs, text_head(text_backbone(inputs), alignment, residual_units), name="text_encoder")
    return vision, text


def build_heads(image_width: int, text_width: int, alignment: Alignment, classifier, residual_units: int,
                image_input: str, text_input: str, names: tuple[str, str] = ("vision_head", "text_head")):
    """(vision head, text head) on feature inputs: the same layers, by name, as :func:`build_encoders`."""
    import keras  # noqa: PLC0415

    image = keras.Input((image_width,), dtype="float32", name=image_input)
    text = keras.Input((text_width,), dtype="float32", name=text_input)
    return (keras.Model(image, vision_head(image, alignment, classifier, residual_units), name=names[0]),
            keras.Model(text, text_head(text, alignment, residual_units), name=names[1]))


def alignment_for(text_backbone, tokenizer, dimension: int, temperature: float = DEFAULT_TEMPERATURE,
                  templates: Sequence[str] = DEFAULT_TEMPLATES, class_names_file: str | None = None,
                  text_backbone_weights: str | None = None) -> Alignment:
    """Class vectors from ``text_backbone`` (cached), then the PCA fit: everything from class names."""
    names = load_class_names(class_names_file)
    vectors = class_vectors(text_backbone, tokenizer, names, templates, text_backbone_weights)
    return fit_alignment(vectors, dimension, temperature,
                         {"templates": list(templates), "class_names": class_names_file or "bundled ImageNet first names",
                          "classes": len(names)})


def head_config(alignment: Alignment, residual_units: int) -> dict:
    """What encoder_config.json records under ``extra`` for these heads."""
    return {"head": HEAD_KIND, "caption_free": {**alignment.describe(), "residual_units": residual_units}}
