"""Phone-grade text queries, side by side in one run: MiniLM-24 against its static student (issue 17).

    .venv/bin/beamlens demo --workdir build/demo                                  # student (the default)
    .venv/bin/beamlens demo --workdir build/demo-minilm --text-backbone minilm    # the teacher
    .venv/bin/python -m benchmarks.text_query_speed --demo build/demo --teacher-demo build/demo-minilm

Candidates: MiniLM fp32 / int8 (the teacher demo's model) and the student fp32 / int8 (the default
demo's), every text embedder exported at 24 tokens from the model's own ``text_encoder.keras``.
For each, through the real Task Library on one thread (what a phone core sees):

* the TextSearcher over the demo's 2,000 items (``build-searcher``'s library call, auto-tuned):
  query p50 / p99, and its held-out top-10 (``beamlens evaluate``'s library call, 500 captions);
* the TextEmbedder alone (tokenizer + encoder) p50 / p99, and the searcher file size;
* real-photo R@10 on the shared coco-mini-cc photos: the same text tower under the caption-free
  heads (the demo's ``caption-free`` folder), image vectors from its vision encoder, exact search;
* at the seed's scale, 123,287 synthetic items as hard to partition as the real embeddings
  (benchmarks/hard_vectors.py says how that is measured), the student's TextSearcher p50 at the
  fewest leaves that give on-device recall@10 >= 0.95 against exact search.

The ratios are to MiniLM-24 fp32's encoder alone, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run by path too, not only with -m

from benchmarks import hard_vectors  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BEAMLENS_SHARED", ROOT.parent / "shared"))
COCO_MINI = SHARED / "testdata" / "coco-mini-cc"
REAL_PHOTO_FOLDERS = (SHARED / "testdata" / "skimage", SHARED / "testdata" / "model-maker-searcher-images")
SEED_ITEMS = 123_287


@dataclass
class Candidate:
    label: str
    demo: Path
    quantize: str | None

    @property
    def slug(self) -> str:
        """The label as a file name."""
        return self.label.replace(" ", "-")


@dataclass
class Measured:
    candidate: Candidate
    embedder: str
    searcher: str
    report: dict
    real_embedder: str  # the same text tower under the caption-free heads
    real_recall: dict = field(default_factory=dict)  # split -> R@10

    def cells(self, reference_encoder_p50: float) -> str:
        latency, encoder = self.report["latency_ms_by_k"]["10"], self.report["text_embedder_latency_ms"]
        size = os.path.getsize(self.searcher) / 1e6
        real = " / ".join(f"{self.real_recall[s]:.3f}" for s in sorted(self.real_recall))
        return (f"| {self.candidate.label} | {size:.2f} | {latency['p50']:.2f} | {latency['p99']:.2f} | "
                f"{encoder['p50']:.2f} | {encoder['p99']:.2f} | {self.report['top_k_accuracy']['searcher']['10']:.3f} | "
                f"{self.report['top_k_accuracy']['exact']['10']:.3f} | {real} | "
                f"{latency['p50'] / reference_encoder_p50:.2f} |")


def export_text(model_dir: Path, quantize: str | None, out: Path) -> str:
    """The text embedder of a model folder at its own length (24 in the demo), float or int8, as
    ``beamlens export-text-embedder --model-dir`` makes it (its library calls)."""
    from beamlens.models.export.encoders import export_text_embedder  # noqa: PLC0415
    from beamlens.models.export.encoders import trained_text_source  # noqa: PLC0415

    if not out.exists():
        source = trained_text_source(str(model_dir))
        out.parent.mkdir(parents=True, exist_ok=True)
        export_text_embedder(source.model, source.max_tokens, source.vocab, str(out), quantize)
    return str(out)


def searcher_on_demo(candidate: Candidate, embedder: str, work: Path) -> tuple[str, dict]:
    """(TextSearcher over the demo's items, the evaluate report on its held-out captions)."""
    from beamlens.models.search.report import EvaluationRequest, evaluate_searcher  # noqa: PLC0415
    from beamlens.models.searcher.build import SearcherRequest, build_searchers  # noqa: PLC0415

    shards = [str(candidate.demo / "shards" / split) for split in ("train", "val")]
    folder = work / candidate.slug
    searcher = folder / "text_searcher.tflite"
    if not searcher.exists():
        build_searchers(SearcherRequest(shards=shards, out=str(folder), text_embedder=embedder))
    report = evaluate_searcher(EvaluationRequest(
        searcher=str(searcher), text_embedder=embedder, shards=shards, out=str(folder / "report"), no_sweep=True,
        captions=str(candidate.demo / "corpus" / "annotations" / "captions_val.json"), ks=(1, 5, 10)))
    return str(searcher), report


def image_vectors(vision_encoder: Path, paths: list[str]) -> np.ndarray:
    """Unit vectors of photos through a vision_encoder.keras at its input size (the trainer's
    evaluation embedder: the same preprocessing as Beam)."""
    import keras  # noqa: PLC0415

    from beamlens.models.training.evaluation import EncoderModels, embed_images  # noqa: PLC0415

    model = keras.saving.load_model(str(vision_encoder), compile=False)
    vision_only = EncoderModels(vision=model, text=None, vocab=None, image_size=int(model.inputs[0].shape[1]), max_tokens=0)
    return hard_vectors.unit(embed_images(vision_only, paths))


def coco_split(split: str) -> tuple[list[str], list[str], np.ndarray]:
    """(photo paths, captions, the photo row of each caption) of one coco-mini-cc split."""
    from beamlens.models.corpora.coco import load_coco_captions  # noqa: PLC0415

    images = load_coco_captions(str(COCO_MINI / "annotations" / f"captions_{split}.json"))
    captions = [(row, caption) for row, image in enumerate(images) for caption in image.captions]
    return [image.path for image in images], [c for _, c in captions], np.asarray([r for r, _ in captions])


def recall_at_10(text: np.ndarray, images: np.ndarray, own: np.ndarray) -> float:
    """A caption's own photo among the 10 first: THE metric of ``beamlens evaluate-encoder``."""
    from beamlens.models.training.evaluation import top_k_accuracy  # noqa: PLC0415

    return float(top_k_accuracy(text, own, images, ks=(10,))["top_k_accuracy"]["10"])


class RealPhotos:
    """coco-mini-cc (and the other shared photos) through one caption-free folder's vision encoder."""

    def __init__(self) -> None:
        self.splits = {split: coco_split(split) for split in ("train2017", "val2017")}
        self._vectors: dict[str, dict[str, np.ndarray]] = {}

    def vectors(self, caption_free: Path) -> dict[str, np.ndarray]:
        key = str(caption_free)
        if key not in self._vectors:
            encoder = caption_free / "vision_encoder.keras"
            found = {split: image_vectors(encoder, paths) for split, (paths, _, _) in self.splits.items()}
            others = sorted(str(p) for folder in REAL_PHOTO_FOLDERS for p in folder.rglob("*")
                            if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
            found["others"] = image_vectors(encoder, others) if others else np.zeros((0, 128), np.float32)
            self._vectors[key] = found
        return self._vectors[key]

    def recall(self, caption_free: Path, embedder: str) -> dict[str, float]:
        from beamlens.models.search.runtime import embed_text  # noqa: PLC0415

        vectors = self.vectors(caption_free)
        return {split: recall_at_10(embed_text(embedder, captions), vectors[split], own)
                for split, (_, captions, own) in self.splits.items()}

    def all_items_and_queries(self, caption_free: Path, embedder: str) -> tuple[np.ndarray, np.ndarray]:
        from beamlens.models.search.runtime import embed_text  # noqa: PLC0415

        vectors = self.vectors(caption_free)
        captions = [c for _, texts, _ in self.splits.values() for c in texts]
        return np.concatenate(list(vectors.values())), embed_text(embedder, captions)


def measure(candidate: Candidate, work: Path, photos: RealPhotos) -> Measured:
    tag = f"{candidate.slug}.tflite"
    embedder = export_text(candidate.demo / "model", candidate.quantize, work / "embedders" / tag)
    print(f"[text-query-speed] {candidate.label}: searcher and held-out evaluation", file=sys.stderr, flush=True)
    searcher, report = searcher_on_demo(candidate, embedder, work)
    caption_free = candidate.demo / "caption-free"
    real_embedder = export_text(caption_free, candidate.quantize, work / "caption-free-embedders" / tag)
    return Measured(candidate, embedder, searcher, report, real_embedder, photos.recall(caption_free, real_embedder))


def seed_scale(measured: Measured, photos: RealPhotos, work: Path, emit) -> None:
    """Calibrate hard synthetic vectors on the real sets, index 123,287 of them, sweep leaves."""
    from beamlens.models import compat  # noqa: PLC0415
    from beamlens.models.knn import exact_knn  # noqa: PLC0415
    from beamlens.models.search.evaluation import ann_recall, read_shard_items  # noqa: PLC0415
    from beamlens.models.search.runtime import embed_text  # noqa: PLC0415
    from beamlens.models.searcher import attach_index, build_index, read_searcher, rewrite_leaves_to_search  # noqa: PLC0415

    from benchmarks.searcher_benchmark import time_text  # noqa: PLC0415

    demo = measured.candidate.demo
    items = read_shard_items([str(demo / "shards" / s) for s in ("train", "val")]).vectors
    captions = _held_out(demo)
    queries = embed_text(measured.embedder, captions)
    real_items, real_queries = photos.all_items_and_queries(demo / "caption-free", measured.real_embedder)
    calibration = hard_vectors.calibrate(items, [("demo held-out", items, queries), ("real photos", real_items, real_queries)])
    for (name, real), (_, synthetic) in zip(calibration.real, calibration.synthetic):
        emit(f"- {name}: real {real.describe()}; synthetic (flatten {calibration.generator.flatten}) {synthetic.describe()}")
    vectors = calibration.generator.sample(SEED_ITEMS, seed=2)
    npy, meta = work / "seed-scale.npy", work / "seed-scale.jsonl"
    np.save(npy, vectors)
    meta.write_text("".join(f'{{"id":"{i}","uri":"","captions":[]}}\n' for i in range(SEED_ITEMS)))
    index, build_report = build_index(str(npy), str(meta), None, str(work / "seed-scale.ldb"), userinfo="benchmark")
    searcher = attach_index(measured.embedder, index, str(work / "seed-scale-searcher.tflite"))
    info = read_searcher(searcher)
    exact = exact_knn(queries, vectors, 10)[0]
    emit(f"- 123,287 items: {info.num_leaves} leaves, {build_report.score} scoring, builder's choice "
         f"{info.num_leaves_to_search} leaves; embedder {measured.candidate.label}")
    emit("\n| leaves searched | TextSearcher p50 ms | p99 ms | on-device recall@10 |\n|---|---|---|---|")
    for leaves in _leaf_sweep(info.num_leaves, info.num_leaves_to_search):
        variant = str(work / f"seed-scale-{leaves}.tflite")
        rewrite_leaves_to_search(searcher, variant, leaves)
        latencies, ids = compat.call_tflite(time_text, variant, captions, True)
        recall = ann_recall(ids, exact.tolist(), [10])[10]
        emit(f"| {leaves}/{info.num_leaves} | {np.percentile(latencies, 50):.2f} | {np.percentile(latencies, 99):.2f} | {recall:.3f} |")
        os.remove(variant)
        if recall >= hard_vectors.TARGET_RECALL:
            break


def _leaf_sweep(num_leaves: int, chosen: int) -> list[int]:
    return sorted({v for v in (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, chosen) if v <= num_leaves} | {num_leaves})


def _held_out(demo: Path, limit: int = 500) -> list[str]:
    """The first ``limit`` held-out captions of a demo: the queries of the seed-scale run."""
    from beamlens.models.search.evaluation import load_caption_queries  # noqa: PLC0415

    return [q.caption for q in load_caption_queries(str(demo / "corpus" / "annotations" / "captions_val.json"))[:limit]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", type=Path, default=ROOT / "build" / "demo", help="a demo workdir made with the student")
    parser.add_argument("--teacher-demo", type=Path, default=ROOT / "build" / "demo-minilm",
                        help="a demo workdir made with --text-backbone minilm")
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "text-query-speed")
    parser.add_argument("--skip-seed-scale", action="store_true", help="only the 2,000-item comparison")
    args = parser.parse_args(argv)
    for demo, flag in ((args.demo, "--demo"), (args.teacher_demo, "--teacher-demo")):
        if not (demo / "searchers" / "searcher_report.json").exists():
            parser.error(f"{flag} {demo}: not a finished demo workdir (run `beamlens demo --workdir {demo}` first)")
    candidates = [Candidate("MiniLM-24 fp32", args.teacher_demo, None), Candidate("MiniLM-24 int8", args.teacher_demo, "int8"),
                  Candidate("student fp32", args.demo, None), Candidate("student int8", args.demo, "int8")]
    photos, rows = RealPhotos(), []

    def emit(line: str) -> None:
        print(line, flush=True)
        rows.append(line)

    measured = [measure(candidate, args.workdir, photos) for candidate in candidates]
    reference = measured[0].report["text_embedder_latency_ms"]["p50"]
    emit("| text side | searcher MB | TextSearcher p50 ms | p99 ms | encoder alone p50 ms | p99 ms | held-out top-10 "
         "(searcher) | (exact) | real-photo R@10 train2017 / val2017 | p50 / MiniLM-24 fp32 encoder |")
    emit("|---|---|---|---|---|---|---|---|---|---|")
    for result in measured:
        emit(result.cells(reference))
    emit(f"\n(MiniLM-24 fp32 encoder alone p50 {reference:.2f} ms: the target is 0.25 x = {0.25 * reference:.2f} ms; "
         f"{measured[0].report['num_queries']} held-out queries over {measured[0].report['num_items']} items, 1 thread)")
    if not args.skip_seed_scale:
        emit("\nAt the seed's scale (synthetic vectors calibrated on real ones):")
        seed_scale(measured[-1], photos, args.workdir, emit)
    (args.workdir / "results.md").write_text("\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
