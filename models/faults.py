"""Named stage boundaries where the fault-injection tests kill a run with SIGKILL.

``BEAMLENS_KILL_AT=<stage>`` makes the process (launcher or Beam worker) that reaches
``checkpoint(<stage>)`` kill itself with ``kill -9``: no ``finally``, no ``atexit``, exactly what
an out-of-memory kill or a pre-empted VM does. ``tests/test_fault_injection.py`` runs ``embed``
and ``reindex`` with each stage and checks that nothing published was lost or half-written.
``BEAMLENS_PAUSE_AT=<stage>`` with ``BEAMLENS_RESUME_FILE=<path>`` makes the run wait there until
that file exists (at most ten minutes): the concurrency tests use it to hold one run inside the
root's lock while a second one starts. Unset (always, outside those tests), a checkpoint costs
two dictionary look-ups.
"""

from __future__ import annotations

import os
import signal
import time

KILL_ENV = "BEAMLENS_KILL_AT"
PAUSE_ENV = "BEAMLENS_PAUSE_AT"
RESUME_FILE_ENV = "BEAMLENS_RESUME_FILE"
MAX_PAUSE_SECONDS = 600.0

# In the order a run reaches them.
STAGES = (
    "listing",   # the launcher listed the input
    "decode",    # a worker decoded its first batch
    "write",     # a shard's temp file is written, not yet renamed
    "rename",    # a shard was renamed into place
    "manifest",  # manifest.json is written (embed's output is complete)
    "searcher",  # the searchers are built, the version's report is not written
    "report",    # the version's completion marker is written, LATEST not moved
    "latest",    # LATEST moved, old versions not pruned, lock not released
)


def checkpoint(stage: str) -> None:
    """Die here with SIGKILL if the tests asked for this stage."""
    if os.environ.get(KILL_ENV) == stage:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(PAUSE_ENV) == stage:
        _wait_for(os.environ.get(RESUME_FILE_ENV, ""))


def _wait_for(path: str) -> None:
    deadline = time.monotonic() + MAX_PAUSE_SECONDS
    while path and not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
