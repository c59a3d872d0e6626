"""Glob listing counts every entry it matched: unreadable ones are dead-lettered at read, not lost.

Beam's LocalFileSystem drops entries it cannot stat (a dangling symbolic link vanished: not
embedded, not dead-lettered, not counted); ``transforms.listing`` lists local globs itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from beamlens.models.errors import BeamlensError
from beamlens.models.shards.records import Manifest
from beamlens.pipelines import embed_images
from tests import embed_helpers as h
from tests.conftest import PROJECT_ROOT
from beamlens.transforms import read_images
from beamlens.transforms import listing
from beamlens.transforms.listing import iter_image_refs, match_entries
from beamlens.transforms.read_images import ImageReadError, ImageSource, read_image_bytes

DANGLING_TARGET = "gone/photo.jpg"


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    return h.build_tiny_encoder(tmp_path_factory.mktemp("model") / "encoder.keras")


def _photo_folder(root: Path) -> tuple[Path, list[Path], Path]:
    """3 real photos, a dangling link and a subfolder (itself holding a photo): (folder, photos, link)."""
    folder = root / "photos"
    folder.mkdir()
    photos = []
    for photo in h.real_photos()[:3]:
        (folder / photo.name).write_bytes(photo.read_bytes())
        photos.append(folder / photo.name)
    link = folder / "moved_away.jpg"
    link.symlink_to(DANGLING_TARGET)
    (folder / "subfolder").mkdir()
    (folder / "subfolder" / "inner.jpg").write_bytes(photos[0].read_bytes())
    return folder, photos, link


def test_glob_lists_the_dangling_link_and_skips_the_subfolder(tmp_path):
    folder, photos, link = _photo_folder(tmp_path)
    refs = list(iter_image_refs(ImageSource(input_glob=str(folder / "*"))))
    assert [r.uri for r in refs] == sorted(str(p) for p in [*photos, link])
    assert len(refs) == 4 and all(r.image_id == r.uri for r in refs)
    # "**" crosses folders (Beam's meaning), still without listing the folder itself
    deep = match_entries(str(folder / "**"))
    assert sorted(deep) == sorted(str(p) for p in [*photos, link, folder / "subfolder" / "inner.jpg"])
    assert match_entries(str(link)) == [str(link)]  # a pattern without wildcards: the link itself
    assert match_entries(str(folder / "subfolder")) == []  # a folder is not an image
    assert match_entries(str(tmp_path / "nowhere" / "*.jpg")) == []


def test_embed_dead_letters_the_dangling_link_and_counts_reconcile(tmp_path, encoder):
    folder, photos, link = _photo_folder(tmp_path)
    matched = len(match_entries(str(folder / "*")))
    out = tmp_path / "out"
    embed_images.run(["--runner", "FnApiRunner", "--input-glob", str(folder / "*"), "--model", str(encoder),
                      "--output", str(out), "--num-shards", "2"], save_main_session=False)

    assert sorted(h.read_shards(out)) == sorted(str(p) for p in photos)
    errors = h.read_errors(out)
    assert errors == {str(link): {"image_id": str(link), "uri": str(link), "stage": "read",
                                  "reason": f"dangling symbolic link -> {DANGLING_TARGET}"}}
    manifest = Manifest.from_json((out / "manifest.json").read_text())
    assert (manifest.count, manifest.errors, manifest.extra["read"], matched) == (3, 1, 4, 4)
    assert manifest.count + manifest.errors == manifest.extra["read"] == matched
    assert manifest.extra["errors_by_stage"] == {"read": 1}
    assert manifest.extra["counters"] == {"read": 4, "decoded": 3, "failed": 1, "embedded": 3}


def test_permission_denied_is_the_read_reason(tmp_path, monkeypatch):
    # The error a remote filesystem raises, injected where the facade raises it (a real mode-000 file: below).
    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(read_images.files, "read_bytes", denied)
    with pytest.raises(ImageReadError) as caught:
        read_image_bytes(str(tmp_path / "secret.jpg"))
    assert caught.value.reason == "permission denied"


def test_unreadable_file_is_listed_then_denied(tmp_path):
    """A real mode-000 file. Root reads any file, so when the suite runs as root (as CI does) the
    check runs in a child without the capabilities that override file modes (util-linux setpriv)."""
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(h.real_photos()[0].read_bytes())
    secret.chmod(0)
    code = ("import sys; from beamlens.transforms.listing import match_entries\n"
            "from beamlens.transforms.read_images import ImageReadError, read_image_bytes\n"
            "print(match_entries(sys.argv[1] + '/*.jpg'))\n"
            "try:\n    read_image_bytes(sys.argv[1] + '/secret.jpg')\nexcept ImageReadError as e:\n    print(e.reason)")
    unprivileged = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    done = subprocess.run([*unprivileged, sys.executable, "-c", code, str(tmp_path)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [repr([str(secret)]), "permission denied"]


def test_a_folder_that_cannot_be_listed_is_an_error_not_a_silent_gap(tmp_path, monkeypatch):
    (tmp_path / "locked").mkdir()
    h.deny_listing(monkeypatch, "locked")
    with pytest.raises(BeamlensError, match=r"cannot list .*locked: Permission denied.* cannot be counted"):
        match_entries(str(tmp_path / "**.jpg"))


class _CountingScandir:
    """os.scandir that counts the entries its callers actually pulled."""

    def __init__(self) -> None:
        self.pulled, self._real = 0, os.scandir

    def __call__(self, path):
        real = self._real(path)
        counter = self

        class Entries:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                real.close()

            def __iter__(self):
                for entry in real:
                    counter.pulled += 1
                    yield entry

        return Entries()


def test_the_launcher_checks_a_glob_from_its_first_match_and_counts_without_keeping(tmp_path, monkeypatch):
    folder = tmp_path / "many"
    folder.mkdir()
    for n in range(200):
        (folder / f"{n:03d}.png").write_bytes(b"not decoded here")
    source = ImageSource(input_glob=str(folder / "*.png"))
    counting = _CountingScandir()
    monkeypatch.setattr(listing.os, "scandir", counting)
    assert listing.has_images(source) and counting.pulled == 1  # one entry read, not 200
    assert listing.count_images(source, 50) == 50 and counting.pulled == 51
    assert listing.count_images(source, 10_000) == 200
    assert not listing.has_images(ImageSource(input_glob=str(folder / "*.jpg")))
    assert not listing.has_images(ImageSource(input_glob=str(tmp_path / "nowhere" / "*.png")))


def test_an_empty_coco_file_fails_the_run_and_publishes_nothing(tmp_path, encoder):
    captions, images, _ = h.write_coco_corpus(tmp_path, [])
    out = tmp_path / "out"
    with pytest.raises(BeamlensError, match="no images found: the source listed none; no manifest was written"):
        embed_images.run(["--captions", str(captions), "--images", str(images), "--model", str(encoder),
                          "--output", str(out), "--num-shards", "2"], save_main_session=False)
    assert not (out / "manifest.json").exists()


def test_describe_names_the_default_image_folder(tmp_path):
    captions, images, _ = h.write_coco_corpus(tmp_path, h.real_photos()[:1])
    text = ImageSource(captions_file=str(captions)).describe()
    assert "None" not in text
    assert text == f"COCO captions {captions} (images under {images}, the default for that caption file)"
    given = ImageSource(captions_file=str(captions), image_root="/elsewhere").describe()
    assert given == f"COCO captions {captions} (images under /elsewhere)"
    odd = ImageSource(captions_file=str(tmp_path / "my_captions.json")).describe()  # no split in the name
    assert "None" not in odd and "no --images" in odd
