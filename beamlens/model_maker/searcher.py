"""Model Maker's ``searcher`` module (``from beamlens.model_maker import searcher``); the code is
in beamlens/models/searcher/model_maker.py."""

from beamlens.models.searcher.model_maker import (  # noqa: F401 (the public names)
    DataLoader,
    ExportFormat,
    ScaNNOptions,
    ScoreAH,
    ScoreBruteForce,
    Searcher,
    Tree,
)

__all__ = ["DataLoader", "ExportFormat", "ScaNNOptions", "ScoreAH", "ScoreBruteForce", "Searcher", "Tree"]
