"""The ``beamlens`` command: one entry point, one subcommand per job.

Subcommand modules are imported only when chosen, so ``beamlens search`` never pays for (or
collides with) TensorFlow, and ``beamlens --help`` answers at once. Each module exposes
``main(argv: list[str]) -> int`` and parses its own arguments.
"""

from __future__ import annotations

import importlib
import importlib.util
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
    "evaluate": ("pipelines.evaluate", "quality and latency report of a searcher"),
    "reindex": ("pipelines.reindex", "incremental re-embed and re-build; moves the LATEST pointer"),
    "demo": ("pipelines.demo", "the whole chain on the default corpus"),
}


def available_commands() -> dict[str, tuple[str, str]]:
    return {
        name: spec for name, spec in COMMANDS.items() if importlib.util.find_spec(spec[0]) is not None
    }


def _usage() -> str:
    lines = ["usage: beamlens <command> [options]   (beamlens <command> --help for its options)", "", "commands:"]
    for name, (_, summary) in available_commands().items():
        lines.append(f"  {name:<17} {summary}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    commands = available_commands()
    if name not in commands:
        print(f"beamlens: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
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
