"""The indexed items the app may serve: image id -> uri, read once from the searcher files."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from beamlens.models.io import files
from beamlens.models.search.results import parse_item_metadata


# ---------------------------------------------------------------------------------------------
# The indexed items: image id -> uri, read once from the searcher files
# ---------------------------------------------------------------------------------------------
def is_local_uri(uri: str) -> bool:
    return not files.is_remote(uri)


def read_uri(uri: str) -> bytes:
    """The bytes at an item's uri, local or any Beam filesystem (models/io/files.py).

    Only uris from the index reach this function (see the module doc), never a request's string."""
    return files.read_bytes(uri)


@dataclass(frozen=True)
class ImageCatalog:
    """Which images may be served: the uri of every indexed item that has one, by image id."""

    uris: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_searchers(cls, paths: Sequence[str]) -> "ImageCatalog":
        """Read every item's metadata from the searcher files (pure Python, no Task Library).

        Items of several searchers are merged (a text and an image searcher built from the same
        shards hold the same items); the first uri seen for an id wins. Items without a uri
        (Model Maker searchers store plain text) have no image to serve."""
        from beamlens.models.searcher.reader import item_metadata, read_searcher  # noqa: PLC0415

        uris: dict[str, str] = {}
        for path in paths:
            count = read_searcher(path, first_items=0).num_items
            for raw in item_metadata(path, list(range(count))):
                item = parse_item_metadata(raw)
                if item.uri:
                    uris.setdefault(item.image_id, item.uri)
        return cls(uris)

    def uri(self, image_id: str) -> str | None:
        return self.uris.get(image_id)

    @property
    def has_remote_uris(self) -> bool:
        return any(not is_local_uri(uri) for uri in self.uris.values())


def image_url(image_id: str) -> str:
    return "/images/" + urllib.parse.quote(image_id, safe="")
