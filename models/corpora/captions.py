"""Caption files given by hand: the queries ``beamlens evaluate`` scores and the builder tunes on.

One reader for "a file of captions", whichever command asks: COCO ``captions_*.json`` (only its
``annotations`` are needed), a list of ``{"image_id", "caption"}`` records, or
``{image_id: caption or [captions]}``. (A COCO layout that is a corpus, images included, is read by
:mod:`models.corpora.coco`.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from beamlens.models.errors import BeamlensError


@dataclass(frozen=True)
class CaptionQuery:
    image_id: str
    caption: str


def load_caption_queries(path: str) -> list[CaptionQuery]:
    """Read held-out captions: COCO layout, a list of records, or ``{image_id: [captions]}``.

    COCO ``captions_*.json`` (``{"annotations": [{"image_id", "caption"}], ...}``) is what the
    corpus tools write; the two simpler shapes are for hand-made files. Ids become strings, as in
    the shards and the searcher metadata. Empty captions are skipped, not fatal.
    """
    try:
        with open(path, encoding="utf-8") as stream:
            data = json.load(stream)
    except FileNotFoundError:
        raise BeamlensError(f"caption file not found: {path}") from None
    except (OSError, ValueError) as error:
        raise BeamlensError(f"caption file {path} is not readable JSON: {error}") from None
    pairs: list[tuple[Any, Any]] = []
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        records: Iterable[Any] = data["annotations"]
    elif isinstance(data, list):
        records = data
    elif isinstance(data, dict):
        for image_id, captions in data.items():
            for caption in [captions] if isinstance(captions, str) else captions or []:
                pairs.append((image_id, caption))
        records = []
    else:
        raise BeamlensError(f"caption file {path}: expected COCO captions JSON, a list or an object")
    for index, record in enumerate(records):
        if not isinstance(record, dict) or "image_id" not in record or "caption" not in record:
            raise BeamlensError(f"caption file {path}: record {index} lacks image_id/caption: {str(record)[:120]}")
        pairs.append((record["image_id"], record["caption"]))
    queries = [
        CaptionQuery(str(image_id), str(caption).strip())
        for image_id, caption in pairs
        if isinstance(caption, str) and caption.strip()
    ]
    if not queries:
        raise BeamlensError(f"caption file {path} holds no captions")
    return queries
