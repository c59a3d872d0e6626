"""The platform work-arounds: tflite-support beside TensorFlow, and scann's pybind API."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from beamlens.models import compat
from beamlens.models.errors import BeamlensError
from tests import tflite_helpers
from tests.conftest import PROJECT_ROOT, TFLITE_SUPPORT_DATA

REGEX_SEARCHER = str(TFLITE_SUPPORT_DATA / "regex_searcher.tflite")


def test_task_library_runs_in_a_child_when_tensorflow_is_loaded() -> None:
    import tensorflow as tf  # noqa: F401 (the point: TF is in this process)

    assert compat.tensorflow_loaded()
    assert not compat.can_prepare_tflite_process()
    reply = compat.call_tflite(tflite_helpers.text_search, REGEX_SEARCHER, "The weather was excellent.")
    assert reply["pid"] != os.getpid()
    assert reply["tensorflow_blocked"]
    top_text, top_distance = reply["neighbours"][0]
    assert top_text == "The weather was excellent."
    assert top_distance == pytest.approx(0.88966, abs=1e-3)
    # The same worker serves later calls (open once, query many).
    assert compat.call_tflite(tflite_helpers.process_id) == reply["pid"]


def test_errors_raised_in_the_child_come_back_as_themselves() -> None:
    with pytest.raises(BeamlensError, match="named problem"):
        compat.call_tflite(tflite_helpers.fail_with, "named problem")


def test_preparing_a_tensorflow_process_is_refused_with_a_reason() -> None:
    import tensorflow as tf  # noqa: F401

    with pytest.raises(RuntimeError, match="call_tflite"):
        compat.prepare_tflite_process()


def test_task_library_runs_in_process_when_tensorflow_is_absent() -> None:
    script = f"""
import json, os
from beamlens.models import compat
compat.prepare_tflite_process()
from tests import tflite_helpers
reply = compat.call_tflite(tflite_helpers.text_search, {REGEX_SEARCHER!r}, "The weather was excellent.")
try:
    import tensorflow
    blocked = False
except ImportError:
    blocked = True
print(json.dumps({{"same_pid": reply["pid"] == os.getpid(), "top": reply["neighbours"][0][0], "blocked": blocked}}))
"""
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout.strip().splitlines()[-1])
    assert reply == {"same_pid": True, "top": "The weather was excellent.", "blocked": True}


def test_scann_pybind_imports_beside_tensorflow_and_finds_exact_neighbours() -> None:
    import tensorflow as tf  # noqa: F401

    scann_ops_pybind = compat.import_scann_pybind()
    rng = np.random.default_rng(0)
    database = rng.normal(size=(400, 16)).astype(np.float32)
    database /= np.linalg.norm(database, axis=1, keepdims=True)
    searcher = scann_ops_pybind.builder(database, 5, "dot_product").score_brute_force().build()
    neighbours, distances = searcher.search_batched(database[:10])
    expected = np.argsort(-(database[:10] @ database.T), axis=1)[:, :5]
    np.testing.assert_array_equal(neighbours, expected)
    np.testing.assert_allclose(distances[:, 0], 1.0, atol=1e-5)
