"""The loopback load test of ``beamlens serve``, run bounded: 2,000 requests from 8 clients, no error.

A benchmark, not a timing assertion: it prints p50/p99 (see the captured output with ``-s``)
and the test asserts only that every request was answered 200 and that all 2,000 were sent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT

pytest.importorskip("uvicorn", reason="the serve extra is not installed (make install)")


def test_two_thousand_requests_from_eight_clients_without_error() -> None:
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "benchmarks" / "serve_load.py"), "--requests", "2000", "--clients", "8",
         "--max-seconds", "300", "--json"],
        capture_output=True, text=True, env=env, timeout=600, cwd=PROJECT_ROOT,
    )
    print(done.stdout)
    assert done.returncode == 0, (done.stdout, done.stderr[-3000:])
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["errors"] == 0, summary["first_errors"]
    assert summary["requests"] == summary["completed"] == 2000 and summary["clients"] == 8
    assert {"text", "image-get", "upload"} <= set(summary["by_kind"])
    assert "p50" in done.stdout and "p99" in done.stdout
