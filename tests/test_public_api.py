"""The public Python API users rely on: its names and signatures (golden), lazy import, and the
calls doing what their commands do."""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

import beamlens
from beamlens.model_maker import searcher as model_maker
from tests import embed_helpers as h

# name -> required fields / optional fields of a request or result, or a function's signature
GOLDEN_CLASSES = {
    "TrainRequest": (["captions", "out"], ["images", "val_captions", "val_images", "epochs", "batch_size",
                                           "learning_rate", "image_size", "embedding_dim", "max_tokens",
                                           "vocab_min_count", "vocab_max_size", "num_projection_layers",
                                           "image_backbone", "image_backbone_weights", "text_backbone",
                                           "text_backbone_weights", "trainable_backbones", "target_identity_weight",
                                           "init", "allow_worse", "val_fraction", "residual_units", "anchor_weight",
                                           "seed"]),
    "TrainResult": (["out", "artifacts", "seconds", "epochs_run"], ["best_epoch", "recall_before", "recall_after", "history"]),
    "EmbedRequest": (["model", "output"], ["captions", "images", "input_glob", "input_list", "num_shards", "image_size", "resize", "engine",
                                           "min_batch_size", "max_batch_size", "max_image_pixels", "pipeline_options"]),
    "EmbedResult": (["output", "listed", "embedded", "failed", "duplicates_dropped", "seconds", "images_per_second",
                     "errors_by_stage", "manifest"], []),
    "ReindexRequest": (["output_root", "model"], ["captions", "images", "input_glob", "input_list", "text_embedder", "image_embedder",
                                                  "previous", "no_searcher", "searcher", "num_shards", "image_size",
                                                  "resize", "engine", "min_batch_size", "max_batch_size", "max_image_pixels",
                                                  "embed_buckets", "keep_versions", "rehash", "allow_shrink",
                                                  "max_deleted_fraction", "lock_ttl", "pipeline_options"]),
    "ReindexResult": (["version", "version_dir", "records", "errors", "plan", "searcher", "report"], []),
    "SearcherRequest": (["shards", "out"], ["text_embedder", "image_embedder", "formats", "scann", "auto", "userinfo",
                                            "normalize", "allow_missing_manifest", "compression", "tune_on",
                                            "tune_captions"]),
    "SearcherBuild": (["out", "outputs", "records_read", "duplicates_dropped", "estimated_recall_at_10", "seconds",
                       "report"], []),
    "EvaluationRequest": (["searcher", "text_embedder", "captions", "shards", "out"],
                          ["images", "max_queries", "ks", "leaves", "no_sweep", "sweep_queries", "distance", "examples",
                           "seed"]),
    "Evaluation": (["out", "num_queries", "num_items", "top_k_accuracy", "ann_recall", "latency_ms_by_k", "report"], []),
    "ScaNNOptions": ([], ["distance_measure", "tree", "score_ah", "score_brute_force"]),
    "Tree": (["num_leaves", "num_leaves_to_search"], ["training_sample_size", "min_partition_size", "training_iterations",
                                                      "spherical", "quantize_centroids", "random_init"]),
    "ScoreAH": (["dimensions_per_block"], ["anisotropic_quantization_threshold", "training_sample_size",
                                           "training_iterations", "lookup_type"]),
    "ScoreBruteForce": ([], []),
    "AutoOptions": ([], ["target_recall", "max_index_mb", "num_queries", "seed", "training_threads"]),
}
GOLDEN_FUNCTIONS = {
    "train": "(request: 'TrainRequest') -> 'TrainResult'",
    "embed": "(request: 'EmbedRequest', *, pipeline: 'Optional[beam.Pipeline]' = None) -> 'EmbedResult'",
    "build_searcher": "(request: 'SearcherRequest') -> 'SearcherBuild'",
    "reindex": "(request: 'ReindexRequest', *, pipeline: 'Optional[beam.Pipeline]' = None, "
               "before_publish: 'Optional[Callable[[str], None]]' = None) -> 'ReindexResult'",
    "evaluate": "(request: 'EvaluationRequest') -> 'Evaluation'",
}
GOLDEN_MODEL_MAKER = {
    "DataLoader": "(embedder_path: 'Optional[str]' = None, dataset: 'Optional[np.ndarray]' = None, "
                  "metadata: 'Optional[Sequence[Metadata]]' = None) -> 'None'",
    "DataLoader.from_shards": "(shards: 'Union[str, Sequence[str]]', embedder_path: 'Optional[str]' = None) -> 'DataLoader'",
    "Searcher.create_from_data": "(data: 'DataLoader', scann_options: 'ScaNNOptions', cache_dir: 'Optional[str]' = None) "
                                 "-> 'Searcher'",
    "Searcher.export": "(self, export_format: 'ExportFormat', export_filename: 'str', userinfo: 'Union[str, bytes]' = '', "
                       "compression: 'bool' = True) -> 'str'",
}


def _fields(cls) -> tuple[list[str], list[str]]:
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    return required, [f.name for f in dataclasses.fields(cls) if f.name not in required]


def test_the_public_names_are_exactly_these():
    assert sorted(beamlens.__all__) == sorted([*GOLDEN_CLASSES, *GOLDEN_FUNCTIONS, "Searcher", "SearchResults",
                                               "BeamlensError", "__version__"])
    assert beamlens.__version__ == "0.1.0"
    with pytest.raises(AttributeError, match="no attribute 'embed_images'"):
        beamlens.embed_images  # noqa: B018


@pytest.mark.parametrize("name", sorted(GOLDEN_CLASSES))
def test_request_and_result_fields(name):
    assert _fields(getattr(beamlens, name)) == tuple(GOLDEN_CLASSES[name])


@pytest.mark.parametrize("name", sorted(GOLDEN_FUNCTIONS))
def test_job_signatures(name):
    assert str(inspect.signature(getattr(beamlens, name))) == GOLDEN_FUNCTIONS[name]


@pytest.mark.parametrize("name", sorted(GOLDEN_MODEL_MAKER))
def test_model_maker_signatures(name):
    owner, _, method = name.partition(".")
    value = getattr(getattr(model_maker, owner), method) if method else getattr(model_maker, owner)
    assert str(inspect.signature(value)) == GOLDEN_MODEL_MAKER[name]
    assert {e.name for e in model_maker.ExportFormat} == {"TFLITE", "SCANN_INDEX_FILE"}


def test_searcher_runtime_methods():
    assert str(inspect.signature(beamlens.Searcher.search)) == "(self, query: 'str | ImageQuery', k: 'int | None' = None) -> 'SearchResults'"
    assert {"search", "search_many", "close", "__enter__", "__exit__"} <= set(dir(beamlens.Searcher))


def test_import_beamlens_loads_neither_tensorflow_nor_beam():
    code = "import sys, beamlens; print('tensorflow' in sys.modules, 'apache_beam' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "False"], done.stderr


def test_embed_call_returns_what_the_manifest_says(tmp_path):
    encoder = h.build_tiny_encoder(tmp_path / "encoder.keras")
    captions, images, errors = h.write_coco_corpus(tmp_path / "corpus", h.real_photos(), bad=True)
    request = beamlens.EmbedRequest(model=str(encoder), output=str(tmp_path / "out"), captions=str(captions),
                                    images=str(images), num_shards=2,
                                    pipeline_options=PipelineOptions(["--runner=FnApiRunner"]))
    result = beamlens.embed(request)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (result.listed, result.embedded, result.failed) == (len(h.real_photos()) + len(errors), len(h.real_photos()), len(errors))
    assert (manifest["count"], manifest["errors"]) == (result.embedded, result.failed) == (result.manifest.count, result.manifest.errors)
    assert manifest["options"]["num_shards"] == 2 and manifest["options"]["runner"] == "FnApiRunner"
    assert sum(result.errors_by_stage.values()) == len(errors)


def test_bad_requests_raise_the_message_the_command_prints(tmp_path, capsys):
    from beamlens.pipelines import cli  # noqa: PLC0415

    request = beamlens.EmbedRequest(model=str(tmp_path / "missing.keras"), output=str(tmp_path / "out"),
                                    input_glob=str(tmp_path / "*.jpg"))
    with pytest.raises(beamlens.BeamlensError) as raised:
        beamlens.embed(request)
    assert cli.main(["embed", "--model", request.model, "--output", request.output, "--input-glob", request.input_glob]) == 2
    assert f"beamlens embed: error: {raised.value}" in capsys.readouterr().err
    with pytest.raises(beamlens.BeamlensError, match="--init must be one of"):
        beamlens.train(beamlens.TrainRequest(captions="c.json", out=str(tmp_path / "m"), init="warm"))
    with pytest.raises(beamlens.BeamlensError, match="--max-deleted-fraction must be between 0 and 1"):
        beamlens.reindex(beamlens.ReindexRequest(output_root=str(tmp_path / "r"), model="m.keras", no_searcher=True,
                                                 max_deleted_fraction=2))
    assert not (tmp_path / "out").exists() and not (tmp_path / "m").exists() and not (tmp_path / "r").exists()
