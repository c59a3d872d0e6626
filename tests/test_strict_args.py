"""No argument is ignored: unknown options and stray positionals stop every command with exit 2.

Beam's PipelineOptions only logs "Discarding unparseable args", so ``beamlens embed`` used to run
with ``--num-shardz 3`` at the default and, given an unquoted ``--input-glob dir/*.jpg``, embed
the first file and drop the rest. Also: the TensorFlow/absl/CUDA start-up noise is hidden unless
``--verbose``, and nothing of ours is hidden with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from beamlens.models.errors import BeamlensError
from beamlens.pipelines import cli
from tests.conftest import PROJECT_ROOT

# Hard-coded on purpose: a subcommand that disappears from COMMANDS must fail this test.
EXPECTED_COMMANDS = [
    "make-corpus", "train", "evaluate-encoder", "export-text-embedder", "export-pretrained", "embed",
    "build-searcher", "inspect", "search", "serve", "evaluate", "reindex", "demo",
]
# Arguments each command parses successfully (the files need not exist: parsing comes first).
VALID_ARGS = {
    "make-corpus": ["--out", "{tmp}/corpus"],
    "train": ["--captions", "{tmp}/c.json", "--out", "{tmp}/model"],
    "evaluate-encoder": ["--model-dir", "{tmp}/model", "--captions", "{tmp}/c.json"],
    "export-text-embedder": ["--pretrained", "minilm", "--out", "{tmp}/t.tflite"],
    "export-pretrained": ["--out", "{tmp}/pretrained"],
    "embed": ["--model", "{tmp}/m.keras", "--output", "{tmp}/shards"],
    "build-searcher": ["--shards", "{tmp}/shards", "--out", "{tmp}/searchers"],
    "inspect": ["{tmp}/s.tflite"],
    "search": ["{tmp}/s.tflite", "a query"],
    "serve": ["--searcher", "{tmp}/s.tflite"],
    "evaluate": ["--searcher", "{tmp}/s.tflite", "--text-embedder", "{tmp}/t.tflite", "--captions", "{tmp}/c.json",
                 "--shards", "{tmp}/shards", "--out", "{tmp}/report"],
    "reindex": ["--output-root", "{tmp}/index"],
    "demo": ["--workdir", "{tmp}/demo"],
}
CASES = {"bare-unknown": ["--no-such-flag"], "unknown": ["--no-such-flag"], "unknown=": ["--no-such-flag=1"],
         "stray": ["stray-positional"]}
# Fragments of the start-up lines of TensorFlow 2.21 on a CPU-only machine (absent elsewhere).
NOISE = ("absl::InitializeLog", "oneDNN custom operations", "cudart_stub.cc", "Could not find cuda drivers",
         "failed call to cuInit", "cpu_feature_guard", "To enable the following instructions")
REAL_BEAM_OPTIONS = [
    "--runner", "FnApiRunner", "--project", "p", "--region", "r", "--temp_location", "/tmp/x",
    "--experiments", "a", "--experiments", "b", "--direct_num_workers", "2", "--direct_running_mode", "multi_threading",
    "--dask_client_address", "tcp://x:1", "--dataflow_service_options", "enable_prime", "--setup_file", "./setup.py",
    "--sdk_container_image", "gcr.io/p/beam:1", "--job_endpoint", "localhost:8099", "--flink_master", "localhost:8081",
]


@pytest.fixture(autouse=True)
def _restore_logging_env(monkeypatch) -> None:
    """cli.main sets these for the process; give each test (and the session) its environment back."""
    for name in ("TF_CPP_MIN_LOG_LEVEL", cli.VERBOSE_ENV):
        monkeypatch.delenv(name, raising=False)


def _embed_options():
    from beamlens.pipelines.options import EmbedOptions  # noqa: PLC0415 (registers EmbedOptions)
    from beamlens.pipelines.strict_args import parse_pipeline_options  # noqa: PLC0415

    return EmbedOptions, parse_pipeline_options


# ------------------------------------------------------------------------------------------
# beamlens embed: unknown options and shell-expanded globs
# ------------------------------------------------------------------------------------------
def test_embed_unknown_option_exits_2_names_it_and_writes_nothing(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = cli.main(["embed", "--input-glob", str(tmp_path / "*.jpg"), "--model", str(tmp_path / "m.keras"),
                     "--output", str(out), "--num-shardz", "3"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("beamlens embed: error: ") and "--num-shardz 3" in err
    assert "--num-shards" in err  # the suggestion
    assert not out.exists()


@pytest.mark.parametrize("command", ["embed", "reindex"])
def test_dask_partitions_above_one_exit_2_and_say_why(tmp_path, capsys, command: str) -> None:
    """Beam 2.77's DaskRunner re-runs elements across partitions (benchmarks/dask_partitions.py)."""
    (tmp_path / "m.keras").write_bytes(b"not read: refused before")
    (tmp_path / "a.jpg").write_bytes(b"x")
    out = tmp_path / "out"
    where = ["--output", str(out)] if command == "embed" else ["--output-root", str(out), "--no-searcher"]
    code = cli.main([command, "--input-glob", str(tmp_path / "*.jpg"), "--model", str(tmp_path / "m.keras"), *where,
                     "--runner", "apache_beam.runners.dask.dask_runner.DaskRunner", "--dask_npartitions", "4"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"beamlens {command}: error: --dask_npartitions 4: ") and "more than once" in err
    assert not out.exists()


def test_embed_shell_expanded_glob_exits_2_and_says_to_quote(tmp_path, capsys) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    paths = [photos / f"p{n:02d}.jpg" for n in range(20)]
    for path in paths:
        path.write_bytes(b"")
    out = tmp_path / "out"
    code = cli.main(["embed", "--input-glob", *map(str, paths), "--model", str(tmp_path / "m.keras"), "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("beamlens embed: error: --input-glob")
    assert "19 more path(s)" in err and "shell expanded" in err and "quote" in err
    assert f"--input-glob '{photos}/*.jpg'" in err
    assert not out.exists()


def test_stray_positional_anywhere_is_named() -> None:
    _, parse = _embed_options()
    with pytest.raises(BeamlensError, match="unexpected argument.*stray"):
        parse(["stray", "--model", "m.keras"], "embed")
    with pytest.raises(BeamlensError, match="--runner takes one value.*extra"):
        parse(["--runner", "DirectRunner", "extra"], "embed")


# ------------------------------------------------------------------------------------------
# parse_pipeline_options: Beam's own parser, every registered options class
# ------------------------------------------------------------------------------------------
def test_real_beam_dataflow_flink_dask_options_are_accepted() -> None:
    from apache_beam.options.pipeline_options import (  # noqa: PLC0415
        DebugOptions, DirectOptions, FlinkRunnerOptions, GoogleCloudOptions, PortableOptions, SetupOptions,
        StandardOptions, WorkerOptions)

    embed_options, parse = _embed_options()
    options = parse([*REAL_BEAM_OPTIONS, "--num-shards", "3"], "embed")
    from apache_beam.runners.dask.dask_runner import DaskOptions  # noqa: PLC0415 (registered by the parse if needed)

    assert options.view_as(StandardOptions).runner == "FnApiRunner"
    cloud = options.view_as(GoogleCloudOptions)
    assert (cloud.project, cloud.region, cloud.temp_location) == ("p", "r", "/tmp/x")
    assert cloud.dataflow_service_options == ["enable_prime"]
    assert options.view_as(DebugOptions).experiments == ["a", "b"]
    direct = options.view_as(DirectOptions)
    assert (direct.direct_num_workers, direct.direct_running_mode) == (2, "multi_threading")
    assert options.view_as(DaskOptions).address == "tcp://x:1"
    assert options.view_as(SetupOptions).setup_file == "./setup.py"
    assert options.view_as(WorkerOptions).sdk_container_image == "gcr.io/p/beam:1"
    assert options.view_as(PortableOptions).job_endpoint == "localhost:8099"
    assert options.view_as(FlinkRunnerOptions).flink_master == "localhost:8081"
    assert options.view_as(embed_options).num_shards == 3


def test_equals_form_is_checked_like_the_spaced_form() -> None:
    from apache_beam.options.pipeline_options import DebugOptions, StandardOptions  # noqa: PLC0415

    embed_options, parse = _embed_options()
    options = parse(["--runner=FnApiRunner", "--experiments=a", "--num-shards=5", "--input_glob=d/*.jpg"], "embed")
    assert options.view_as(StandardOptions).runner == "FnApiRunner"
    assert options.view_as(DebugOptions).experiments == ["a"]
    assert (options.view_as(embed_options).num_shards, options.view_as(embed_options).input_glob) == (5, "d/*.jpg")
    with pytest.raises(BeamlensError, match=r"unknown option\(s\): --num-shardz=3 .*--num-shards"):
        parse(["--num-shardz=3"], "embed")


@pytest.mark.parametrize("argv", [["--num-shard", "3"], ["--num-shard=3"], ["--temp_loc", "/tmp/x"]])
def test_abbreviations_are_not_accepted(argv: list[str]) -> None:
    _, parse = _embed_options()
    with pytest.raises(BeamlensError, match="unknown option"):
        parse(argv, "embed")


def test_bad_values_raise_beamlens_error_not_beams_usage() -> None:
    _, parse = _embed_options()
    with pytest.raises(BeamlensError, match="--num-shards.*invalid int value: 'abc'"):
        parse(["--num-shards", "abc"], "embed")


def test_project_options_count_because_their_classes_are_registered() -> None:
    import beamlens.pipelines.reindex as reindex  # noqa: PLC0415 (registers ReindexOptions)

    _, parse = _embed_options()
    options = parse(["--output-root", "r", "--no-searcher", "--searcher-arg=--score=brute_force", "--model", "m.keras"],
                    "reindex")
    view = options.view_as(reindex.ReindexOptions)
    assert (view.output_root, view.no_searcher, view.searcher_args) == ("r", True, ["--score=brute_force"])


def test_dask_options_are_registered_only_when_needed() -> None:
    """A fresh process: plain options do not import the DaskRunner (1.5 s); Dask options still pass."""
    script = textwrap.dedent("""
        import sys
        from beamlens.pipelines.strict_args import parse_pipeline_options
        parse_pipeline_options(["--runner", "FnApiRunner"], "embed")
        before = "apache_beam.runners.dask.dask_runner" in sys.modules
        options = parse_pipeline_options(["--dask_client_address", "tcp://x:1"], "embed")
        from apache_beam.runners.dask.dask_runner import DaskOptions
        print(before, options.view_as(DaskOptions).address)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "tcp://x:1"]


# ------------------------------------------------------------------------------------------
# every subcommand: exit 2 and "beamlens <cmd>: error:" for an unknown flag or a stray argument
# ------------------------------------------------------------------------------------------
_HARNESS = textwrap.dedent("""
    import contextlib, io, json, sys
    import tensorflow  # first, as `search` would otherwise make this process a TF-free one
    from beamlens.pipelines import cli
    valid, cases = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    results = {}
    for name in cli.COMMANDS:
        for case, extra in cases.items():
            argv = [name, *extra] if case.startswith("bare") else [name, *valid[name], *extra]
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    code = cli.main(argv)
                except SystemExit as stop:
                    code = stop.code
            errors = [line for line in err.getvalue().splitlines() if line.startswith("beamlens ")]
            results[f"{name} {case}"] = [code, errors[-1] if errors else err.getvalue()[-2000:]]
    print(json.dumps(results))
""")


@pytest.fixture(scope="module")
def command_results(tmp_path_factory) -> dict[str, list]:
    """One process runs every (command, case): in-process calls, so TF is imported once."""
    tmp = tmp_path_factory.mktemp("strict")
    valid = {name: [arg.format(tmp=tmp) for arg in args] for name, args in VALID_ARGS.items()}
    done = subprocess.run([sys.executable, "-c", _HARNESS, json.dumps(valid), json.dumps(CASES)],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert not any(tmp.iterdir()), f"a rejected command wrote something: {list(tmp.iterdir())}"
    return results


def test_the_command_list_is_the_expected_one() -> None:
    assert list(cli.COMMANDS) == EXPECTED_COMMANDS
    assert list(cli.available_commands()) == EXPECTED_COMMANDS
    assert sorted(VALID_ARGS) == sorted(EXPECTED_COMMANDS)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", EXPECTED_COMMANDS)
def test_every_command_rejects_unknown_flags_and_strays(command_results, name: str, case: str) -> None:
    code, message = command_results[f"{name} {case}"]
    assert code == 2, message
    assert message.startswith(f"beamlens {name}: error: "), message
    if not case.startswith("bare"):  # with the required options given, the offending one is named
        assert CASES[case][0] in message, message


# ------------------------------------------------------------------------------------------
# --verbose: start-up noise hidden by default, shown on request; our messages always shown
# ------------------------------------------------------------------------------------------
def test_split_verbose_before_the_command_or_after_its_options() -> None:
    assert cli.split_verbose(["--verbose", "embed", "--model", "m"]) == (["embed", "--model", "m"], True)
    assert cli.split_verbose(["embed", "--model", "m", "--verbose"]) == (["embed", "--model", "m"], True)
    assert cli.split_verbose(["embed", "--model", "m"]) == (["embed", "--model", "m"], False)
    assert cli.split_verbose(["search", "s.tflite", "--", "--verbose"]) == (["search", "s.tflite", "--", "--verbose"], False)
    assert "--verbose" in cli._usage()


def _entry_point(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Run ``beamlens ARGS`` the console script's way (main() reads sys.argv), then a warning of ours."""
    script = textwrap.dedent(f"""
        import json, os, sys, warnings
        sys.argv = ["beamlens", *{list(args)!r}]
        from beamlens.pipelines import cli
        code = cli.main()
        warnings.warn("beamlens-own-warning")
        print(json.dumps({{"code": code, "tensorflow": "tensorflow" in sys.modules,
                           "level": os.environ.get("TF_CPP_MIN_LOG_LEVEL"), "verbose": os.environ.get(cli.VERBOSE_ENV)}}))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", cli.VERBOSE_ENV)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, json.loads(done.stdout.strip().splitlines()[-1])


def test_quiet_by_default_without_hiding_our_messages(tmp_path) -> None:
    done, state = _entry_point(tmp_path, "embed", "--num-shardz", "3", "--output", str(tmp_path / "out"))
    assert state["code"] == 2 and state["tensorflow"], state
    assert state["level"] == "2" and state["verbose"] is None
    noise = [line for line in done.stderr.splitlines() if any(fragment in line for fragment in NOISE)]
    assert noise == []
    assert "beamlens embed: error: unknown option(s): --num-shardz 3" in done.stderr
    assert "UserWarning: beamlens-own-warning" in done.stderr
    assert not (tmp_path / "out").exists()


def test_verbose_does_not_raise_tensorflows_log_level(tmp_path) -> None:
    done, state = _entry_point(tmp_path, "embed", "--num-shardz", "3", "--verbose")
    assert state["code"] == 2 and state["tensorflow"], state
    assert state["level"] in (None, "0") and state["verbose"] == "1"
    assert "beamlens embed: error: unknown option(s): --num-shardz 3" in done.stderr  # --verbose itself was taken out
    assert "UserWarning: beamlens-own-warning" in done.stderr


def test_the_filter_drops_exactly_the_noise_lines(tmp_path) -> None:
    """Machine-independent: the lines TF 2.21 prints on a CPU-only machine, written to fd 2 by hand."""
    lines = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796219435.723345    5398 port.cc:153] oneDNN custom operations are on. You may see slightly "
        "different numerical results due to floating-point round-off errors from different computation orders. "
        "To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
        "I0000 00:00:1796219435.723845    5398 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.",
        "I0000 00:00:1796219435.790079    5398 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
        "available CPU instructions in performance-critical operations.",
        "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the "
        "appropriate compiler flags.",
        "E0000 00:00:1796219440.203548    5398 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
        "Failed call to cuInit: UNKNOWN ERROR (303)",
    ]
    kept = ["E0000 00:00:1796219440.203548    5398 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
            "Failed call to cuInit: CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE (804)",
            "E0000 00:00:1796219440.2    5398 some_kernel.cc:10] a real native error", "beamlens embed: our message"]
    script = textwrap.dedent(f"""
        import os
        from beamlens.pipelines import cli
        cli.filter_native_stderr()
        for line in {lines + kept!r}:
            os.write(2, (line + "\\n").encode())
        os.write(2, b"partial line without newline")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60)
    assert done.returncode == 0
    assert done.stderr.splitlines() == [*kept, "partial line without newline"]
