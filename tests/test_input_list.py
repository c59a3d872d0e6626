"""``--input-list``: a text file of image paths, read in byte-range parts by workers side by side.

Every line lands in exactly one part whatever the part size (a line belongs to the part its first
byte is in), blank lines and line ends are not paths, the file's order is the listing's, a line
that is not UTF-8 is a named error, and ``embed`` on a list reconciles: a listed path that is
missing is a dead letter, a path listed twice is embedded once.
"""

from __future__ import annotations

import pytest
import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beamlens import EmbedRequest, embed
from beamlens.models.errors import BeamlensError
from beamlens.models.shards.records import Manifest
from beamlens.pipelines import cli
from beamlens.transforms import listing
from beamlens.transforms.listing import ListImages, iter_image_refs, iter_list_paths, iter_part_refs, plan_parts
from beamlens.transforms.read_images import ImageSource
from tests import embed_helpers as h

LINES = [b"/a/one.jpg\n", b"\n", b"gs://bucket/two words.jpg\r\n", b"/b/\xc3\xa9t\xc3\xa9.png\n", b"  \n", b"/c/last.jpg"]
PATHS = ["/a/one.jpg", "gs://bucket/two words.jpg", "/b/été.png", "/c/last.jpg"]


@pytest.fixture()
def image_list(tmp_path):
    path = tmp_path / "images.txt"
    path.write_bytes(b"".join(LINES))
    return path


@pytest.mark.parametrize("part_bytes", [1, 2, 7, 11, 12, 13, 64, 10_000])
def test_every_line_lands_in_exactly_one_part_in_file_order(image_list, part_bytes):
    source = ImageSource(input_list=str(image_list))
    parts = plan_parts(source, list_part_bytes=part_bytes)
    size = image_list.stat().st_size
    assert len(parts) == -(-size // part_bytes) and [part.number for part in parts] == list(range(len(parts)))
    assert parts[0].span[0] == 0 and parts[-1].span[1] == size
    assert [ref.uri for part in parts for ref in iter_part_refs(part)] == PATHS
    assert [ref.image_id for ref in iter_image_refs(source)] == PATHS


def test_a_part_starting_on_a_line_start_owns_that_line(image_list):
    first_line = len(LINES[0])
    assert list(iter_list_paths(str(image_list), (0, first_line))) == ["/a/one.jpg"]
    assert list(iter_list_paths(str(image_list), (first_line, first_line + 1))) == []  # the blank line only
    assert list(iter_list_paths(str(image_list), (first_line + 1, first_line + 2))) == ["gs://bucket/two words.jpg"]


def test_the_pipeline_lists_a_list_in_parts(image_list):
    source = ImageSource(input_list=str(image_list))
    with TestPipeline(runner="FnApiRunner") as pipeline:
        listed = pipeline | ListImages(source, list_part_bytes=16)
        assert_that(listed | beam.Map(lambda item: item[1].uri), equal_to(PATHS))


def test_a_line_that_is_not_utf8_is_named(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"/ok.jpg\n/\xff\xfe.jpg\n")
    with pytest.raises(BeamlensError, match=r"bad.txt: the line at byte 8 is not UTF-8 text"):
        list(iter_list_paths(str(bad)))


def test_sources_need_exactly_one_kind_and_an_empty_list_has_no_images(tmp_path, image_list):
    with pytest.raises(BeamlensError, match="exactly one"):
        ImageSource(input_glob="*.jpg", input_list=str(image_list))
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"\n\n")
    assert not listing.has_images(ImageSource(input_list=str(empty)))
    assert listing.has_images(ImageSource(input_list=str(image_list)))
    assert listing.count_images(ImageSource(input_list=str(image_list)), 3) == 3
    assert ImageSource(input_list=str(image_list)).describe() == f"list {image_list}"
    with pytest.raises(BeamlensError, match="cannot read --input-list .*missing.txt"):
        plan_parts(ImageSource(input_list=str(tmp_path / "missing.txt")))


def test_cli_rejects_a_glob_and_a_list_together(tmp_path, image_list, capsys):
    (tmp_path / "m.keras").write_bytes(b"not read: refused before")
    code = cli.main(["embed", "--input-glob", str(tmp_path / "*.jpg"), "--input-list", str(image_list),
                     "--model", str(tmp_path / "m.keras"), "--output", str(tmp_path / "out")])
    assert code == 2 and "exactly one" in capsys.readouterr().err
    code = cli.main(["embed", "--input-list", str(tmp_path / "nope.txt"), "--model", str(tmp_path / "m.keras"),
                     "--output", str(tmp_path / "out")])
    assert code == 2 and "--input-list" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_embed_from_a_list_reconciles_missing_and_repeated_paths(tmp_path):
    photos = h.real_photos()[:3]
    missing = tmp_path / "gone.jpg"
    lines = [str(photos[0]), str(photos[1]), str(missing), str(photos[2]), str(photos[0])]  # photos[0] twice
    image_list = tmp_path / "images.txt"
    image_list.write_text("\n".join(lines) + "\n")
    encoder = h.build_tiny_encoder(tmp_path / "encoder.keras")
    out = tmp_path / "out"
    result = embed(EmbedRequest(model=str(encoder), output=str(out), input_list=str(image_list), num_shards=2))
    assert sorted(h.read_shards(out)) == sorted(str(photo) for photo in photos)
    assert {image_id: error["reason"] for image_id, error in h.read_errors(out).items()} == {str(missing): "file not found"}
    manifest = Manifest.from_json((out / "manifest.json").read_text())
    assert (result.listed, result.embedded, result.failed, result.duplicates_dropped) == (4, 3, 1, 1)
    assert (manifest.count, manifest.errors) == (3, 1)
    assert manifest.extra["source"] == f"list {image_list}"


def test_reindex_from_a_list_embeds_only_the_new_lines(tmp_path):
    """A nightly inventory grows by a line: the re-index embeds that photo and carries the rest."""
    from beamlens.pipelines import reindex  # noqa: PLC0415

    photos = h.coco_mini_photos(4)
    image_list = tmp_path / "inventory.txt"
    image_list.write_text("".join(f"{photo}\n" for photo in photos[:3]))
    encoder = h.build_tiny_encoder(tmp_path / "encoder.keras")
    args = ["--output-root", str(tmp_path / "index"), "--input-list", str(image_list), "--model", str(encoder),
            "--no-searcher", "--num-shards", "2", "--max-batch-size", "2", "--runner", "FnApiRunner"]
    first = reindex.run(args, save_main_session=False)
    assert first["plan"]["counts"]["new"] == 3
    with open(image_list, "a") as out:
        out.write(f"{photos[3]}\n")
    second = reindex.run(args, save_main_session=False)
    assert second["plan"]["counts"]["new"] == 1 and second["plan"]["counts"]["carry"] == 3
    assert second["plan"]["sample_ids"]["new"] == [str(photos[3])]
