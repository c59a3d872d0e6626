"""TF-free helpers that tests run through models.compat.call_tflite (in the tflite process)."""

from __future__ import annotations

import os
import sys

from beamlens.models.errors import BeamlensError


def text_search(searcher_path: str, query: str, max_results: int = 3) -> dict:
    from tflite_support.task import core, processor, text

    options = text.TextSearcherOptions(
        base_options=core.BaseOptions(file_name=searcher_path),
        search_options=processor.SearchOptions(max_results=max_results),
    )
    searcher = text.TextSearcher.create_from_options(options)
    result = searcher.search(query)
    return {
        "pid": os.getpid(),
        "tensorflow_blocked": sys.modules.get("tensorflow", "absent") is None,
        "neighbours": [(bytes(n.metadata).decode(), n.distance) for n in result.nearest_neighbors],
    }


def fail_with(message: str) -> None:
    raise BeamlensError(message)


def process_id() -> int:
    return os.getpid()
