"""Atomic outputs: a failed write leaves the previous file (or nothing) and no temp files."""

from __future__ import annotations

import os

import pytest

from beamlens.models.io.files import atomic_output, write_bytes_atomically, write_text_atomically


def test_complete_writes_replace_the_file(tmp_path) -> None:
    target = tmp_path / "sub" / "out.bin"
    write_bytes_atomically(target, b"first")
    write_bytes_atomically(target, b"second")
    write_text_atomically(tmp_path / "note.txt", "héllo")
    assert target.read_bytes() == b"second"
    assert (tmp_path / "note.txt").read_text(encoding="utf-8") == "héllo"
    assert sorted(os.listdir(tmp_path / "sub")) == ["out.bin"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path) -> None:
    target = tmp_path / "searcher.tflite"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="crash midway"):
        with atomic_output(target) as stream:
            stream.write(b"half of the new")
            raise RuntimeError("crash midway")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["searcher.tflite"]


def test_append_modes_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="mode must be"):
        with atomic_output(tmp_path / "x", "ab"):
            pass


def test_dirname_of_local_remote_and_bare_paths():
    from beamlens.models.io.files import dirname

    assert dirname("/m/model/vision_encoder.keras") == "/m/model"
    assert dirname("gs://bucket/model/vision_encoder.keras") == "gs://bucket/model"
    assert dirname("vision_encoder.keras") == "."
