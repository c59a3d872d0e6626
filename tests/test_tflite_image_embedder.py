"""beamlens.models.encoders.tflite_image_embedder: the Task Library's resize and normalization, reproduced; embed options."""

from __future__ import annotations

import numpy as np
import pytest

from beamlens.models.errors import BeamlensError
from beamlens.models.encoders.tflite_image_embedder import (
    ImageInputSpec,
    TFLiteImageEmbedder,
    read_input_spec,
    resize_like_task_library,
)
from tests.conftest import TESTDATA, TFLITE_SUPPORT_DATA

MOBILENET = str(TESTDATA / "models" / "mobilenet_v3_small_075_224_embedder.tflite")
MOBILENET_V2 = str(TESTDATA / "models" / "mobilenet_v2_035_96_embedder_with_metadata.tflite")


@pytest.mark.parametrize("source, target", [((325, 480), (224, 224)), ((17, 9), (64, 40)), ((5, 5), (5, 5)),
                                            ((224, 224), (96, 96))])
def test_resize_is_tf_bilinear_half_pixel_without_antialiasing(source, target):
    import tensorflow as tf

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(*source, 3), dtype=np.uint8)
    ours = resize_like_task_library(rgb, *target)
    theirs = tf.image.resize(rgb.astype(np.float32), target, method="bilinear", antialias=False).numpy()
    assert ours.dtype == np.uint8 and ours.shape == (*target, 3)
    error = np.abs(ours.astype(np.float32) - theirs)
    assert error.max() <= 0.51 and error.mean() < 0.3  # uint8 rounding of the same interpolation


def test_input_specs_of_the_shared_embedders():
    assert read_input_spec(MOBILENET) == ImageInputSpec(224, 224, "float32", (0.0,), (255.0,), 1024)
    assert read_input_spec(MOBILENET_V2) == ImageInputSpec(96, 96, "float32", (127.5,), (127.5,), 1280)


def test_float_model_without_normalization_metadata_is_refused(tmp_path):
    import keras
    import tensorflow as tf

    from beamlens.models.export.encoders import to_tflite

    pixels = keras.Input((8, 8, 3))
    model = keras.Model(pixels, keras.layers.GlobalAveragePooling2D()(pixels))
    raw = tmp_path / "bare.tflite"
    to_tflite(model, tf.TensorSpec([1, 8, 8, 3], tf.float32, name="image"), str(raw))
    with pytest.raises(BeamlensError, match="without NormalizationOptions metadata"):
        read_input_spec(str(raw))
    with pytest.raises(BeamlensError, match="not a TFLite model"):
        read_input_spec(str(TFLITE_SUPPORT_DATA / "burger.jpg"))


def test_embedder_applies_the_metadata_normalization():
    """Feeding (x - 0) / 255 by hand to the interpreter gives what the wrapper gives for raw x."""
    import tensorflow as tf

    from beamlens.models.encoders.tflite_image_embedder import preprocess_image_bytes_like_task_library

    pixels = preprocess_image_bytes_like_task_library((TFLITE_SUPPORT_DATA / "burger.jpg").read_bytes(), 224)
    ours = TFLiteImageEmbedder(MOBILENET).embed([pixels])
    interpreter = tf.lite.Interpreter(model_path=MOBILENET)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], (pixels / 255.0)[None].astype(np.float32))
    interpreter.invoke()
    expected = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(BeamlensError, match="expected pixels of shape"):
        TFLiteImageEmbedder(MOBILENET).embed([pixels[:100]])


def test_embed_refuses_other_model_files_and_a_wrong_image_size(tmp_path):
    from beamlens.pipelines import embed_images

    photos = tmp_path / "p"
    photos.mkdir()
    (photos / "burger.jpg").write_bytes((TFLITE_SUPPORT_DATA / "burger.jpg").read_bytes())
    base = ["--runner", "FnApiRunner", "--input-glob", str(photos / "*"), "--output", str(tmp_path / "out")]
    with pytest.raises(BeamlensError, match="or a Task Library image embedder .tflite"):
        embed_images.run(base + ["--model", str(tmp_path / "model.h5")], save_main_session=False)
    with pytest.raises(BeamlensError, match="the .tflite model takes 224x224 images"):
        embed_images.run(base + ["--model", MOBILENET, "--image-size", "64"], save_main_session=False)


def test_resize_choice():
    from beamlens.transforms.embed_job import EmbedRequest

    assert EmbedRequest("m.tflite", "out").resolved_resize() == "task_library"
    assert EmbedRequest("m.keras", "out").resolved_resize() == "pil"
    assert EmbedRequest("m.keras", "out", resize="task_library").resolved_resize() == "task_library"
