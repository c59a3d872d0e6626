"""Shared fixtures: the real test files in ../shared/testdata and small scratch folders."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BEAMLENS_SHARED", PROJECT_ROOT.parent / "shared")).resolve()
TESTDATA = SHARED / "testdata"
TFLITE_SUPPORT_DATA = TESTDATA / "tflite-support"
COCO_MINI = TESTDATA / "coco-mini-cc"


def pytest_configure(config: pytest.Config) -> None:
    """Missing test inputs fail the whole run loudly, never as quietly skipped tests."""
    if not TESTDATA.is_dir():
        raise pytest.UsageError(
            f"the shared test data is missing: expected {TESTDATA} (../shared beside the checkout, "
            "or set BEAMLENS_SHARED)"
        )
    from beamlens.models.encoders.backbones.wheels import WHEEL_MODULES  # noqa: PLC0415 (TensorFlow-free)

    missing = [f"{name} ({module})" for name, module in WHEEL_MODULES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise pytest.UsageError(f"pretrained weight wheels are not installed: {', '.join(missing)}; run `make install`")


@pytest.fixture(scope="session")
def testdata() -> Path:
    return TESTDATA


@pytest.fixture(scope="session")
def tflite_support_data() -> Path:
    return TFLITE_SUPPORT_DATA
