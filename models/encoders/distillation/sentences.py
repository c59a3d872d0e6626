"""Caption-like text for distilling MiniLM into the static student, made without any caption corpus.

Why generated text: the student must answer like MiniLM on the queries people type at a photo
index ("two dogs playing with a frisbee on a beach"), but no evaluation set (COCO, the demo's
held-out split, the shared test photos) may leak into it. So the sentences are composed from
object, people, colour, relation and place words, in the shapes captions take; the object nouns
are COCO's 80 category names and the ImageNet first names the caption-free construction uses.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

COCO_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush")
PEOPLE = ("man", "woman", "boy", "girl", "child", "kid", "person", "people", "player", "group of people",
          "couple", "baby", "lady", "guy", "skier", "surfer", "chef", "tourist", "crowd", "family", "student",
          "worker", "rider", "police officer")
ADJECTIVES = ("red", "blue", "green", "yellow", "white", "black", "brown", "gray", "orange", "pink", "purple",
              "small", "large", "big", "little", "old", "young", "tall", "wooden", "metal", "plastic", "empty",
              "full", "wet", "dry", "busy", "quiet", "sunny", "dark", "bright", "colorful", "tiny", "huge", "round",
              "square", "long", "short", "open", "closed", "fresh", "dirty", "clean", "striped")
RELATIONS = ("sitting on", "standing next to", "holding", "riding", "walking with", "looking at", "playing with",
             "eating", "lying on", "carrying", "parked near", "flying over", "jumping over", "hanging from",
             "running across", "leaning against", "next to", "in front of", "behind", "on top of", "under", "near",
             "beside", "inside", "covered with", "filled with")
PLACES = ("a street", "a field", "a beach", "a kitchen", "a table", "a park", "the snow", "the water", "a room",
          "a city street", "a grassy field", "a parking lot", "the ocean", "a counter", "a plate", "a desk",
          "a sidewalk", "a road", "a building", "the sky", "a forest", "a lake", "a bathroom", "a bedroom",
          "a living room", "a restaurant", "a train station", "an airport")
COUNTS = ("two", "three", "four", "several", "many", "a few", "a couple of", "some")
_UNCHANGED_PLURALS = ("people", "sheep", "skis", "scissors", "crowd")
_IRREGULAR_PLURALS = {"person": "people", "man": "men", "woman": "women", "child": "children", "knife": "knives"}


def plural(noun: str) -> str:
    """English plural of the last word ("traffic light" -> "traffic lights")."""
    *head, last = noun.split()
    if last in _UNCHANGED_PLURALS:
        return noun
    if last in _IRREGULAR_PLURALS:
        last = _IRREGULAR_PLURALS[last]
    elif last.endswith(("s", "x", "ch", "sh")):
        last += "es"
    elif last.endswith("y") and last[-2:-1] not in tuple("aeiou"):
        last = last[:-1] + "ies"
    else:
        last += "s"
    return " ".join([*head, last])


def with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def caption_like(count: int, nouns: Sequence[str], seed: int = 0) -> list[str]:
    """``count`` sentences in six caption shapes; a third capitalised with a full stop, as people write."""
    rng = np.random.default_rng(seed)

    def pick(words: Sequence[str]) -> str:
        return words[int(rng.integers(len(words)))]

    sentences = []
    for _ in range(count):
        subject = pick(nouns) if rng.random() < 0.6 else pick(PEOPLE)
        other = pick(nouns)
        if rng.random() < 0.5:
            subject = f"{pick(ADJECTIVES)} {subject}"
        if rng.random() < 0.4:
            other = f"{pick(ADJECTIVES)} {other}"
        shapes = (
            lambda: f"{with_article(subject)} {pick(RELATIONS)} {with_article(other)}",
            lambda: f"{pick(COUNTS)} {plural(subject)} {pick(RELATIONS)} {pick(PLACES)}",
            lambda: f"{with_article(subject)} {pick(RELATIONS)} {with_article(other)} on {pick(PLACES)}",
            lambda: f"a close up of {with_article(subject)}",
            lambda: f"there is {with_article(subject)} and {with_article(other)} in {pick(PLACES)}",
            lambda: f"{with_article(subject)} {pick(RELATIONS)} {pick(PLACES)}",
        )
        sentence = shapes[int(rng.integers(len(shapes)))]()
        if rng.random() < 0.3:
            sentence = sentence[0].upper() + sentence[1:] + "."
        sentences.append(sentence)
    return sentences


def vocabulary_words(tokens: Sequence[str]) -> list[str]:
    """The whole-word entries of a WordPiece vocab (ASCII letters, two or more): one-word queries."""
    return [token for token in tokens if len(token) > 1 and token.isascii() and token.isalpha()]
