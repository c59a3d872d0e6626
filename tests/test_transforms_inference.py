"""EmbedBatches: keyed RunInference equals model.predict, vectors unit length, failures dead-lettered."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beamlens.models.encoders.preprocessing import preprocess_image_bytes
from beamlens.models.shards.records import EmbeddingRecord
from tests import embed_helpers as h
from beamlens.transforms.decode import ImageBatch, ImageMeta, only
from beamlens.models.errors import BeamlensError
from beamlens.transforms.embed_job import EmbedRequest
from beamlens.transforms.inference import EmbedBatches, accelerator_requested, inference_model, l2_normalize
from beamlens.transforms.read_images import ImageError


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    return h.build_tiny_encoder(tmp_path_factory.mktemp("m") / "enc.keras")


def _batch(photos, size) -> ImageBatch:
    return ImageBatch([(ImageMeta(p.name, str(p), (p.stem,), "hash-" + p.name), preprocess_image_bytes(p.read_bytes(), size)) for p in photos])


def test_embeddings_equal_model_predict(encoder):
    photos = h.real_photos()
    expected = dict(zip((p.name for p in photos), h.predict_reference(encoder, photos, h.TINY_SIZE)))

    def check(records):
        assert sorted(r.image_id for r in records) == sorted(expected)
        for r in records:
            assert np.max(np.abs(r.embedding - expected[r.image_id])) <= 1e-5
            assert abs(np.linalg.norm(r.embedding) - 1) < 1e-5
            assert (r.uri.endswith(r.image_id), r.captions, r.model_fingerprint, r.content_hash) == (True, (Path(r.uri).stem,), "fp", "hash-" + r.image_id)

    with TestPipeline(runner="FnApiRunner") as pipeline:
        batches = pipeline | beam.Create([_batch(photos[:4], h.TINY_SIZE), _batch(photos[4:], h.TINY_SIZE)])
        outcomes = batches | EmbedBatches(str(encoder), "fp", max_batch_size=4)
        assert_that(outcomes | beam.FlatMap(only(EmbeddingRecord)), check)


def test_inference_failure_becomes_one_error_per_image(encoder):
    photos = h.real_photos()[:3]
    with TestPipeline(runner="FnApiRunner") as pipeline:
        good = _batch(photos[:1], h.TINY_SIZE)
        two_channels = ImageBatch([(meta, pixels[..., :2]) for meta, pixels in _batch(photos[1:], h.TINY_SIZE).items])
        outcomes = pipeline | beam.Create([good, two_channels]) | EmbedBatches(str(encoder), "fp")
        errors = outcomes | "E" >> beam.FlatMap(only(ImageError)) | beam.Map(lambda e: (e.image_id, e.stage, e.reason.startswith("inference failed: ")))
        records = outcomes | "R" >> beam.FlatMap(only(EmbeddingRecord)) | beam.Map(lambda r: r.image_id)
        assert_that(errors, equal_to([(p.name, "inference", True) for p in photos[1:]]), label="errors")
        assert_that(records, equal_to([photos[0].name]), label="records")


def test_l2_normalize_keeps_zero_vectors():
    np.testing.assert_allclose(l2_normalize(np.array([3.0, 4.0])), [0.6, 0.8])
    assert not np.any(np.isnan(l2_normalize(np.zeros(4))))


@pytest.fixture(scope="module")
def model_folder_with_twin(tmp_path_factory) -> Path:
    """A model folder as train / export-pretrained leave it: the .keras, its .tflite twin, the config."""
    import keras  # noqa: PLC0415

    from beamlens.models.export import model_folder
    from beamlens.models.export.encoders import export_image_embedder

    folder = tmp_path_factory.mktemp("model")
    vision = h.build_tiny_encoder(folder / model_folder.VISION_ENCODER)
    export_image_embedder(keras.models.load_model(vision), h.TINY_SIZE, str(folder / model_folder.IMAGE_EMBEDDER))
    (folder / model_folder.CONFIG).write_text("{}")
    return folder


def test_auto_engine_runs_the_model_folders_tflite_twin(model_folder_with_twin, encoder):
    keras_file = str(model_folder_with_twin / "vision_encoder.keras")
    twin = str(model_folder_with_twin / "image_embedder.tflite")
    assert inference_model(keras_file, "auto", h.TINY_SIZE) == twin
    assert inference_model(keras_file, "tflite", h.TINY_SIZE) == twin
    assert inference_model(keras_file, "keras", h.TINY_SIZE) == keras_file
    assert inference_model(twin, "auto", h.TINY_SIZE) == twin
    # another image size than the twin's fixed input, or no model folder: the .keras runs
    assert inference_model(keras_file, "auto", h.TINY_SIZE + 8) == keras_file
    assert inference_model(str(encoder), "auto", h.TINY_SIZE) == str(encoder)


def test_workers_with_a_gpu_run_the_keras_encoder_under_auto(model_folder_with_twin):
    """TFLite's XNNPACK runs on the CPU only: asking for an accelerator keeps ``auto`` on the .keras."""
    from apache_beam.options.pipeline_options import PipelineOptions  # noqa: PLC0415

    keras_file = str(model_folder_with_twin / "vision_encoder.keras")
    twin = str(model_folder_with_twin / "image_embedder.tflite")
    gpu_hint = PipelineOptions(["--resource_hints", "accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver"])
    dataflow_gpu = PipelineOptions(["--dataflow_service_options", "worker_accelerator=type:nvidia-l4;count:1"])
    memory_hint = PipelineOptions(["--resource_hints", "min_ram=4GB"])
    assert [accelerator_requested(o) for o in (gpu_hint, dataflow_gpu, memory_hint, PipelineOptions([]), None)] == \
        [True, True, False, False, False]
    assert inference_model(keras_file, "auto", h.TINY_SIZE, accelerator=True) == keras_file
    assert inference_model(keras_file, "tflite", h.TINY_SIZE, accelerator=True) == twin  # asked for by name
    assert EmbedRequest(model=keras_file, output="o", input_glob="*.jpg", pipeline_options=gpu_hint).inference_model(h.TINY_SIZE) == keras_file
    assert EmbedRequest(model=keras_file, output="o", input_glob="*.jpg", pipeline_options=memory_hint).inference_model(h.TINY_SIZE) == twin


@pytest.mark.parametrize("model, engine, size, message", [
    ("folder", "tflite", 8, "--engine tflite: .* takes 32 px images, the job resizes to 40"),
    ("bare", "tflite", 0, "--engine tflite: no image_embedder.tflite beside it in a model folder"),
    ("twin", "keras", 0, "--engine keras needs a .keras --model"),
    ("folder", "onnx", 0, "--engine must be one of auto, keras, tflite, got 'onnx'"),
])
def test_engine_choices_that_cannot_run_are_refused(model_folder_with_twin, encoder, model, engine, size, message):
    path = {"folder": str(model_folder_with_twin / "vision_encoder.keras"), "bare": str(encoder),
            "twin": str(model_folder_with_twin / "image_embedder.tflite")}[model]
    assert h.TINY_SIZE == 32
    with pytest.raises(BeamlensError, match=message):
        inference_model(path, engine, h.TINY_SIZE + size)


def test_the_tflite_twin_embeds_what_the_keras_encoder_does(model_folder_with_twin):
    photos = h.real_photos()
    keras_file = model_folder_with_twin / "vision_encoder.keras"
    expected = dict(zip((p.name for p in photos), h.predict_reference(keras_file, photos, h.TINY_SIZE)))

    def check(records):
        assert sorted(r.image_id for r in records) == sorted(expected)
        for r in records:
            assert float(np.dot(r.embedding, expected[r.image_id])) >= 0.9999
            assert np.max(np.abs(r.embedding - expected[r.image_id])) <= 1e-4

    with TestPipeline(runner="FnApiRunner") as pipeline:
        batches = pipeline | beam.Create([_batch(photos[:4], h.TINY_SIZE), _batch(photos[4:], h.TINY_SIZE)])
        twin = inference_model(str(keras_file), "auto", h.TINY_SIZE)
        assert twin.endswith("image_embedder.tflite")
        outcomes = batches | EmbedBatches(twin, "fp", max_batch_size=4)
        assert_that(outcomes | beam.FlatMap(only(EmbeddingRecord)), check)
