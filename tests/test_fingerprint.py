"""model_fingerprint: content-based, stable across copies, different for different bytes."""

import shutil

import pytest

from beamlens.models.errors import BeamlensError
from beamlens.models.io.fingerprint import model_fingerprint


def test_fingerprint_follows_content_not_path(tmp_path):
    a = tmp_path / "a.keras"
    a.write_bytes(b"weights-1" * 1000)
    b = tmp_path / "copy" / "b.keras"
    b.parent.mkdir()
    shutil.copy(a, b)
    fa = model_fingerprint(str(a))
    assert fa.startswith("sha256:") and len(fa) == len("sha256:") + 16
    assert fa == model_fingerprint(str(b)) == model_fingerprint(str(a))
    b.write_bytes(b"weights-2" * 1000)
    assert model_fingerprint(str(b)) != fa
    # sha256 of the bytes, so anyone can check it
    import hashlib
    assert fa == "sha256:" + hashlib.sha256(a.read_bytes()).hexdigest()[:16]


def test_fingerprint_of_a_folder_and_errors(tmp_path):
    folder = tmp_path / "saved"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"graph")
    (folder / "variables" / "v.data").write_bytes(b"numbers")
    first = model_fingerprint(str(folder))
    (folder / "variables" / "v.data").write_bytes(b"numbers!")
    assert model_fingerprint(str(folder)) != first
    with pytest.raises(BeamlensError, match="model not found"):
        model_fingerprint(str(tmp_path / "none.keras"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BeamlensError, match="model folder is empty"):
        model_fingerprint(str(tmp_path / "empty"))
