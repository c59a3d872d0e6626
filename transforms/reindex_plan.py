"""What a re-index does with each image: carry its old vector over, embed it, or drop it.

Pure logic (no Beam, no I/O of its own), so the rule is testable on its own and identical in the
Beam join (``pipelines/reindex.py`` calls :func:`decide` once per image id after a CoGroupByKey of
the current corpus with the previous shards) and anywhere else.

The rule, per image id:

* only in the previous output               -> DELETE (the image left the corpus)
* only in the current corpus                -> EMBED_NEW (also images that failed last time)
* in both, encoder fingerprint changed      -> EMBED_MODEL (everything is re-embedded)
* in both, same size and mtime as stored    -> CARRY without reading the file (the quick check)
* in both, content hash differs / unreadable-> EMBED_CHANGED
* in both, same bytes                       -> CARRY (the old record, bit for bit, with the
                                               current captions and uri)

The content hash is sha256 of the file bytes. Hashing means reading every byte of the corpus,
which is far cheaper than decoding + inference but not free at 100M images (~16 TB a run), so a
file whose size and modification time equal the ones stored when it was embedded is taken as
unchanged without being read, as rsync and make do. Anything that moves the stamp (a copy, a
re-upload, a touch) only costs a hash; a rewrite that keeps size and mtime is missed unless
``trust_stamps`` is off (``beamlens reindex --rehash``). Records without a stamp are hashed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence


class Action(str, enum.Enum):
    CARRY = "carry"
    EMBED_NEW = "new"
    EMBED_CHANGED = "changed"
    EMBED_MODEL = "model_changed"
    DELETE = "deleted"

    @property
    def embeds(self) -> bool:
        return self in (Action.EMBED_NEW, Action.EMBED_CHANGED, Action.EMBED_MODEL)


@dataclass(frozen=True)
class Previous:
    """What the previous run stored for an image (read from its shard record)."""

    content_hash: str
    model_fingerprint: str
    captions: tuple[str, ...] = ()
    uri: str = ""
    stamp: Optional[tuple[int, int]] = None  # (size, mtime us) stored at embedding time


@dataclass(frozen=True)
class Current:
    """What the current corpus lists for an image (before reading its bytes)."""

    uri: str
    captions: tuple[str, ...] = ()
    stamp: Optional[tuple[int, int]] = None  # (size, mtime us) now; None: unknown


@dataclass(frozen=True)
class Decision:
    image_id: str
    action: Action
    captions_changed: bool = False
    uri_changed: bool = False
    current_hash: Optional[str] = None
    hashed: bool = False  # the file was read to decide


def decide(
    image_id: str,
    current: Sequence[Current],
    previous: Sequence[Previous],
    model_fingerprint: str,
    hash_current: Callable[[str], Optional[str]],
    trust_stamps: bool = True,
) -> Decision:
    """One image's fate. ``hash_current(uri)`` returns the sha256 hex, or None if unreadable.

    Lists, not single values, because a join delivers lists; duplicates (a runner that repeats
    elements) are harmless: the first is used. The hash is only computed when it decides something:
    not at all when ``trust_stamps`` and the file's stamp equals the stored one.
    """
    if not current:
        return Decision(image_id, Action.DELETE)
    now = current[0]
    if not previous:
        return Decision(image_id, Action.EMBED_NEW)
    before = previous[0]
    if before.model_fingerprint != model_fingerprint:
        return Decision(image_id, Action.EMBED_MODEL)
    captions_changed = tuple(now.captions) != tuple(before.captions)
    uri_changed = now.uri != before.uri
    if trust_stamps and now.stamp is not None and now.stamp == before.stamp:
        return Decision(image_id, Action.CARRY, captions_changed=captions_changed, uri_changed=uri_changed,
                        current_hash=before.content_hash)
    digest = hash_current(now.uri)
    if digest is None or not before.content_hash or digest != before.content_hash:
        return Decision(image_id, Action.EMBED_CHANGED, current_hash=digest, hashed=True)
    return Decision(image_id, Action.CARRY, captions_changed=captions_changed, uri_changed=uri_changed,
                    current_hash=digest, hashed=True)


@dataclass
class PlanCounts:
    """Totals over all images, plus a capped sample of ids per action for the report."""

    counts: dict[str, int] = field(default_factory=dict)
    metadata_updated: int = 0
    hashed: int = 0  # images whose file was read and hashed (the rest were decided by their stamp)
    sample_ids: dict[str, list[str]] = field(default_factory=dict)

    SAMPLE_LIMIT = 1000

    def add(self, decision: Decision) -> None:
        key = decision.action.value
        self.counts[key] = self.counts.get(key, 0) + 1
        if decision.captions_changed or decision.uri_changed:
            self.metadata_updated += 1
        self.hashed += int(decision.hashed)
        if decision.action is not Action.CARRY:
            sample = self.sample_ids.setdefault(key, [])
            if len(sample) < self.SAMPLE_LIMIT:
                sample.append(decision.image_id)

    def merge(self, other: "PlanCounts") -> "PlanCounts":
        for key, value in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + value
        self.metadata_updated += other.metadata_updated
        self.hashed += other.hashed
        for key, ids in other.sample_ids.items():
            sample = self.sample_ids.setdefault(key, [])
            sample.extend(ids[: max(0, self.SAMPLE_LIMIT - len(sample))])
        return self

    def get(self, action: Action) -> int:
        return self.counts.get(action.value, 0)

    @property
    def embedded(self) -> int:
        return sum(self.get(a) for a in Action if a.embeds)

    @property
    def changes_index(self) -> bool:
        """Does the searcher need a rebuild? (new vectors, removed items, or new captions or uris in item metadata)"""
        return bool(self.embedded or self.get(Action.DELETE) or self.metadata_updated)

    def to_dict(self) -> dict:
        return {
            "counts": {a.value: self.get(a) for a in Action},
            "embedded": self.embedded,
            "metadata_updated": self.metadata_updated,
            "hashed": self.hashed,
            "sample_ids": {k: sorted(v) for k, v in sorted(self.sample_ids.items())},
        }

    @classmethod
    def from_dict(cls, data: dict) -> "PlanCounts":
        plan = cls()
        plan.counts = {k: int(v) for k, v in data.get("counts", {}).items() if v}
        plan.metadata_updated = int(data.get("metadata_updated", 0))
        plan.hashed = int(data.get("hashed", 0))
        plan.sample_ids = {k: list(v) for k, v in data.get("sample_ids", {}).items()}
        return plan


def removed_from_previous(previous_count: int, previous_joined: bool, plan: PlanCounts, records: int) -> int:
    """How many of the previous version's items the new one drops: the deleted ones when the
    previous shards were joined, else (encoder changed: nothing joined) the shrink in record count."""
    return plan.get(Action.DELETE) if previous_joined else max(0, previous_count - records)


@dataclass(frozen=True)
class ShrinkGuard:
    """Refuse to publish a version that drops more than ``max_fraction`` of the previous one: an
    unquoted glob, an unmounted bucket or a truncated caption file looks exactly like mass deletion."""

    max_fraction: float = 0.10
    allow_shrink: bool = False

    def describe(self, removed: int, previous_count: int) -> str:
        """The line printed before publishing: what the new version drops, and the limit."""
        fraction = removed / previous_count if previous_count else 0.0
        return (f"shrink check: {removed} of the previous {previous_count} items would be dropped "
                f"({fraction:.1%}; limit {self.max_fraction:.0%}{', --allow-shrink' if self.allow_shrink else ''})")

    def enforce(self, removed: int, previous_count: int) -> None:
        """Raise BeamlensError when the new version drops too much and the shrink was not allowed."""
        from beamlens.models.errors import BeamlensError  # noqa: PLC0415 (keeps this module import-free)

        fraction = removed / previous_count if previous_count else 0.0
        if fraction > self.max_fraction and not self.allow_shrink:
            raise BeamlensError(
                f"refusing to publish: this re-index would drop {removed} of the previous version's "
                f"{previous_count} items ({fraction:.1%}), more than --max-deleted-fraction {self.max_fraction:g}; "
                "the input may be wrong (an unquoted glob, a missing mount). If the corpus really shrank, "
                "pass --allow-shrink. LATEST was not moved")
