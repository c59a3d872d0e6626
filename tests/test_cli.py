"""The `beamlens` dispatcher: help, unknown commands, and user errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys

from beamlens.pipelines import cli
from tests.conftest import PROJECT_ROOT


def test_help_lists_every_command_that_exists(capsys) -> None:
    """Against the list README documents, so a lost subcommand is noticed (not compared with itself)."""
    from tests.test_strict_args import EXPECTED_COMMANDS  # noqa: PLC0415 (the one hard-coded list)

    assert cli.main(["--help"]) == 0
    printed = capsys.readouterr().out
    assert list(cli.available_commands()) == EXPECTED_COMMANDS
    for name in EXPECTED_COMMANDS:
        assert f"  {name} " in printed


def test_unknown_command_exits_2_with_usage(capsys) -> None:
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_console_script_starts_without_tensorflow() -> None:
    """`beamlens --help` must answer at once: no subcommand module (and no TF) is imported."""
    script = "import sys; from beamlens.pipelines import cli; cli.main(['--help']); print('tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
