"""Searcher builder benchmark (hand-run): build time/memory, Task Library query latency and recall.

    .venv/bin/python -m benchmarks.searcher_benchmark                 # N = 100k (build) and 123k (queries)
    .venv/bin/python -m benchmarks.searcher_benchmark --sizes 100000,1000000 --query-sizes 123000,1000000

Data: clustered 128-d unit vectors (1,000 Gaussian clusters), queries are 200 held-out points of
the same distribution. Each build runs in its own process so its peak RSS is its own.
Queries go through the real Task Library TextSearcher with an embedder that returns the query
vector: a TFLite model (converted once with TensorFlow in a subprocess) whose RegexTokenizer
vocabulary has 65,536 value tokens; a query is 128 tokens, one 16-bit value per dimension, so
the on-device query equals the intended vector to 3e-5. TextEmbedder time on the same model is
measured too: searcher minus embedder is the index's own cost. scann's pybind searcher (server
side) runs on the same vectors and partitions, side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks.child_build import build

DIM = 128
VALUE_TOKENS = 65536
SPECIAL = ["<PAD>", "<START>", "<UNKNOWN>"]


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
def clustered(n: int, seed: int = 0, clusters: int = 1000, spread: float = 0.35) -> np.ndarray:
    rng = np.random.default_rng(12345)
    centers = rng.normal(size=(clusters, DIM)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        x = centers[rng.integers(0, clusters, m)] + spread / np.sqrt(DIM) * rng.normal(size=(m, DIM)).astype(np.float32)
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def write_inputs(folder: str, n: int) -> tuple[str, str]:
    npy, meta = os.path.join(folder, f"v{n}.npy"), os.path.join(folder, f"m{n}.jsonl")
    if not os.path.exists(npy):
        np.save(npy, clustered(n))
        with open(meta, "w") as stream:
            for i in range(n):
                stream.write(f'{{"id":"{i}","uri":"","captions":[]}}\n')
    return npy, meta


def encode_query(vector: np.ndarray) -> tuple[str, np.ndarray]:
    """The query text for a vector, and the vector the embedder will actually output."""
    k = np.clip(np.round((np.asarray(vector) + 1.0) / 2.0 * (VALUE_TOKENS - 1)), 0, VALUE_TOKENS - 1).astype(int)
    decoded = (k.astype(np.float32) / np.float32(VALUE_TOKENS - 1)) * np.float32(2.0) - np.float32(1.0)
    return " ".join(f"v{x:05d}" for x in k), decoded.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The query-vector embedder
# ---------------------------------------------------------------------------------------------
def convert_embedder(out_path: str) -> None:
    """(TensorFlow subprocess) ids [1, 129] -> the 128 values the value tokens stand for."""
    import tensorflow as tf  # noqa: PLC0415

    @tf.function(input_signature=[tf.TensorSpec([1, DIM + 1], tf.int32)])
    def embed(ids):
        values = tf.cast(ids[:, 1:] - len(SPECIAL), tf.float32)
        return values / float(VALUE_TOKENS - 1) * 2.0 - 1.0

    converter = tf.lite.TFLiteConverter.from_concrete_functions([embed.get_concrete_function()], embed)
    with open(out_path, "wb") as stream:
        stream.write(converter.convert())


def add_tokenizer_metadata(model_path: str, vocab_path: str, out_path: str) -> None:
    """(tflite process) RegexTokenizer metadata so the Task Library TextSearcher accepts the model."""
    from tensorflow_lite_support.metadata.python.metadata_writers import metadata_info, metadata_writer  # noqa: PLC0415

    with open(vocab_path, "w") as stream:
        for i, token in enumerate(SPECIAL):
            stream.write(f"{token} {i}\n")
        for v in range(VALUE_TOKENS):
            stream.write(f"v{v:05d} {v + len(SPECIAL)}\n")
    with open(model_path, "rb") as stream:
        model = stream.read()
    writer = metadata_writer.MetadataWriter.create_from_metadata_info(
        model,
        general_md=metadata_info.GeneralMd(name="query_vector_embedder"),
        input_md=[metadata_info.InputTextTensorMd(
            name="ids", tokenizer_md=metadata_info.RegexTokenizerMd(r"[^\w']+", vocab_path))],
        output_md=[metadata_info.TensorMd(name="embedding")],
        associated_files=[vocab_path],
    )
    with open(out_path, "wb") as stream:
        stream.write(writer.populate())


def time_text(model_path: str, texts: list[str], searcher: bool, max_results: int = 10) -> tuple[list[float], list[list[int]]]:
    """(tflite process) per-query latency in ms and result ids, TextSearcher or TextEmbedder, 1 thread."""
    from tflite_support.task import core, processor, text  # noqa: PLC0415

    base = core.BaseOptions(file_name=model_path, num_threads=1)
    if searcher:
        engine = text.TextSearcher.create_from_options(text.TextSearcherOptions(
            base_options=base, search_options=processor.SearchOptions(max_results=max_results)))
        run = engine.search
    else:
        engine = text.TextEmbedder.create_from_options(text.TextEmbedderOptions(base_options=base))
        run = engine.embed
    for t in texts[:10]:
        run(t)  # warm-up
    latencies, ids = [], []
    for t in texts:
        start = time.perf_counter()
        result = run(t)
        latencies.append((time.perf_counter() - start) * 1e3)
        if searcher:
            ids.append([int(json.loads(bytes(n.metadata))["id"]) for n in result.nearest_neighbors])
    return latencies, ids


def scann_side_by_side(npy: str, queries: np.ndarray, num_leaves: int, leaves: list[int], score: str) -> dict:
    """(tflite process) scann pybind on the same vectors: single-query latency and ids per leaves searched."""
    from beamlens.models import compat  # noqa: PLC0415

    pybind = compat.import_scann_pybind()
    db = np.load(npy)
    builder = pybind.builder(db, 10, "dot_product").tree(num_leaves, leaves[0], training_sample_size=100000)
    builder = builder.score_ah(1, anisotropic_quantization_threshold=0.2, hash_type="lut256") if score == "ah" else builder.score_brute_force()
    searcher = builder.build()
    searcher.set_num_threads(1)
    out = {}
    for L in leaves:
        for q in queries[:10]:
            searcher.search(q, final_num_neighbors=10, leaves_to_search=L)
        lat, ids = [], []
        for q in queries:
            start = time.perf_counter()
            idx, _ = searcher.search(q, final_num_neighbors=10, leaves_to_search=L)
            lat.append((time.perf_counter() - start) * 1e3)
            ids.append([int(i) for i in idx])
        out[L] = (lat, ids)
    return out


# ---------------------------------------------------------------------------------------------
def _recall(got: list[list[int]], exact: np.ndarray) -> float:
    return float(np.mean([len(set(g) & set(e.tolist())) / exact.shape[1] for g, e in zip(got, exact)]))


def _pct(values: list[float], p: float) -> float:
    return float(np.percentile(values, p))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000", help="build-only sizes (comma list)")
    parser.add_argument("--query-sizes", default="123000", help="sizes with Task Library query runs")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--convert-embedder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.convert_embedder:
        convert_embedder(args.convert_embedder)
        return 0

    from beamlens.models import compat  # noqa: PLC0415

    compat.prepare_tflite_process()  # this process: Task Library only; TF runs in subprocesses
    from beamlens.models.searcher import attach_index, read_searcher, rewrite_leaves_to_search  # noqa: PLC0415

    work = args.workdir or tempfile.mkdtemp(prefix="beamlens-searcher-bench-")
    os.makedirs(work, exist_ok=True)
    print(f"workdir {work}", flush=True)
    rows: list[str] = []

    def emit(line: str) -> None:
        print(line, flush=True)
        rows.append(line)

    emit("| N | build | seconds | peak RSS MB | leaves | searched | index MB | N x d MB | est. recall@10 |")
    emit("|---|---|---|---|---|---|---|---|---|")
    sizes = [int(s) for s in args.sizes.split(",") if s]
    for n in sizes:
        npy, meta = write_inputs(work, n)
        result = build({"npy": npy, "meta": meta, "out": os.path.join(work, f"auto{n}.ldb")})
        r = result["report"]
        emit(f"| {n} | auto ({r['score']}{', ' + r['lookup_type'] if r['lookup_type'] else ''}) | {result['seconds']:.1f} | "
             f"{result['peak_rss_mb']:.0f} | {r['num_leaves']} | {r['num_leaves_to_search']} | {r['index_bytes'] / 1e6:.1f} | "
             f"{n * DIM / 1e6:.1f} | {r['estimated_recall_at_10']:.3f} |")

    query_sizes = [int(s) for s in args.query_sizes.split(",") if s]
    if not query_sizes:
        return 0
    raw_model = os.path.join(work, "query_embedder_raw.tflite")
    embedder = os.path.join(work, "query_embedder.tflite")
    if not os.path.exists(embedder):
        subprocess.run([sys.executable, "-m", "benchmarks.searcher_benchmark", "--convert-embedder", raw_model],
                       check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        add_tokenizer_metadata(raw_model, os.path.join(work, "vocab.txt"), embedder)
    queries = clustered(args.queries, seed=99)
    encoded = [encode_query(q) for q in queries]
    texts = [t for t, _ in encoded]
    qvecs = np.stack([v for _, v in encoded])
    embed_lat, _ = time_text(embedder, texts, searcher=False)
    emit("")
    emit(f"TextEmbedder alone (tokenize 128 tokens + model), 1 thread: p50 {_pct(embed_lat, 50):.3f} ms, p99 {_pct(embed_lat, 99):.3f} ms")
    emit("")
    emit("| N | scoring | leaves searched | TextSearcher p50 ms | p99 ms | index part p50 ms | recall@10 | scann pybind p50 ms | scann recall@10 | index MB | N x d MB |")
    emit("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in query_sizes:
        npy, meta = write_inputs(work, n)
        vectors = np.load(npy, mmap_mode="r")
        exact = np.argsort(-(qvecs @ np.asarray(vectors).T), axis=1)[:, :10]
        configs = [("auto", {})]
        auto = build({"npy": npy, "meta": meta, "out": os.path.join(work, f"q_auto{n}.ldb")})
        num_leaves = auto["report"]["num_leaves"]
        configs = [
            ("auto: " + auto["report"]["score"] + (f" {auto['report']['lookup_type']}" if auto["report"]["lookup_type"] else ""),
             os.path.join(work, f"q_auto{n}.ldb"), auto),
        ]
        for score, lookup in (("ah", "int8"), ("ah", "int16"), ("brute_force", None)):
            out = os.path.join(work, f"q_{score}_{lookup}_{n}.ldb")
            spec = {"npy": npy, "meta": meta, "out": out, "score": score, "num_leaves": num_leaves, "leaves": 4}
            if lookup:
                spec["lookup"] = lookup
            configs.append((score if not lookup else f"ah {lookup}", out, build(spec)))
        emit(f"(N = {n}: auto build {auto['seconds']:.1f} s, peak RSS {auto['peak_rss_mb']:.0f} MB; why: "
             + "; ".join(auto["report"]["reasons"]) + ")")
        scann_cache: dict[str, dict] = {}
        for label, index_path, built in configs:
            searcher = os.path.join(work, f"s_{os.path.basename(index_path)}.tflite")
            attach_index(embedder, index_path, searcher)
            chosen = built["report"]["num_leaves_to_search"]
            leaves_list = sorted({1, 2, 4, 8, 16, chosen}) if not label.startswith("auto") else [chosen]
            score = built["report"]["score"]
            if score not in scann_cache:
                scann_cache[score] = scann_side_by_side(npy, qvecs, num_leaves, sorted({1, 2, 4, 8, 16, chosen}), score)
            for L in leaves_list:
                variant = os.path.join(work, f"s_{os.path.basename(index_path)}_{L}.tflite")
                rewrite_leaves_to_search(searcher, variant, L)
                lat, ids = time_text(variant, texts, searcher=True)
                s_lat, s_ids = scann_cache[score][L]
                size = read_searcher(variant).index_bytes
                emit(f"| {n} | {label} | {L}/{num_leaves} | {_pct(lat, 50):.3f} | {_pct(lat, 99):.3f} | "
                     f"{_pct(lat, 50) - _pct(embed_lat, 50):.3f} | {_recall(ids, exact):.3f} | {_pct(s_lat, 50):.3f} | "
                     f"{_recall(s_ids, exact):.3f} | {size / 1e6:.1f} | {n * DIM / 1e6:.1f} |")
                os.remove(variant)
    with open(os.path.join(work, "results.md"), "w") as stream:
        stream.write("\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
