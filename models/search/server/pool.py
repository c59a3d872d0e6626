"""Opened Task Library searchers shared by the requests: a request borrows one copy (one copy is a lock)."""

from __future__ import annotations

import os
import queue
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from beamlens.models.errors import BeamlensError
from beamlens.models.encoders.preprocessing import DEFAULT_MAX_IMAGE_PIXELS
from beamlens.models.search.runtime import Searcher
from beamlens.models.search.results import SearchResults
from beamlens.models.search.server.limits import HttpError


class SearcherPool:
    """Open copies of one searcher file; a request borrows one (see "Concurrency" above)."""

    def __init__(self, searchers: Sequence[Searcher]) -> None:
        if not searchers:
            raise BeamlensError("a searcher pool needs at least one open searcher")
        paths = {s.path for s in searchers}
        modalities = {s.modality for s in searchers}
        if len(paths) != 1 or len(modalities) != 1:
            raise BeamlensError(f"a pool holds copies of one searcher file, got {sorted(paths)} ({sorted(modalities)})")
        self.path = searchers[0].path
        self.modality = searchers[0].modality
        self.max_results = min(s.max_results for s in searchers)
        self._searchers = list(searchers)
        self._free: queue.Queue[Searcher] = queue.Queue()
        for searcher in searchers:
            self._free.put(searcher)

    @property
    def size(self) -> int:
        return len(self._searchers)

    @contextmanager
    def borrow(self) -> Iterator[Searcher]:
        searcher = self._free.get()
        try:
            yield searcher
        finally:
            self._free.put(searcher)

    def search(self, query: Any, k: int) -> SearchResults:
        """One query on a free copy. ``k`` must not exceed ``max_results``: a larger k would make
        the Searcher re-create its Task Library object, which must not happen under other threads."""
        if k > self.max_results:
            raise HttpError(400, f"k must be at most {self.max_results} for {os.path.basename(self.path)}")
        with self.borrow() as searcher:
            return searcher.search(query, k=k)

    def close(self) -> None:
        for searcher in self._searchers:
            searcher.close()

    def __enter__(self) -> "SearcherPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_pool(path: str, modality: str, copies: int, max_results: int, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
              num_threads: int = 1) -> SearcherPool:
    """Open ``copies`` Task Library searchers of one file (closing those opened if one fails)."""
    if not isinstance(copies, int) or copies < 1:
        raise BeamlensError(f"searchers per file must be a positive number, got {copies!r}")
    opened: list[Searcher] = []
    try:
        for _ in range(copies):
            opened.append(Searcher(path, modality=modality, max_results=max_results, num_threads=num_threads,
                                   max_image_pixels=max_image_pixels))
    except BaseException:
        for searcher in opened:
            searcher.close()
        raise
    return SearcherPool(opened)
