"""``beamlens make-corpus``: write the synthetic captioned default corpus (COCO layout).

    beamlens make-corpus --out build/corpus --num-images 2000

The output is a normal COCO caption layout, so every other command (train, embed, evaluate) reads
it exactly as it would read real COCO; ``annotations/attributes_*.json`` adds exact ground truth.
"""

from __future__ import annotations

import argparse
import sys

from beamlens.models.corpora.synthetic import CorpusOptions, write_corpus

_DEFAULTS = CorpusOptions()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="beamlens make-corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write the corpus into (empty or absent)")
    parser.add_argument("--num-images", type=int, default=_DEFAULTS.num_images, help="images in total (default %(default)s)")
    parser.add_argument("--image-size", type=int, default=_DEFAULTS.image_size, help="side in pixels (default %(default)s)")
    parser.add_argument("--val-fraction", type=float, default=_DEFAULTS.val_fraction,
                        help="share of images in the val split (default %(default)s)")
    parser.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="random seed (default %(default)s)")
    parser.add_argument("--captions-per-image", type=int, default=_DEFAULTS.captions_per_image,
                        help="different captions per image, at least 2 (default %(default)s)")
    parser.add_argument("--force", action="store_true", help="replace a corpus made with other options")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    options = CorpusOptions(
        num_images=args.num_images, image_size=args.image_size, val_fraction=args.val_fraction,
        seed=args.seed, captions_per_image=args.captions_per_image,
    )
    summary = write_corpus(args.out, options, progress=lambda line: print(line, flush=True),
                           force=args.force, progress_every=max(500, min(10_000, options.num_images // 10)))
    if summary.created:
        total = sum(summary.counts.values())
        rate = total / summary.seconds if summary.seconds else float("inf")
        print(f"made {total} images ({summary.counts['train']} train, {summary.counts['val']} val) and "
              f"{sum(summary.caption_counts.values())} captions in {summary.seconds:.1f} s ({rate:.0f} images/s)")
    for split in ("train", "val"):
        print(f"  {split}: {summary.counts[split]} images in {summary.image_dirs[split]}, "
              f"captions {summary.captions_files[split]}, ground truth {summary.attributes_files[split]}")
    print(f"  manifest: {summary.manifest}")
    first = summary.first_image
    if first:
        print(f"first image {first['file']}:")
        for caption in first["captions"]:
            print(f"  - {caption}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
