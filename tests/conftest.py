"""Shared fixtures: the real test files in ../shared/testdata and small scratch folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BEAMLENS_SHARED", PROJECT_ROOT.parent / "shared")).resolve()
TESTDATA = SHARED / "testdata"
TFLITE_SUPPORT_DATA = TESTDATA / "tflite-support"
COCO_MINI = TESTDATA / "coco-mini-cc"


def pytest_configure(config: pytest.Config) -> None:
    if not TESTDATA.is_dir():
        raise pytest.UsageError(
            f"the shared test data is missing: expected {TESTDATA} (../shared beside the checkout, "
            "or set BEAMLENS_SHARED)"
        )


@pytest.fixture(scope="session")
def testdata() -> Path:
    return TESTDATA


@pytest.fixture(scope="session")
def tflite_support_data() -> Path:
    return TFLITE_SUPPORT_DATA
