"""``beamlens inspect``: Model Maker's searcher, a bare index, and one of ours."""

from __future__ import annotations

import json

import numpy as np
import tensorflow as tf  # noqa: F401  (keeps inspect from dedicating the pytest process to tflite-support)

from beamlens.pipelines import cli
from tests.conftest import TFLITE_SUPPORT_DATA


def test_inspect_model_maker_searcher(capsys):
    assert cli.main(["inspect", str(TFLITE_SUPPORT_DATA / "regex_searcher.tflite")]) == 0
    out = capsys.readouterr().out
    assert "input: serving_default_input_2:0 int32 [-1, 256]" in out
    assert "output: StatefulPartitionedCall:0 float32 [-1, 16]" in out
    assert "associated file on output 'StatefulPartitionedCall:0': index.ldb (SCANN_INDEX_FILE)" in out
    assert "packed file: vocab.txt" in out
    assert "distance: squared_l2" in out and "items: 5" in out
    assert "item 0: It was a sunny day." in out and "user info: 'userinfo'" in out


def test_inspect_json_of_an_index_and_of_our_searcher(tmp_path, capsys):
    assert cli.main(["inspect", str(TFLITE_SUPPORT_DATA / "searcher_index.ldb"), "--json", "--items", "2"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "index" and info["num_items"] == 5 and info["embedding_dim"] == 1024
    assert info["first_items"] == ["bird", "burger"]

    # One of ours, built through the TF-free API from files.
    from beamlens.models import compat  # noqa: PLC0415
    from beamlens.models.searcher import attach_index, build_index  # noqa: PLC0415
    from tests import searcher_tasklib_helpers as h  # noqa: PLC0415

    vectors = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    np.save(tmp_path / "v.npy", vectors)
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"id": f"i{i}", "uri": "", "captions": []}, separators=(",", ":")) + "\n" for i in range(300)))
    index, report = build_index(str(tmp_path / "v.npy"), str(tmp_path / "m.jsonl"), None, str(tmp_path / "i.ldb"), userinfo="u")
    assert report.num_items == 300
    searcher = attach_index(str(TFLITE_SUPPORT_DATA / "regex_one_embedding_with_metadata.tflite"), index, str(tmp_path / "s.tflite"))
    assert cli.main(["inspect", searcher, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_items"] == 300 and info["user_info"] == "u" and info["query_dimension"] == 16
    files = info["metadata_json"]["subgraph_metadata"][0]["output_tensor_metadata"][0]["associated_files"]
    assert files[-1]["name"] == "on_device_scann_index.ldb" and files[-1]["type"] == "SCANN_INDEX_FILE"
    assert json.loads(info["first_items"][0])["id"].startswith("i")
    # Re-attaching to a searcher replaces its index instead of packing a second one.
    again = attach_index(searcher, index, str(tmp_path / "again.tflite"))
    assert cli.main(["inspect", again, "--json"]) == 0
    info2 = json.loads(capsys.readouterr().out)
    assert sorted(info2["packed_files"]) == ["on_device_scann_index.ldb", "vocab.txt"]
    results = compat.call_tflite(h.text_search_many, again, ["good morning"], 3)
    assert len(results[0]) == 3
