"""``beamlens inspect FILE``: what is inside a searcher (.tflite, ours or Model Maker's) or a bare index (.ldb).

    beamlens inspect text_searcher.tflite
    beamlens inspect index.ldb --items 10 --json

Shows the embedder's inputs and outputs, its metadata and packed (associated) files, the index
configuration (distance, leaves, leaves searched, scoring), the item count, the user info and the
first items' metadata. The index is read by beamlens' own LevelDB-table reader, so this works
without the Task Library; the metadata JSON comes from tflite-support's MetadataDisplayer.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from beamlens.models import compat
from beamlens.models.searcher.reader import metadata_json, read_searcher


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="beamlens inspect", description=__doc__.split("\n\n")[0])
    p.add_argument("file", help="searcher .tflite or index .ldb")
    p.add_argument("--items", type=int, default=5, help="how many items to show (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def inspect(path: str, items: int = 5) -> dict[str, Any]:
    info = read_searcher(path, first_items=items).to_dict()
    if info["kind"] == "tflite":
        info["metadata_json"] = metadata_json(path)
    return info


def _lines(info: dict[str, Any]) -> list[str]:
    out = [f"{info['path']}: " + ("TFLite searcher" if info["kind"] == "tflite" else "on-device ScaNN index (LevelDB table)")]
    if info["kind"] == "tflite":
        for label in ("inputs", "outputs"):
            for t in info[label]:
                out.append(f"  {label[:-1]}: {t['name']} {t['type']} {t['shape']}")
        meta = info.get("metadata") or {}
        if meta:
            out.append(f"  metadata: name={meta.get('name')!r} min_parser_version={meta.get('min_parser_version')}")
            for g in meta.get("subgraphs", []):
                for kind in ("input_tensors", "output_tensors"):
                    for t in g[kind]:
                        for f in t["associated_files"]:
                            out.append(f"  associated file on {kind[:-8]} {t['name']!r}: {f['name']} ({f['type']})")
        for name, size in info["packed_files"].items():
            out.append(f"  packed file: {name} ({size} bytes)")
    out.append(
        f"  index: {info['index_name'] or info['path']} {info['index_bytes']} bytes"
        f"{', snappy-compressed' if info['compressed'] else ''}"
    )
    out.append(f"  distance: {info['distance_measure']}; embedding type {info['embedding_type']}, "
               f"embedding_dim {info['embedding_dim']}, query dimension {info['query_dimension']}")
    if info["num_leaves"]:
        out.append(f"  partitions: {info['num_leaves']} leaves, {info['num_leaves_to_search']} searched per query "
                   f"(search_fraction {info['search_fraction']:.6g})")
    else:
        out.append("  partitions: none (every query scans all items)")
    ah = info["asymmetric_hashing"]
    out.append("  scoring: " + (
        f"asymmetric hashing, {ah['num_blocks']} blocks x {ah['codes_per_block']} codes, dims/block "
        f"{ah['dimensions_per_block']}, {ah['lookup_type']} lookup" if ah else "float brute force"))
    out.append(f"  items: {info['num_items']}")
    out.append(f"  user info: {info['user_info']!r}")
    for i, item in enumerate(info["first_items"]):
        out.append(f"  item {i}: {item}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    if compat.can_prepare_tflite_process():
        compat.prepare_tflite_process()
    info = inspect(args.file, args.items)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        print("\n".join(_lines(info)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
