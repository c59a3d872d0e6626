"""``beamlens export-pretrained``: a pretrained image backbone as an image embedder (no training).

    beamlens export-pretrained --out build/pretrained            # EfficientNet-Lite0, 224 px
    beamlens embed --input-glob 'photos/*.jpg' --model build/pretrained/vision_encoder.keras \\
        --resize task_library --output build/pretrained/embeddings
    beamlens build-searcher --shards build/pretrained/embeddings --out build/pretrained \\
        --image-embedder build/pretrained/image_embedder.tflite

writes ``vision_encoder.keras`` (Beam), ``image_embedder.tflite`` (Task Library metadata) and
``pretrained_embedder.json`` into ``--out``. A ready-made Task Library embedder ``.tflite`` (such
as a MobileNetV3 image embedder) needs no export: give it to ``beamlens embed --model`` directly.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from models.pretrained_export import DEFAULT_BACKBONE, export_pretrained


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="beamlens export-pretrained", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE,
                   help=f"registered image backbone (default {DEFAULT_BACKBONE}; others need --weights)")
    p.add_argument("--image-size", type=int, default=224,
                   help="square input size of the exported model (EfficientNet-Lite0's weights expect 224)")
    p.add_argument("--weights", default=None, help="local weights file instead of the backbone's own (e.g. another .pth)")
    p.add_argument("--resize-to", type=int, default=None,
                   help="resize inside the model to this size (e.g. 224) whatever --image-size is")
    p.add_argument("--no-l2-normalize", action="store_true", help="leave the features unnormalised")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    paths = export_pretrained(args.out, args.backbone, args.image_size, args.weights,
                              l2_normalize=not args.no_l2_normalize, resize_to=args.resize_to)
    for path in paths.values():
        print(f"[export-pretrained] wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
