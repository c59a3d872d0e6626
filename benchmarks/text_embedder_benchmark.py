"""MiniLM text embedder benchmark (hand-run): TFLite size, Task Library query latency, int8 accuracy cost.

    .venv/bin/python -m benchmarks.text_embedder_benchmark                       # MiniLM + untrained head
    .venv/bin/python -m benchmarks.text_embedder_benchmark --model-dir build/model  # a trained text_encoder.keras
    .venv/bin/python -m benchmarks.text_embedder_benchmark --max-tokens 64 --items 10000 --threads 2
    .venv/bin/python -m benchmarks.text_embedder_benchmark --dynamic-length   # inputs sized per query

For the float and the int8 (dynamic-range, channel-equalized) export of the same Keras text
encoder it reports: file size; TextEmbedder latency (tokenize + model); TextSearcher latency over
an index of ``--items`` random unit vectors plus the float Keras embeddings of the query captions
(auto-tuned by the searcher builder, as ``beamlens build-searcher`` would); cosine of the Task
Library's vectors against the float Keras encoder on the query captions (real COCO captions from
the shared test data); and how often a query's own caption comes first. Latency is per query,
``--threads`` interpreter threads (default 1: what a phone core sees), after 10 warm-up queries,
in the TensorFlow-free tflite-support worker process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run by path too, not only with -m

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("BEAMLENS_SHARED", os.path.join(os.path.dirname(PROJECT_ROOT), "shared"))


def time_queries(model_path: str, texts: list[str], searcher: bool, threads: int = 1,
                 max_results: int = 10) -> tuple[list[float], list[float], list[str]]:
    """(tflite process) per-query wall ms, per-query CPU ms of this process, and each query's first
    result id (searcher), for TextSearcher / TextEmbedder. CPU time does not grow when other jobs
    share the cores, so on a busy machine it is the steadier figure (1 thread: CPU ~ wall)."""
    from tflite_support.task import core, processor, text  # noqa: PLC0415

    base = core.BaseOptions(file_name=model_path, num_threads=threads)
    if searcher:
        engine = text.TextSearcher.create_from_options(text.TextSearcherOptions(
            base_options=base, search_options=processor.SearchOptions(max_results=max_results)))
        run = engine.search
    else:
        engine = text.TextEmbedder.create_from_options(text.TextEmbedderOptions(base_options=base))
        run = engine.embed
    for query in texts[:10]:
        run(query)
    latencies, cpu, first = [], [], []
    for query in texts:
        start, start_cpu = time.perf_counter(), time.process_time()
        result = run(query)
        latencies.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.process_time() - start_cpu) * 1e3)
        if searcher:
            first.append(json.loads(bytes(result.nearest_neighbors[0].metadata))["id"])
    return latencies, cpu, first


def coco_captions(count: int) -> list[str]:
    from beamlens.models.corpora.coco import load_coco_captions  # noqa: PLC0415

    folder = os.path.join(SHARED, "testdata", "coco-mini-cc", "annotations")
    captions = [c for split in ("val2017", "train2017")
                for image in load_coco_captions(os.path.join(folder, f"captions_{split}.json")) for c in image.captions]
    captions = list(dict.fromkeys(captions))
    return captions[:count]


def text_encoder(args: argparse.Namespace):
    """(model, max_tokens, vocab path, description)."""
    import keras  # noqa: PLC0415

    from beamlens.models.encoders.backbones import _load_all  # noqa: PLC0415
    from beamlens.models.encoders.backbones.minilm import vocab_path  # noqa: PLC0415
    from beamlens.models.encoders.towers import EncoderConfig, build_text_encoder  # noqa: PLC0415

    if args.model_dir:
        _load_all()
        with open(os.path.join(args.model_dir, "encoder_config.json")) as stream:
            config = EncoderConfig.from_dict(json.load(stream))
        model = keras.saving.load_model(os.path.join(args.model_dir, "text_encoder.keras"))
        return model, config.max_tokens, os.path.join(args.model_dir, "vocab.txt"), f"trained model {args.model_dir}"
    keras.utils.set_random_seed(0)
    config = EncoderConfig(text_backbone="minilm", max_tokens=args.max_tokens, embedding_dim=args.embedding_dim)
    return build_text_encoder(config), config.max_tokens, vocab_path(), "MiniLM + untrained projection head (seed 0)"


def _pct(values: list[float], p: float) -> float:
    return float(np.percentile(values, p))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", help="a beamlens train folder with a BERT-like text encoder (default: MiniLM + untrained head)")
    parser.add_argument("--max-tokens", type=int, default=32, help="sequence length of the export (default 32)")
    parser.add_argument("--embedding-dim", type=int, default=128)
    parser.add_argument("--items", type=int, default=10000, help="random unit vectors in the index")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dynamic-length", action="store_true", help="export with [1, None] inputs (BERT-like encoders)")
    parser.add_argument("--workdir")
    parser.add_argument("--out", help="JSON report (default: <workdir>/text_embedder_benchmark.json)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from benchmarks.text_embedder_benchmark import time_queries as timed  # by module name, not __main__ (call_tflite)
    from beamlens.models import compat  # noqa: PLC0415
    from beamlens.models.export import metadata as tflite_metadata
    from beamlens.models.encoders.bert_tokenizer import load_caption_tokenizer  # noqa: PLC0415
    from beamlens.models.export.encoders import export_text_embedder  # noqa: PLC0415
    from beamlens.models.searcher import attach_index, build_index  # noqa: PLC0415

    work = args.workdir or tempfile.mkdtemp(prefix="beamlens-text-embedder-bench-")
    os.makedirs(work, exist_ok=True)
    model, max_tokens, vocab, what = text_encoder(args)
    tokenizer = load_caption_tokenizer(vocab)
    captions = coco_captions(args.queries)
    reference = np.asarray(model.predict(tokenizer.encode_batch(captions, max_tokens), verbose=0), np.float32)
    dim = reference.shape[1]
    print(f"workdir {work}\nencoder: {what}, {model.count_params() / 1e6:.1f}M parameters, max_tokens {max_tokens}, "
          f"{len(captions)} query captions, index {args.items} random + {len(captions)} caption vectors, {args.threads} thread(s)",
          flush=True)

    rng = np.random.default_rng(0)
    noise = rng.normal(size=(args.items, dim)).astype(np.float32)
    vectors = np.concatenate([reference / np.linalg.norm(reference, axis=1, keepdims=True),
                              noise / np.linalg.norm(noise, axis=1, keepdims=True)]).astype(np.float32)
    npy, meta = os.path.join(work, "vectors.npy"), os.path.join(work, "metadata.jsonl")
    np.save(npy, vectors)
    with open(meta, "w") as stream:
        for i in range(len(vectors)):
            stream.write(json.dumps({"id": f"c{i}" if i < len(captions) else f"r{i}"}) + "\n")
    index, build = build_index(npy, meta, out_path=os.path.join(work, "index.ldb"))
    print(f"index: {build.score}, {build.num_leaves} leaves, {build.num_leaves_to_search} searched, "
          f"{build.index_bytes / 1e6:.1f} MB, estimated recall@10 {build.estimated_recall_at_10}", flush=True)

    report: dict = {"encoder": what, "max_tokens": max_tokens, "dynamic_length": args.dynamic_length,
                    "threads": args.threads, "queries": len(captions),
                    "index": build.to_dict() | {"sweeps": None}, "variants": {}}
    rows = ["| export | size MB | export s | TextEmbedder p50 / p95 ms (CPU p50) | TextSearcher p50 / p95 ms (CPU p50 / p95) "
            "| cosine vs float Keras min / mean | own caption top-1 | load avg |",
            "|---|---|---|---|---|---|---|---|"]
    for quantize in (None, "int8"):
        name = quantize or "float32"
        embedder = os.path.join(work, f"text_embedder_{name}.tflite")
        start = time.perf_counter()
        export_text_embedder(model, max_tokens, vocab, embedder, quantize, args.dynamic_length)
        export_seconds = time.perf_counter() - start
        searcher = attach_index(embedder, index, os.path.join(work, f"text_searcher_{name}.tflite"))
        task = compat.call_tflite(tflite_metadata.text_embeddings, embedder, captions)
        cosines = (task * reference).sum(1) / (np.linalg.norm(task, axis=1) * np.linalg.norm(reference, axis=1))
        embed_ms, embed_cpu, _ = compat.call_tflite(timed, embedder, captions, False, args.threads)
        search_ms, search_cpu, first = compat.call_tflite(timed, searcher, captions, True, args.threads)
        own = float(np.mean([f == f"c{i}" for i, f in enumerate(first)]))
        result = {"size_mb": os.path.getsize(embedder) / 1e6, "searcher_size_mb": os.path.getsize(searcher) / 1e6,
                  "export_seconds": export_seconds,
                  "embedder_ms": {"p50": _pct(embed_ms, 50), "p95": _pct(embed_ms, 95), "cpu_p50": _pct(embed_cpu, 50)},
                  "searcher_ms": {"p50": _pct(search_ms, 50), "p95": _pct(search_ms, 95), "cpu_p50": _pct(search_cpu, 50),
                                  "cpu_p95": _pct(search_cpu, 95)},
                  "load_average": os.getloadavg(),
                  "cosine_vs_keras": {"min": float(cosines.min()), "mean": float(cosines.mean()), "p5": _pct(list(cosines), 5)},
                  "own_caption_top1": own}
        report["variants"][name] = result
        e, q = result["embedder_ms"], result["searcher_ms"]
        rows.append(f"| {name} | {result['size_mb']:.1f} | {export_seconds:.0f} | {e['p50']:.1f} / {e['p95']:.1f} ({e['cpu_p50']:.1f}) | "
                    f"{q['p50']:.1f} / {q['p95']:.1f} ({q['cpu_p50']:.1f} / {q['cpu_p95']:.1f}) | "
                    f"{cosines.min():.4f} / {cosines.mean():.4f} | {own:.3f} | {os.getloadavg()[0]:.1f} |")
        print(rows[-1], flush=True)
    print("\n".join(rows))
    out = args.out or os.path.join(work, "text_embedder_benchmark.json")
    from beamlens.models.io.files import write_text_atomically  # noqa: PLC0415

    write_text_atomically(out, json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
