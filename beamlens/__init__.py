"""beamlens: text-to-image and image-to-image search on phones.

The Python API is the command line's: each job is one call taking a typed request and returning a
typed result, and ``beamlens <command>`` is that call behind a parser::

    import beamlens

    model = beamlens.train(beamlens.TrainRequest(captions=["annotations/captions_train.json"], out="model"))
    run = beamlens.embed(beamlens.EmbedRequest(model="model/vision_encoder.keras", output="embeddings",
                                               captions="annotations/captions_val.json"))
    built = beamlens.build_searcher(beamlens.SearcherRequest(shards=["embeddings"], out="searchers",
                                                             text_embedder="model/text_embedder.tflite"))
    with beamlens.Searcher("searchers/text_searcher.tflite") as searcher:
        print(searcher.search("a dog on a beach", k=5).hits)

Beam runner options (``--runner``, Dataflow, Dask) go in ``EmbedRequest.pipeline_options`` /
``ReindexRequest.pipeline_options`` as Beam's own ``PipelineOptions``.

One import namespace for the whole project: the source folders ``models/``, ``pipelines/`` and
``transforms/`` install as ``beamlens.models``, ``beamlens.pipelines`` and ``beamlens.transforms``
(setup.py's ``package_dir``), so nothing of ours collides with another distribution's or a user's
top-level ``models`` or ``transforms``. Names load on first use: ``import beamlens`` stays cheap
(no TensorFlow, no Beam) until a job is called. TFLite Model Maker's searcher API is
``from beamlens.model_maker import searcher``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "train": "beamlens.models.training.job",
    "TrainRequest": "beamlens.models.training.job",
    "TrainResult": "beamlens.models.training.job",
    "embed": "beamlens.transforms.embed_job",
    "EmbedRequest": "beamlens.transforms.embed_job",
    "EmbedResult": "beamlens.transforms.embed_job",
    "reindex": "beamlens.transforms.reindex_job",
    "ReindexRequest": "beamlens.transforms.reindex_job",
    "ReindexResult": "beamlens.transforms.reindex_job",
    "build_searcher": "beamlens.models.searcher.build",
    "SearcherRequest": "beamlens.models.searcher.build",
    "SearcherBuild": "beamlens.models.searcher.build",
    "ScaNNOptions": "beamlens.models.searcher.options",
    "Tree": "beamlens.models.searcher.options",
    "ScoreAH": "beamlens.models.searcher.options",
    "ScoreBruteForce": "beamlens.models.searcher.options",
    "AutoOptions": "beamlens.models.searcher.options",
    "evaluate": "beamlens.models.search.report",
    "EvaluationRequest": "beamlens.models.search.report",
    "Evaluation": "beamlens.models.search.report",
    "Searcher": "beamlens.models.search.runtime",
    "SearchResults": "beamlens.models.search.results",
    "BeamlensError": "beamlens.models.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562) and keep the name here."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'beamlens' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
