"""The one home of beamlens' platform work-arounds.

Every dependency quirk that forces us to bend our code lives here, so that the rest of the
project reads as if the libraries simply worked. Each work-around names the versions it is for;
when those versions move on, this is the only file to revisit.

Versions this module is written for (see ../shared/docs/PLATFORM.md):
  tensorflow 2.21, scann 1.4.2, tflite-support 0.4.4, protobuf 6.33 (forced by tfx-bsl 1.21).

1. scann 1.4.2's TF custom ops are built against TF 2.20 and fail to load under TF 2.21
   ("undefined symbol ... absl"). ``import scann`` imports them whenever TensorFlow is importable,
   so we register a placeholder for ``scann.scann_ops.py.scann_ops`` first and use only the
   numpy/pybind API (``scann_ops_pybind``), which is all the searcher builder needs.
2. tflite-support 0.4.4's native modules (Task Library, metadata writers, index builder) cannot
   share a process with TensorFlow ("cannot initialize type StatusCode"), its ``_pb2`` files need
   the pure-Python protobuf implementation, and its pybind11 proto casters call
   ``MessageFactory.GetPrototype``, removed in protobuf 5. A process that will use tflite-support
   is therefore prepared *before* protobuf is imported: TensorFlow is made unimportable, the
   pure-Python protobuf is chosen and ``GetPrototype`` is restored.
   Callers never deal with this: :func:`call_tflite` runs a function in the current process when
   it has been prepared for tflite-support, and otherwise in a long-lived child process that was.
3. tflite-support 0.4.4's ``TensorImage.create_from_array`` does not own the numpy buffer: when
   the array is freed before ``search`` the process crashes (SIGSEGV).
   :func:`tensor_image_from_array` keeps the pixels alive as long as the image.
"""

from __future__ import annotations

import atexit
import importlib
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import traceback
import types
from typing import Any, BinaryIO, Callable

_SCANN_TF_OPS_MODULE = "scann.scann_ops.py.scann_ops"
_PROTOBUF_IMPL_ENV = "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"
_TFLITE_PROCESS_FLAG = "_beamlens_tflite_process"


# --------------------------------------------------------------------------------------------
# 1. scann (1.4.2 with TF 2.21)
# --------------------------------------------------------------------------------------------
def import_scann_pybind() -> types.ModuleType:
    """Return ``scann.scann_ops_pybind`` without loading scann's TF ops (scann 1.4.2, TF 2.21)."""
    if _SCANN_TF_OPS_MODULE not in sys.modules:
        placeholder = types.ModuleType(_SCANN_TF_OPS_MODULE)
        placeholder.__doc__ = "Placeholder: scann's TF ops do not load with TF 2.21 (beamlens)."
        sys.modules[_SCANN_TF_OPS_MODULE] = placeholder
    from scann.scann_ops.py import scann_ops_pybind  # noqa: PLC0415 (must follow the placeholder)

    return scann_ops_pybind


# --------------------------------------------------------------------------------------------
# 2. tflite-support (0.4.4 with TF 2.21 and protobuf 6)
# --------------------------------------------------------------------------------------------
def ensure_pkg_resources() -> None:
    """tensorflow-hub 0.16, which Beam's TensorFlow model handler imports, calls
    ``pkg_resources.parse_version`` once (a TF version check) without declaring setuptools; a fresh
    uv or Python 3.12 virtual environment has no setuptools, and setuptools 81+ no ``pkg_resources``
    (measured: ``beamlens.embed`` in a fresh venv failed with "No module named 'pkg_resources'").
    Where the real module is missing, provide the one function tensorflow-hub calls."""
    try:
        importlib.import_module("pkg_resources")
    except ImportError:
        from packaging.version import parse  # noqa: PLC0415

        shim = types.ModuleType("pkg_resources", "beamlens stand-in: parse_version only (models/compat.py)")
        shim.parse_version = parse  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim


def tensorflow_loaded() -> bool:
    """True when TensorFlow has been imported into this process."""
    module = sys.modules.get("tensorflow")
    return module is not None


def is_tflite_process() -> bool:
    """True when this process has been prepared for tflite-support."""
    return bool(getattr(sys, _TFLITE_PROCESS_FLAG, False))


def _protobuf_is_pure_python_or_unloaded() -> bool:
    if "google.protobuf" not in sys.modules:
        return True
    from google.protobuf.internal import api_implementation  # noqa: PLC0415

    return api_implementation.Type() == "python"


def can_prepare_tflite_process() -> bool:
    """True when tflite-support could still be made to work in this very process."""
    return is_tflite_process() or (
        not tensorflow_loaded() and _protobuf_is_pure_python_or_unloaded()
    )


def prepare_tflite_process() -> None:
    """Dedicate this process to tflite-support (0.4.4): TensorFlow becomes unimportable here.

    Call it first thing in a process that only needs the Task Library (the ``search`` CLI, the
    isolated worker). Anything that needs TensorFlow afterwards must use another process.
    """
    if is_tflite_process():
        return
    if not can_prepare_tflite_process():
        raise RuntimeError(
            "this process already loaded TensorFlow or the C++ protobuf; tflite-support 0.4.4 "
            "cannot run beside them. Use models.compat.call_tflite(), which runs the "
            "work in a separate process."
        )
    os.environ[_PROTOBUF_IMPL_ENV] = "python"
    # tflite-support imports TensorFlow for doc helpers when it can; block it.
    sys.modules["tensorflow"] = None  # type: ignore[assignment]
    from google.protobuf import message_factory  # noqa: PLC0415

    if not hasattr(message_factory.MessageFactory, "GetPrototype"):
        # Removed in protobuf 5; tflite-support 0.4.4's pybind11 proto casters still call it.
        def _get_prototype(self: Any, descriptor: Any) -> Any:
            return message_factory.GetMessageClass(descriptor)

        message_factory.MessageFactory.GetPrototype = _get_prototype  # type: ignore[attr-defined]
    setattr(sys, _TFLITE_PROCESS_FLAG, True)


def tensor_image_from_array(pixels: Any) -> Any:
    """A Task Library TensorImage over uint8 pixels that holds on to them (tflite-support 0.4.4)."""
    import numpy as np  # noqa: PLC0415
    from tflite_support.task import vision  # noqa: PLC0415

    owned = np.ascontiguousarray(pixels, dtype=np.uint8)
    image = vision.TensorImage.create_from_array(owned)
    image._beamlens_pixels = owned  # noqa: SLF001 (the reference is the whole point)
    return image


class IsolatedCallError(RuntimeError):
    """An exception raised in the tflite-support process that could not be sent back as is."""


class IsolatedWorkerDied(RuntimeError):
    """The tflite-support child process ended unexpectedly (for example a native crash)."""


def _write_frame(stream: BinaryIO, payload: bytes) -> None:
    stream.write(struct.pack("<Q", len(payload)))
    stream.write(payload)
    stream.flush()


def _read_frame(stream: BinaryIO) -> bytes | None:
    header = stream.read(8)
    if len(header) < 8:
        return None
    (size,) = struct.unpack("<Q", header)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return payload


def _resolve(module_name: str, function_name: str) -> Callable[..., Any]:
    module = importlib.import_module(module_name)
    target: Any = module
    for part in function_name.split("."):
        target = getattr(target, part)
    return target


def _pack_exception(error: BaseException) -> bytes:
    try:
        return pickle.dumps(("error", error))
    except Exception:  # noqa: BLE001 (anything unpicklable is described instead)
        description = "".join(traceback.format_exception_only(type(error), error)).strip()
        return pickle.dumps(("foreign-error", description))


class _TFLiteWorker:
    """A child Python process prepared for tflite-support, reused for many calls."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env[_PROTOBUF_IMPL_ENV] = "python"
        project_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in [project_root, env.get("PYTHONPATH", "")] if p
        )
        self._process = subprocess.Popen(
            [sys.executable, "-m", "beamlens.models.compat", "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self._lock = threading.Lock()

    def alive(self) -> bool:
        return self._process.poll() is None

    def call(self, module_name: str, function_name: str, args: tuple, kwargs: dict) -> Any:
        request = pickle.dumps((module_name, function_name, args, kwargs))
        with self._lock:
            assert self._process.stdin is not None and self._process.stdout is not None
            try:
                _write_frame(self._process.stdin, request)
                reply = _read_frame(self._process.stdout)
            except BrokenPipeError:
                reply = None
            if reply is None:
                code = self._process.wait()
                raise IsolatedWorkerDied(
                    f"the tflite-support worker process ended (exit code {code}) while running "
                    f"{module_name}.{function_name}"
                )
        kind, value = pickle.loads(reply)
        if kind == "ok":
            return value
        if kind == "error":
            raise value
        raise IsolatedCallError(value)

    def close(self) -> None:
        if self.alive():
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()


_worker: _TFLiteWorker | None = None
_worker_lock = threading.Lock()


def _shared_worker() -> _TFLiteWorker:
    global _worker
    with _worker_lock:
        if _worker is None or not _worker.alive():
            _worker = _TFLiteWorker()
            atexit.register(_worker.close)
        return _worker


def shutdown_worker() -> None:
    """Stop the tflite-support child process, if one was started."""
    global _worker
    with _worker_lock:
        if _worker is not None:
            _worker.close()
            _worker = None


def call_tflite(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``function(*args, **kwargs)`` where tflite-support works, and return its result.

    ``function`` must be a module-level function of a module that does not import TensorFlow;
    arguments and result must pickle. In a process prepared with :func:`prepare_tflite_process`
    the call is direct; anywhere else it goes to a shared child process, so state a function
    keeps in its module (an open searcher, say) lives there between calls.
    """
    if is_tflite_process():
        return function(*args, **kwargs)
    module_name = function.__module__
    if module_name == "__main__":
        raise ValueError("call_tflite needs a function importable by module name, not __main__")
    return _shared_worker().call(module_name, function.__qualname__, args, kwargs)


def _serve(requests: BinaryIO, replies: BinaryIO) -> None:
    while True:
        frame = _read_frame(requests)
        if frame is None:
            return
        try:
            module_name, function_name, args, kwargs = pickle.loads(frame)
            value = _resolve(module_name, function_name)(*args, **kwargs)
            reply = pickle.dumps(("ok", value))
        except BaseException as error:  # noqa: BLE001 (every failure goes back to the caller)
            reply = _pack_exception(error)
        _write_frame(replies, reply)


def _main() -> None:
    prepare_tflite_process()
    # Keep the protocol on a private copy of stdout; native code that prints goes to stderr.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    requests = os.fdopen(os.dup(sys.stdin.fileno()), "rb")
    _serve(requests, replies)


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    _main()


# ---------------------------------------------------------------------------------------------
# TensorFlow / absl / CUDA start-up noise (hidden by the CLI unless --verbose; see pipelines/cli.py)
# ---------------------------------------------------------------------------------------------
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
