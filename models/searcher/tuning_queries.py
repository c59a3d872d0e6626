"""The queries the builder measures recall on: the kind the searcher will be asked.

Why: a ``TextSearcher`` is queried with TEXT vectors, which sit elsewhere in the shared space than
the image vectors it indexes (the cross-modal "out-of-distribution query" problem, big-ann-benchmarks'
text2image track). Held-out image vectors promised recall@10 0.957 on the demo where ``beamlens
evaluate`` then measured 0.940 on captions, and 0.01-0.016 too much at 1M items (issue 26). So when
a text searcher is built, the builder embeds real query texts with ITS text embedder (the Task
Library ``TextEmbedder``, exactly what the phone computes) and tunes leaves and scoring on those.

Where the texts come from, first that applies:

1. ``--tune-captions FILE``: captions the user expects to be typed (any caption-file shape);
2. the corpus's own captions (a COCO layout carries them into the shards' metadata), one random
   caption of each sampled item;
3. caption-like texts generated from the ImageNet class names (the caption-free model's
   vocabulary): the prompt templates, and two-object phrases ("a dog next to a bicycle").

An image searcher alone keeps held-out image vectors (image queries ARE image vectors).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from beamlens.models.corpora.captions import load_caption_queries
from beamlens.models.errors import BeamlensError

#: ``tune_on`` values: "auto" tunes on text queries when a text searcher is built, "image" always
#: on held-out corpus vectors (the pre-issue-26 behaviour).
TUNE_ON = ("auto", "image")
#: With fewer corpus captions than this among the sampled items, the corpus counts as caption-free.
MIN_CORPUS_CAPTIONS = 20
#: Items sampled per wanted query when looking for corpus captions (some items have none).
SAMPLE_FACTOR = 4
PAIR_PHRASES = ("a {} next to a {}.", "a {} and a {}.", "a {} on a {}.", "a photo of a {} with a {}.")


@dataclass(frozen=True)
class QueryTexts:
    """Texts to embed as tuning queries, and where they came from (for the build report)."""

    texts: Sequence[str]
    source: str


@dataclass(frozen=True)
class TuningQueries:
    """Embedded tuning queries on disk (``.npy`` float32 [Q, d]: they cross a process boundary)."""

    vectors_path: str
    count: int
    description: str


def _sample(texts: Sequence[str], num: int, rng: np.random.Generator) -> list[str]:
    if len(texts) <= num:
        return list(texts)
    return [texts[i] for i in sorted(rng.choice(len(texts), num, replace=False))]


def caption_file_texts(path: str, num: int, seed: int) -> QueryTexts:
    """Up to ``num`` captions of a caption file, a random sample when it holds more."""
    captions = [q.caption for q in load_caption_queries(path)]
    chosen = _sample(captions, num, np.random.default_rng(seed))
    return QueryTexts(chosen, f"{len(chosen)} captions from {path}")


def corpus_caption_texts(metadata_path: str, num_items: int, num: int, seed: int) -> QueryTexts:
    """One random caption of each of up to ``num`` sampled items that have captions.

    One pass over the metadata lines, parsing only the sampled ones, so 10M items cost a read of
    the file and ``SAMPLE_FACTOR * num`` JSON parses, not a list of every caption in memory.
    """
    rng = np.random.default_rng(seed)
    wanted = set(_sample(range(num_items), SAMPLE_FACTOR * num, rng))
    found: list[str] = []
    with open(metadata_path, "rb") as stream:
        for row, line in enumerate(stream):
            if row in wanted:
                captions = [c for c in json.loads(line).get("captions") or [] if isinstance(c, str) and c.strip()]
                if captions:
                    found.append(captions[int(rng.integers(len(captions)))])
    chosen = _sample(found, num, rng)
    return QueryTexts(chosen, f"{len(chosen)} of the corpus's own captions (one per sampled item)")


def generated_texts(num: int, seed: int) -> QueryTexts:
    """Caption-like texts made from ImageNet class names: prompts and two-object phrases."""
    from beamlens.models.encoders.caption_free import DEFAULT_TEMPLATES, load_class_names  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    names = load_class_names()
    texts = []
    for _ in range(num):
        first, second = (names[i] for i in rng.choice(len(names), 2, replace=False))
        if rng.random() < 0.5:
            texts.append(DEFAULT_TEMPLATES[int(rng.integers(len(DEFAULT_TEMPLATES)))].format(first))
        else:
            texts.append(PAIR_PHRASES[int(rng.integers(len(PAIR_PHRASES)))].format(first, second))
    return QueryTexts(texts, f"{len(texts)} generated caption-like texts (ImageNet class names in prompts; "
                             "the corpus has no captions: give --tune-captions for real ones)")


def choose_texts(captions_file: Optional[str], metadata_path: str, num_items: int, num: int, seed: int) -> QueryTexts:
    """The tuning texts, from the first source that applies (see the module docstring)."""
    if captions_file:
        return caption_file_texts(captions_file, num, seed)
    corpus = corpus_caption_texts(metadata_path, num_items, num, seed)
    if len(corpus.texts) >= min(MIN_CORPUS_CAPTIONS, num):
        return corpus
    return generated_texts(num, seed)


def text_tuning_queries(text_embedder: str, texts: QueryTexts, out_path: str) -> TuningQueries:
    """Embed ``texts`` with the Task Library text embedder into ``out_path``."""
    from beamlens.models.encoders.tflite_text_embedder import embed_text  # noqa: PLC0415

    if not texts.texts:
        raise BeamlensError(f"no texts to tune the index on ({texts.source})")
    vectors = np.asarray(embed_text(text_embedder, list(texts.texts)), np.float32)
    np.save(out_path, vectors)
    name = os.path.basename(text_embedder)
    return TuningQueries(out_path, len(vectors), f"text queries: {texts.source}, embedded by {name}")
