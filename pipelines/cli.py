"""The ``beamlens`` command: one entry point, one subcommand per job.

Subcommand modules are imported only when chosen, so ``beamlens search`` never pays for (or
collides with) TensorFlow, and ``beamlens --help`` answers at once. Each module exposes
``main(argv: list[str]) -> int`` and parses its own arguments.

TensorFlow, absl and CUDA print start-up lines on every run (``failed call to cuInit``, oneDNN,
``cpu_feature_guard``, ...) that read like failures on a CPU-only machine. Unless ``--verbose``
is given, the CLI hides them. Measured with TensorFlow 2.21:

* ``TF_CPP_MIN_LOG_LEVEL=2`` (set before the subcommand imports TensorFlow) hides TF's C++ INFO
  and WARNING logs, among them ``cpu_feature_guard``. Level 3 would also hide ``failed call to
  cuInit`` but every other C++ ERROR line with it, so it is not used.
* The lines absl writes before ``absl::InitializeLog()`` (its "WARNING: All log messages before
  ..." banner, ``port.cc`` oneDNN, ``cudart_stub.cc`` "Could not find cuda drivers") come from
  the libraries' load and ignore every environment variable; ``TF_ENABLE_ONEDNN_OPTS=0`` would
  hide the oneDNN line only by changing the numerics. So file descriptor 2 is passed through a
  small filter process (models/compat.py) that drops exactly the lines of ``NOISE_PATTERNS`` (cuInit only for the
  "no driver / no device" codes) and forwards everything else, Beam's worker processes included.
* ``CUDA_VISIBLE_DEVICES`` is left alone (it would hide the GPU of a GPU machine); no gRPC lines
  were seen, so ``GRPC_VERBOSITY`` is left alone too.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Sequence

from beamlens.models.compat import filter_native_stderr
from beamlens.models.errors import BeamlensError

# name -> (module, one-line help). Listed in the order a user meets them.
COMMANDS: dict[str, tuple[str, str]] = {
    "make-corpus": ("beamlens.pipelines.make_corpus", "write the synthetic captioned default corpus (COCO layout)"),
    "train": ("beamlens.pipelines.train", "train the dual encoder and export .keras / .tflite encoders"),
    "evaluate-encoder": ("beamlens.pipelines.evaluate_encoder", "top-k retrieval accuracy of trained encoders"),
    "export-text-embedder": ("beamlens.pipelines.export_text_embedder", "re-export a text embedder .tflite (float or int8)"),
    "export-pretrained": ("beamlens.pipelines.export_pretrained", "a pretrained image backbone as embedder (.keras + .tflite), no training"),
    "embed": ("beamlens.pipelines.embed_images", "Beam: embed a COCO layout or image glob into TFRecord shards"),
    "build-searcher": ("beamlens.pipelines.build_searcher", "merge shards and export TFLite searchers (ScaNN index)"),
    "inspect": ("beamlens.pipelines.inspect_searcher", "show the index, metadata and items of a searcher file"),
    "search": ("beamlens.pipelines.search", "query a searcher with text or an image (Task Library)"),
    "serve": ("beamlens.pipelines.serve", "a live search page and JSON API to try searchers in the browser"),
    "evaluate": ("beamlens.pipelines.evaluate", "quality and latency report of a searcher"),
    "reindex": ("beamlens.pipelines.reindex", "incremental re-embed and re-build; moves the LATEST pointer"),
    "demo": ("beamlens.pipelines.demo", "the whole chain on the default corpus"),
}


VERBOSE_FLAG = "--verbose"
# Set by --verbose and inherited, so that the processes a command starts (``demo``'s steps) stay verbose.
VERBOSE_ENV = "BEAMLENS_VERBOSE"
# Environment for quiet runs; a value the user set wins. Verbose runs set TF's own default (0)
# instead, so that the commands' own ``setdefault("TF_CPP_MIN_LOG_LEVEL", "2")`` do not apply.
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}
VERBOSE_ENV_DEFAULTS = {"TF_CPP_MIN_LOG_LEVEL": "0"}

def split_verbose(args: Sequence[str]) -> tuple[list[str], bool]:
    """``args`` without ``--verbose`` (before the command or anywhere in its options), and whether it was there.

    Taken out before the subcommand parses, so no subcommand needs to know it; arguments after a
    literal ``--`` are left alone.
    """
    end = args.index("--") if "--" in args else len(args)
    kept = [arg for arg in args[:end] if arg != VERBOSE_FLAG] + list(args[end:])
    return kept, len(kept) != len(args)


def configure_logging(verbose: bool) -> None:
    """Environment for TensorFlow's logging; must run before TensorFlow is imported."""
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
    for name, value in (VERBOSE_ENV_DEFAULTS if verbose else QUIET_ENV).items():
        os.environ.setdefault(name, value)


def available_commands() -> dict[str, tuple[str, str]]:
    return {
        name: spec for name, spec in COMMANDS.items() if importlib.util.find_spec(spec[0]) is not None
    }


def _usage() -> str:
    lines = ["usage: beamlens [--verbose] <command> [options]   (beamlens <command> --help for its options)", "", "commands:"]
    for name, (_, summary) in available_commands().items():
        lines.append(f"  {name:<17} {summary}")
    lines += ["", "options:",
              f"  {VERBOSE_FLAG:<17} also show TensorFlow/absl/CUDA start-up logs (cuInit, oneDNN, CPU features ...),",
              f"  {'':<17} hidden by default; may also follow the command's options ({VERBOSE_ENV}=1 does the same)"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns its exit status.

    ``argv=None`` means this is the process's command (the console script, ``python -m
    pipelines.cli``): only then is the process's stderr filtered, as that lasts until it exits.
    """
    args, verbose = split_verbose(list(sys.argv[1:] if argv is None else argv))
    verbose = verbose or os.environ.get(VERBOSE_ENV, "") not in ("", "0")
    configure_logging(verbose)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    commands = available_commands()
    if name not in commands:
        print(f"beamlens: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if argv is None and not verbose:
        filter_native_stderr()
    module = importlib.import_module(commands[name][0])
    try:
        return int(module.main(rest) or 0)
    except BeamlensError as error:
        print(f"beamlens {name}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"beamlens {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
