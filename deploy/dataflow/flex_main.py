"""Flex Template entry point: ``beamlens reindex`` (default) or ``beamlens embed`` with template parameters.

The launcher VM passes every template parameter as ``--name=value``. ``--command`` picks the
job (``reindex`` or ``embed``); everything else goes to that command unchanged, together with
the Dataflow options Dataflow itself adds (project, region, temp location, sdk image...).

Note: ``beamlens reindex`` waits for the Dataflow job, then reads the new shards back, builds the
searcher and moves LATEST, all in the launcher. That is right for daily increments (minutes of
Dataflow time). For a multi-hour full build, run ``beamlens reindex --runner DataflowRunner``
from Airflow (deploy/airflow) or a Cloud Run job instead, where the waiting process has no
launcher time budget to respect.
"""

from __future__ import annotations

import logging
import sys


def split_command(argv: list[str]) -> tuple[str, list[str]]:
    command = "reindex"
    rest: list[str] = []
    skip = False
    for index, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg.startswith("--command="):
            command = arg.split("=", 1)[1]
        elif arg == "--command" and index + 1 < len(argv):
            command, skip = argv[index + 1], True
        else:
            rest.append(arg)
    if command not in ("reindex", "embed"):
        raise SystemExit(f"flex_main: --command must be reindex or embed, got {command!r}")
    return command, rest


def main(argv: list[str] | None = None) -> int:
    logging.getLogger().setLevel(logging.INFO)
    command, rest = split_command(list(sys.argv[1:] if argv is None else argv))
    from beamlens.pipelines import cli  # noqa: PLC0415 (after the launcher has set up the environment)

    return cli.main([command, *rest])


if __name__ == "__main__":
    sys.exit(main())
