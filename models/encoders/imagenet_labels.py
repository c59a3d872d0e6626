"""The 1,000 ImageNet-1k class names, in the order of the classifier outputs.

Why a file of our own: Keras downloads its class index at run time (no network here), and no
installed package carries the list. ``models/encoders/data/imagenet_labels.txt`` holds one class per line,
``<WordNet id>\\t<comma-separated names>``, in the standard index order (synset ids sorted, as
every ImageNet-1k classifier uses). It was written from the plain-text files in the Apache-2.0
``timm`` wheel (``timm/data/_info/imagenet_synsets.txt`` + ``imagenet_synset_to_lemma.txt``).
"""

from __future__ import annotations

import functools
import os

from beamlens.models.errors import BeamlensError

LABELS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "imagenet_labels.txt")
NUM_CLASSES = 1000


@functools.lru_cache(maxsize=1)
def _rows() -> tuple[tuple[str, str], ...]:
    try:
        with open(LABELS_PATH, encoding="utf-8") as stream:
            rows = tuple(tuple(line.rstrip("\n").split("\t", 1)) for line in stream if line.strip())
    except OSError as error:
        raise BeamlensError(f"the ImageNet label list is missing ({LABELS_PATH}): {error}") from None
    if len(rows) != NUM_CLASSES or any(len(row) != 2 for row in rows):
        raise BeamlensError(f"{LABELS_PATH} must hold {NUM_CLASSES} lines '<wnid>\\t<names>'")
    return rows  # type: ignore[return-value]


def class_names() -> list[str]:
    """Full names per class, e.g. ``"tabby, tabby cat"``."""
    return [names for _, names in _rows()]


def short_names() -> list[str]:
    """The first name of each class, e.g. ``"tabby"``."""
    return [names.split(",")[0].strip() for _, names in _rows()]


def wordnet_ids() -> list[str]:
    return [wnid for wnid, _ in _rows()]
