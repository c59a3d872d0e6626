"""The COCO captions reader that training and the Beam pipeline share.

Both the trainer (models/) and the embed pipeline (transforms/) list a corpus from the same
COCO caption file, so they must agree on ids, paths and captions; this module is that one
agreement. It is pure Python (no TensorFlow, no Beam), takes the file's bytes so the caller can
read them from any filesystem (local, gs://), and turns every malformed record into a
:class:`~models.errors.BeamlensError` that names the file and the record: a user with a broken
100k-image caption file must learn *which* record is wrong, not get a ``KeyError``.

Format (COCO 2014/2017 ``captions_*.json``)::

    {"info": {...}, "licenses": [...],
     "images": [{"id": 1, "file_name": "000000000001.jpg", "width": 640, "height": 480, ...}],
     "annotations": [{"id": 7, "image_id": 1, "caption": "a cat on a mat"}]}
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass
from typing import Any

from beamlens.models.io import files
from beamlens.models.errors import BeamlensError

#: How many missing image files an error names before it only counts the rest.
MISSING_FILES_NAMED = 5


@dataclass(frozen=True)
class CocoImage:
    """One image of a COCO caption file and its captions (COCO order kept)."""

    image_id: str  # the COCO integer id as decimal text: the key that travels with embeddings
    file_name: str
    path: str  # image_root joined with file_name, '/'-separated so gs:// roots work
    captions: tuple[str, ...]
    width: int | None
    height: int | None


def split_name_from_captions_file(path: str) -> str | None:
    """``.../captions_train2014.json`` -> ``train2014``; None when the name is not COCO-style."""
    name = posixpath.basename(path.replace(os.sep, "/"))
    prefix, suffix = "captions_", ".json"
    if name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + len(suffix):
        return name[len(prefix):-len(suffix)]
    return None


def default_image_root(captions_file: str) -> str:
    """COCO layout: ``<root>/annotations/captions_X.json`` keeps its images in ``<root>/X``."""
    split = split_name_from_captions_file(captions_file)
    if split is None:
        raise BeamlensError(
            f"cannot guess the image folder of {captions_file}: its name is not captions_<split>.json; "
            "give the image folder explicitly"
        )
    annotations_dir = posixpath.dirname(captions_file.replace(os.sep, "/"))
    if not annotations_dir:  # the caption file is in the current folder: its images are beside it
        return posixpath.join("..", split)
    parent = posixpath.dirname(annotations_dir)
    return posixpath.join(parent, split) if parent else split


def _join(image_root: str, file_name: str) -> str:
    return posixpath.join(image_root, file_name) if image_root else file_name


def _record_id(value: Any) -> str | None:
    """COCO ids are integers; ids written as non-empty text are tolerated. Anything else: None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _optional_int(value: Any, what: str, source: str, record: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BeamlensError(f"{source}: {record} has an invalid {what} {value!r} (expected a whole number)")
    return value


def _decode(data: bytes | str, source: str) -> dict:
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise BeamlensError(f"{source}: not UTF-8 text (byte {error.start}): not a COCO caption file") from None
    try:
        doc = json.loads(data)
    except json.JSONDecodeError as error:
        raise BeamlensError(
            f"{source}: not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}"
        ) from None
    if not isinstance(doc, dict):
        raise BeamlensError(f"{source}: expected a JSON object with 'images' and 'annotations', got {type(doc).__name__}")
    for key in ("images", "annotations"):
        if key not in doc:
            raise BeamlensError(f"{source}: missing the '{key}' key (a COCO caption file has 'images' and 'annotations')")
        if not isinstance(doc[key], list):
            raise BeamlensError(f"{source}: '{key}' must be a list, got {type(doc[key]).__name__}")
    return doc


def parse_coco_captions(data: bytes | str, *, source: str, image_root: str) -> list[CocoImage]:
    """Images of a COCO caption file in file order, each with its stripped captions.

    ``source`` names the file in error messages. An image without captions is kept
    (``captions=()``): it can still be embedded and searched by image.
    """
    doc = _decode(data, source)
    images: list[dict] = []
    index_of: dict[str, int] = {}
    for position, record in enumerate(doc["images"]):
        where = f"images[{position}]"
        if not isinstance(record, dict):
            raise BeamlensError(f"{source}: {where} is not an object")
        image_id = _record_id(record.get("id"))
        if image_id is None:
            raise BeamlensError(f"{source}: {where} has no valid 'id' (got {record.get('id')!r})")
        where = f"{where} (id {image_id})"
        file_name = record.get("file_name")
        if not isinstance(file_name, str) or not file_name.strip():
            raise BeamlensError(f"{source}: {where} has no 'file_name'")
        if image_id in index_of:
            raise BeamlensError(
                f"{source}: duplicate image id {image_id} (images[{index_of[image_id]}] and images[{position}])"
            )
        index_of[image_id] = position
        images.append({
            "image_id": image_id,
            "file_name": file_name.strip(),
            "width": _optional_int(record.get("width"), "width", source, where),
            "height": _optional_int(record.get("height"), "height", source, where),
        })
    captions: list[list[str]] = [[] for _ in images]
    for position, record in enumerate(doc["annotations"]):
        where = f"annotations[{position}]"
        if not isinstance(record, dict):
            raise BeamlensError(f"{source}: {where} is not an object")
        if "id" in record:
            where = f"annotation id {record['id']} ({where})"
        image_id = _record_id(record.get("image_id"))
        if image_id is None:
            raise BeamlensError(f"{source}: {where} has no valid 'image_id' (got {record.get('image_id')!r})")
        if image_id not in index_of:
            raise BeamlensError(f"{source}: {where} names image id {image_id}, which is not in 'images'")
        caption = record.get("caption")
        if not isinstance(caption, str):
            raise BeamlensError(f"{source}: {where} for image {image_id} has no 'caption' text")
        caption = caption.strip()
        if not caption:
            raise BeamlensError(f"{source}: {where} for image {image_id} has an empty caption")
        captions[index_of[image_id]].append(caption)
    return [
        CocoImage(
            image_id=image["image_id"],
            file_name=image["file_name"],
            path=_join(image_root, image["file_name"]),
            captions=tuple(texts),
            width=image["width"],
            height=image["height"],
        )
        for image, texts in zip(images, captions)
    ]


def load_coco_captions(
    captions_file: str, image_root: str | None = None, *, check_files: bool = False
) -> list[CocoImage]:
    """Read a local COCO caption file; ``image_root`` defaults to the COCO sibling folder.

    ``check_files`` verifies every listed image exists (local roots) and reports all missing ones
    in one error, so a user fixes the corpus in one pass rather than one file per run.
    """
    if image_root is None:
        image_root = default_image_root(captions_file)
    try:
        with open(captions_file, "rb") as stream:
            data = stream.read()
    except FileNotFoundError:
        raise BeamlensError(f"captions file not found: {captions_file}") from None
    except IsADirectoryError:
        raise BeamlensError(f"captions file is a directory, expected a COCO captions_*.json: {captions_file}") from None
    except OSError as error:
        raise BeamlensError(f"cannot read captions file {captions_file}: {error.strerror or error}") from None
    images = parse_coco_captions(data, source=captions_file, image_root=image_root)
    if check_files:
        _check_files(images, captions_file, image_root)
    return images


def _check_files(images: list[CocoImage], captions_file: str, image_root: str) -> None:
    if files.is_remote(image_root):
        raise BeamlensError(f"check_files works on local image folders only, not {image_root}")
    missing = [image for image in images if not os.path.isfile(image.path)]
    if not missing:
        return
    named = ", ".join(f"{image.file_name} (id {image.image_id})" for image in missing[:MISSING_FILES_NAMED])
    more = f" and {len(missing) - MISSING_FILES_NAMED} more" if len(missing) > MISSING_FILES_NAMED else ""
    raise BeamlensError(
        f"{len(missing)} of {len(images)} images listed in {captions_file} are missing under {image_root}: "
        f"{named}{more}"
    )
