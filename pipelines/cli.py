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
  small filter process that drops exactly the lines of ``NOISE_PATTERNS`` (cuInit only for the
  "no driver / no device" codes) and forwards everything else, Beam's worker processes included.
* ``CUDA_VISIBLE_DEVICES`` is left alone (it would hide the GPU of a GPU machine); no gRPC lines
  were seen, so ``GRPC_VERBOSITY`` is left alone too.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import os
import select
import subprocess
import sys
from typing import Sequence

from models.errors import BeamlensError

# name -> (module, one-line help). Listed in the order a user meets them.
COMMANDS: dict[str, tuple[str, str]] = {
    "make-corpus": ("pipelines.make_corpus", "write the synthetic captioned default corpus (COCO layout)"),
    "train": ("pipelines.train", "train the dual encoder and export .keras / .tflite encoders"),
    "evaluate-encoder": ("pipelines.evaluate_encoder", "top-k retrieval accuracy of trained encoders"),
    "export-text-embedder": ("pipelines.export_text_embedder", "re-export a text embedder .tflite (float or int8)"),
    "export-pretrained": ("pipelines.export_pretrained", "a pretrained image backbone as embedder (.keras + .tflite), no training"),
    "embed": ("pipelines.embed_images", "Beam: embed a COCO layout or image glob into TFRecord shards"),
    "build-searcher": ("pipelines.build_searcher", "merge shards and export TFLite searchers (ScaNN index)"),
    "inspect": ("pipelines.inspect_searcher", "show the index, metadata and items of a searcher file"),
    "search": ("pipelines.search", "query a searcher with text or an image (Task Library)"),
    "serve": ("pipelines.serve", "a live search page and JSON API to try searchers in the browser"),
    "evaluate": ("pipelines.evaluate", "quality and latency report of a searcher"),
    "reindex": ("pipelines.reindex", "incremental re-embed and re-build; moves the LATEST pointer"),
    "demo": ("pipelines.demo", "the whole chain on the default corpus"),
}


VERBOSE_FLAG = "--verbose"
# Set by --verbose and inherited, so that the processes a command starts (``demo``'s steps) stay verbose.
VERBOSE_ENV = "BEAMLENS_VERBOSE"
# Environment for quiet runs; a value the user set wins. Verbose runs set TF's own default (0)
# instead, so that the commands' own ``setdefault("TF_CPP_MIN_LOG_LEVEL", "2")`` do not apply.
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}
VERBOSE_ENV_DEFAULTS = {"TF_CPP_MIN_LOG_LEVEL": "0"}

# absl's log prefix ("I0000 00:00:1796219435.723345    5398 ", epoch seconds before absl is
# initialised, "I0521 12:00:00.000000" after) or TF's older one
# ("2024-01-01 12:00:00.000000: I tensorflow/core/util/"), then the source file.
_LOG = r"(?:[IWEF]\d{4} [\d:.]+ +\d+ |\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] )(?:\S*/)?"
# Whole stderr lines dropped in quiet runs: harmless on a CPU-only machine, alarming to read.
NOISE_PATTERNS: tuple[str, ...] = (
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    _LOG + r"port\.cc:\d+\] oneDNN custom operations are on\.",
    _LOG + r"cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine, GPU will not be used\.$",
    # 303: no CUDA driver library, 100: no CUDA device. Other codes are real GPU trouble and stay.
    _LOG + r"\w+\.cc:\d+\] failed call to cuInit: .*\((?:100|303)\)$",
    _LOG + r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized to use available CPU instructions",
    r"To enable the following instructions: [\w ,.]+ in other operations, rebuild TensorFlow with the appropriate compiler flags\.$",
    r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$",
)

# The filter process (run with -I -S: no site, no project import, starts in ~20 ms). Reads the
# command's stderr, drops noise lines, forwards the rest at once (a partial line, such as a
# prompt or a progress bar, after 0.2 s) and acknowledges the flush marker on the ack pipe. It
# ignores Ctrl-C so the command's last words still get through, and ends at end of file, i.e.
# when the command and every process that inherited its stderr have exited.
_FILTER_PROGRAM = r"""
import os, re, select, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
marker, ack = sys.argv[1].encode(), int(sys.argv[2])
noise = re.compile("|".join("(?:%s)" % p for p in sys.argv[3:]).encode())
def out(data):
    while data:
        data = data[os.write(1, data):]
pending = b""
while True:
    if pending and not select.select([0], [], [], 0.2)[0]:
        out(pending)
        pending = b""
        continue
    chunk = os.read(0, 65536)
    if not chunk:
        out(pending)
        break
    *lines, pending = (pending + chunk).split(b"\n")
    for line in lines:
        if line.endswith(marker):  # after a partial line of another process, if one was pending
            out(line[:-len(marker)])
            os.write(ack, b".")
        elif not noise.match(line):
            out(line + b"\n")
"""


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


def filter_native_stderr() -> None:
    """Route this process's file descriptor 2 through the noise filter, for the rest of its life.

    Done at the fd level because the noise is written by C++ (and by Beam's worker processes,
    which inherit fd 2), where sys.stderr never sees it; done in a separate process so that a
    crash of this one (a segfault in native code) cannot swallow its last messages. At exit the
    filter is told to flush and acknowledge, rather than waited for: processes this one started
    may keep the pipe open longer. Without a POSIX pipe/select, or if it cannot start, nothing
    changes.
    """
    if os.name != "posix" or not sys.executable:
        return
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all (2>&-): nothing to filter
        return
    marker = f"beamlens-stderr-flush-{os.getpid()}-{os.urandom(8).hex()}"
    read_end, write_end = os.pipe()
    ack_read, ack_write = os.pipe()
    try:
        subprocess.Popen([sys.executable, "-I", "-S", "-c", _FILTER_PROGRAM, marker, str(ack_write), *NOISE_PATTERNS],
                         stdin=read_end, stdout=saved, pass_fds=(ack_write,))
    except OSError:
        for fd in (read_end, write_end, ack_read, ack_write, saved):
            os.close(fd)
        return
    os.close(read_end)
    os.close(ack_write)
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)

    def flush_filter() -> None:
        """Everything written so far reaches the terminal before the shell prompt does."""
        try:
            sys.stderr.flush()
            os.write(2, marker.encode() + b"\n")
            os.dup2(saved, 2)
            if select.select([ack_read], [], [], 5)[0]:
                os.read(ack_read, 1)
        except (OSError, ValueError):
            pass

    atexit.register(flush_filter)


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
