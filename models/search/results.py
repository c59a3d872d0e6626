"""Search results as plain data: what a searcher returned, readable without the Task Library.

Kept apart from the runtime wrapper so that reports, the HTML page and tests can build, compare
and serialize results without touching tflite-support. Each item in a beamlens searcher carries
UTF-8 JSON metadata ``{"id": ..., "uri": ..., "captions": [...]}``; searchers written by TFLite
Model Maker store plain strings (for example the sentence itself). Both are read here, so a user
can point ``beamlens search`` at an old Model Maker file too.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ItemMetadata:
    """The decoded metadata of one indexed item."""

    image_id: str
    uri: str = ""
    captions: tuple[str, ...] = ()


def parse_item_metadata(raw: bytes) -> ItemMetadata:
    """Decode one item's metadata bytes; anything that is not beamlens JSON is an id as text.

    Model Maker searchers store free text (a sentence, a URL, a file stem), so non-JSON metadata
    (or JSON that is not an object with an ``id``) becomes the id and the URI stays empty.
    """
    text = bytes(raw).decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        return ItemMetadata(image_id=text)
    if not isinstance(data, dict) or "id" not in data:
        return ItemMetadata(image_id=text)
    captions = data.get("captions") or ()
    if isinstance(captions, str):
        captions = (captions,)
    return ItemMetadata(
        image_id=str(data["id"]),
        uri=str(data.get("uri") or ""),
        captions=tuple(str(c) for c in captions),
    )


@dataclass(frozen=True)
class SearchHit:
    """One neighbour. ``distance`` is the Task Library's: smaller is closer (for dot_product it is
    the negative dot product); ``rank`` starts at 1."""

    rank: int
    distance: float
    image_id: str
    uri: str
    captions: tuple[str, ...]
    metadata_raw: bytes

    @classmethod
    def from_neighbor(cls, rank: int, metadata: bytes, distance: float) -> "SearchHit":
        item = parse_item_metadata(metadata)
        return cls(
            rank=rank,
            distance=float(distance),
            image_id=item.image_id,
            uri=item.uri,
            captions=item.captions,
            metadata_raw=bytes(metadata),
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["captions"] = list(self.captions)
        data["metadata_raw"] = self.metadata_raw.decode("utf-8", errors="replace")
        return data


@dataclass(frozen=True)
class SearchResults:
    """The answer to one query: hits sorted by increasing distance, and the search wall time.

    ``latency_ms`` is the time of the Task Library ``search`` call alone, measured in the process
    that ran it (so the cost of reaching an isolated worker is not counted).
    ``requested_k`` can exceed ``len(hits)``: the on-device index returns at most the points in
    the leaves it searched; ``note`` then says why (see :func:`short_result_note`), else it is None.
    """

    query: str
    modality: str
    requested_k: int
    latency_ms: float
    hits: tuple[SearchHit, ...] = field(default_factory=tuple)
    note: str | None = None

    @property
    def image_ids(self) -> list[str]:
        return [hit.image_id for hit in self.hits]

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "modality": self.modality,
            "requested_k": self.requested_k,
            "latency_ms": self.latency_ms,
            "hits": [hit.to_dict() for hit in self.hits],
            "note": self.note,
        }


@dataclass(frozen=True)
class IndexLayout:
    """What decides how many items one query can reach: the index's size and partitioning."""

    num_items: int
    num_leaves: int  # 0: no partitioner, every query scores every item
    leaves_to_search: int


def short_result_note(returned: int, k: int, layout: IndexLayout | None, unknown_why: str = "") -> str | None:
    """Why a query returned fewer than ``k`` results, or None when it returned ``k``.

    Without it, ``-k 100000`` on a 2,000-item searcher silently returns ~740: a query scores only
    the items in the partitions it searches, and the user cannot tell that from a short list. The
    advice names both build-searcher options: ``--leaves-to-search`` alone is refused there.
    ``layout`` None means the index could not be read; ``unknown_why`` then says why."""
    if returned >= k:
        return None
    head = f"returned {returned:,} of k={k}"
    if layout is None:
        return f"{head}; the index layout is unknown{': ' + unknown_why if unknown_why else ''}"
    items = f"{layout.num_items:,} item{'s' if layout.num_items != 1 else ''}"
    if layout.num_leaves == 0 or layout.leaves_to_search >= layout.num_leaves:
        return f"{head}: the index holds only {items}"
    return (
        f"{head}: the index holds {items} and a query scores only the items in the "
        f"{layout.leaves_to_search} of {layout.num_leaves} partitions it searches (leaves_to_search); "
        f"rebuild with --num-leaves {layout.num_leaves} --leaves-to-search {layout.num_leaves} to reach them all"
    )
