"""Strict parsing of the Beam pipeline commands' arguments (``beamlens embed``, ``beamlens reindex``).

Beam's own ``PipelineOptions`` logs "Discarding unparseable args" and carries on, so a typo
(``--num-shardz 3``) runs with the default and an unquoted ``--input-glob dir/*.jpg``, expanded by
the shell, embeds the first file and silently drops the rest, with exit status 0. Here the same
arguments are first checked against the parser Beam itself builds from every registered
``PipelineOptions`` subclass (Beam's, Dataflow's, Flink's, Dask's and ours: ``EmbedOptions``,
``ReindexOptions``), so every real pipeline option still passes and nothing else does. No list of
option names is kept here: an option is valid because some imported options class defines it.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys
from typing import NoReturn, Optional, Sequence

from apache_beam.options.pipeline_options import PipelineOptions

from beamlens.models.errors import BeamlensError

# Options classes Beam defines outside the modules ``import apache_beam`` loads. DaskOptions
# (--dask_client_address ...) lives with the DaskRunner, whose import pulls in dask.distributed
# (about 1.5 s): it is imported only when the arguments hold something the first pass rejects.
OPTIONAL_OPTIONS_MODULES: tuple[str, ...] = ("apache_beam.runners.dask.dask_runner",)


def beam_parser(command: str) -> argparse.ArgumentParser:
    """Beam's parser of all registered options, as ``PipelineOptions.get_all_options`` builds it.

    Taken from Beam through its ``add_extra_args_fn`` hook rather than rebuilt, so the choice of
    classes (every direct ``PipelineOptions`` subclass, first of each name) and the parser type
    (``_BeamArgumentParser``, ``allow_abbrev=False``) stay Beam's. Parsing no flags logs nothing.
    Its errors (``--num-shards abc``) raise ``BeamlensError`` instead of printing Beam's usage of
    some 170 options and exiting.
    """
    captured: list[argparse.ArgumentParser] = []
    PipelineOptions([]).get_all_options(add_extra_args_fn=captured.append)
    parser = captured[0]
    parser.prog = f"beamlens {command}"

    def fail(message: str) -> NoReturn:
        raise BeamlensError(f"{message} (see `beamlens {command} --help`)")

    parser.error = fail  # type: ignore[method-assign]
    return parser


def _register_optional_options() -> None:
    """Import the optional options modules that are installed (their classes register on import)."""
    for module in OPTIONAL_OPTIONS_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:  # that runner's dependencies are not installed: its options do not exist
            pass


def _positions(argv: Sequence[str], extras: Sequence[str]) -> list[int]:
    """Indices in argv of the tokens argparse left over (a subsequence of argv).

    Matched from the right: a leftover that equals a consumed value (``--input-glob a.jpg a.jpg``)
    is the later copy, since argparse gives each option its value first.
    """
    positions: list[int] = []
    index = len(argv)
    for token in reversed(extras):
        earlier = [i for i in range(index) if argv[i] == token]
        if earlier:  # always, unless a future argparse rewrites what it leaves over
            index = earlier[-1]
            positions.append(index)
    return positions[::-1]


def _owner(argv: Sequence[str], index: int, parser: argparse.ArgumentParser) -> Optional[int]:
    """Index of the known single-value option whose value a stray positional at ``index`` follows.

    ``--input-glob a.jpg b.jpg``: b.jpg continues the run of values after ``--input-glob``, which
    takes one; argparse only says that b.jpg was left over.
    """
    start = index
    while start > 0 and not argv[start - 1].startswith("-"):
        start -= 1
    if start == 0 or start == index:
        return None
    action = parser._option_string_actions.get(argv[start - 1])  # noqa: SLF001 (argparse has no public lookup)
    return start - 1 if action is not None and action.nargs is None else None


def _looks_like_paths(values: Sequence[str]) -> bool:
    return all(os.path.exists(value) or os.path.splitext(value)[1] for value in values)


def _glob_hint(option: str, paths: Sequence[str]) -> str:
    """``--input-glob 'dir/*.jpg'`` built from the paths the shell produced."""
    folder = os.path.dirname(paths[0])
    suffixes = {os.path.splitext(path)[1] for path in paths}
    pattern = os.path.join(folder, "*" + (suffixes.pop() if len(suffixes) == 1 else ""))
    return f"{option} '{pattern}'"


def _describe_strays(argv: Sequence[str], strays: list[int], parser: argparse.ArgumentParser) -> list[str]:
    """One message per run of stray positionals, naming the option they follow when there is one."""
    groups: dict[Optional[int], list[int]] = {}
    for index in strays:
        groups.setdefault(_owner(argv, index, parser), []).append(index)
    problems = []
    for key, indices in groups.items():
        values = [argv[i] for i in indices]
        shown = " ".join(values[:3]) + (f" ... ({len(values)} in all)" if len(values) > 3 else "")
        if key is None:
            problems.append(f"unexpected argument(s) {shown}: this command takes --options only")
            continue
        option, first = argv[key], argv[key + 1]
        if _looks_like_paths([first, *values]):
            problems.append(
                f"{option} takes one value but {len(values)} more path(s) followed {first!r}: {shown}. The shell "
                f"expanded an unquoted wildcard and only the first path would be used; quote it, e.g. "
                f"{_glob_hint(option, [first, *values])}")
        else:
            problems.append(f"{option} takes one value ({first!r}); unexpected argument(s) after it: {shown}")
    return problems


def _describe_unknown(argv: Sequence[str], unknown: list[int], parser: argparse.ArgumentParser) -> str:
    """The unknown options as typed (with their values), and Beam-style 'did you mean' hints."""
    known = [option for action in parser._actions for option in action.option_strings]  # noqa: SLF001
    shown, hints = [], []
    for index in unknown:
        name = argv[index].split("=", 1)[0]
        takes_next = "=" not in argv[index] and index + 1 < len(argv) and not argv[index + 1].startswith("-")
        shown.append(argv[index] + (f" {argv[index + 1]}" if takes_next else ""))
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            hints.append(f"{name} -> {close[0]}?")
    return f"unknown option(s): {', '.join(shown)}" + (f" (did you mean: {' '.join(hints)})" if hints else "")


def check_arguments(argv: Sequence[str], parser: argparse.ArgumentParser) -> None:
    """Raise BeamlensError naming every argument the parser would ignore; pass silently otherwise."""
    _, extras = parser.parse_known_args(list(argv))
    if not extras:
        return
    positions = _positions(argv, extras)
    unknown = [i for i in positions if argv[i].startswith("-") and argv[i] not in ("-", "--")]
    values_of_unknown = {i + 1 for i in unknown if "=" not in argv[i]}
    strays = [i for i in positions if i not in unknown and i not in values_of_unknown]
    problems = ([_describe_unknown(argv, unknown, parser)] if unknown else []) + _describe_strays(argv, strays, parser)
    problems = problems or [f"unrecognized arguments: {' '.join(extras)}"]
    raise BeamlensError("; ".join(problems) + f" (see `{parser.prog} --help`)")


def parse_pipeline_options(argv: Optional[Sequence[str]], command: str) -> PipelineOptions:
    """``PipelineOptions(argv)`` once every argument is known to be a registered pipeline option.

    ``argv=None`` means ``sys.argv[1:]``, as for ``PipelineOptions(None)``. The project's options
    classes count because importing their module registered them (import it before calling).
    """
    flags = list(sys.argv[1:] if argv is None else argv)
    try:
        check_arguments(flags, beam_parser(command))
    except BeamlensError:
        before = len(PipelineOptions.__subclasses__())
        _register_optional_options()
        if len(PipelineOptions.__subclasses__()) == before:
            raise
        check_arguments(flags, beam_parser(command))
    return PipelineOptions(flags)

