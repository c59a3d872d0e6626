"""``python -m beamlens`` is the ``beamlens`` command."""

import sys

from beamlens.pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main())
