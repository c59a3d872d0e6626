"""Progress lines on stderr, one prefix per job: long work says what it is doing, never silently.

stdout stays for results (``--json`` output, tables); every progress message goes to stderr,
flushed at once so it shows up while a Beam job or an index build is still running.
"""

from __future__ import annotations

import sys
from typing import Callable


def progress_printer(prefix: str) -> Callable[[str], None]:
    """A ``progress(message)`` function that prints ``<prefix> <message>`` to stderr."""

    def progress(message: str) -> None:
        print(f"{prefix} {message}", file=sys.stderr, flush=True)

    return progress
