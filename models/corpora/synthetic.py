"""The embedded default corpus: synthetic captioned scenes in COCO layout, with exact ground truth.

beamlens must run end to end offline, so it ships a corpus generator instead of a download. Each
image shows 1 to 3 non-overlapping shapes (shape, colour, size, left/center/right slot) on a plain
background; each caption is written from a handful of human-style templates and records the facts
it asserts (its ``mentions``). Because the facts are known, relevance is exact: an image answers a
caption iff it satisfies every fact the caption asserts (:func:`caption_matches`), which lets the
evaluation report true recall instead of "the one image the caption came from".

Design choices, and why:
- Every image is drawn from its own ``numpy`` Generator seeded by ``(seed, index)``, so output is
  byte-identical across runs and any image can be regenerated alone (resume, parallel workers).
- Objects are big and colours far apart, so a small CNN at 64x64 can learn them in minutes.
- It streams: images are written one by one and the JSON arrays are appended to part files that
  are concatenated at the end, so 1,000,000 images need no more memory than 100.
- ``corpus.json`` is written last and atomically: a folder without it is a half-written corpus.

Layout::

    <out>/annotations/captions_{train,val}.json     COCO captions (ids unique across splits)
    <out>/annotations/attributes_{train,val}.json   ground truth: scene facts, caption mentions
    <out>/{train,val}/000000000001.jpg              the images
    <out>/corpus.json                               options and counts (written last)
"""

from __future__ import annotations

import io
import itertools
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw

from beamlens.models.io.files import atomic_output
from beamlens.models.errors import BeamlensError

CORPUS_FORMAT = "beamlens-synthetic-corpus/1"
SPLITS = ("train", "val")
JPEG_QUALITY = 90

SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
#: Named colours chosen far apart in RGB and from every background.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (35, 70, 225),
    "yellow": (245, 220, 30),
    "orange": (250, 135, 20),
    "purple": (135, 45, 180),
    "cyan": (40, 210, 225),
    "pink": (250, 130, 200),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "grey": (128, 128, 128),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "beige": (225, 205, 160),
}
SIZES = ("small", "large")
POSITIONS = ("left", "center", "right")  # three columns; each object has its own column
#: Object diameter as a fraction of the image side, by size.
SIZE_FRACTION = {"small": 0.19, "large": 0.29}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}


@dataclass
class CorpusOptions:
    """What to generate; the same options always give byte-identical files."""

    num_images: int = 2000
    image_size: int = 128
    val_fraction: float = 0.1
    seed: int = 0
    captions_per_image: int = 3

    def validate(self) -> None:
        if not isinstance(self.num_images, int) or self.num_images < 2:
            raise BeamlensError(f"num_images must be at least 2 (one train and one val image), got {self.num_images}")
        if not isinstance(self.image_size, int) or not 32 <= self.image_size <= 1024:
            raise BeamlensError(f"image_size must be between 32 and 1024 pixels, got {self.image_size}")
        if not 0.0 < self.val_fraction < 1.0:
            raise BeamlensError(f"val_fraction must be between 0 and 1 (exclusive), got {self.val_fraction}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise BeamlensError(f"seed must be a non-negative integer, got {self.seed}")
        if not isinstance(self.captions_per_image, int) or not 2 <= self.captions_per_image <= len(_TEMPLATES):
            raise BeamlensError(
                f"captions_per_image must be between 2 and {len(_TEMPLATES)}, got {self.captions_per_image}"
            )
        n_val = self.split_counts()["val"]
        if n_val < 1 or n_val >= self.num_images:
            raise BeamlensError(
                f"val_fraction {self.val_fraction} of {self.num_images} images leaves an empty split; "
                "raise num_images or change val_fraction"
            )

    def split_counts(self) -> dict[str, int]:
        n_val = int(round(self.num_images * self.val_fraction))
        return {"train": self.num_images - n_val, "val": n_val}


@dataclass
class CorpusSummary:
    """What :func:`write_corpus` made (or found already made)."""

    out_dir: str
    counts: dict[str, int]  # images per split
    caption_counts: dict[str, int]  # captions per split
    captions_files: dict[str, str]
    image_dirs: dict[str, str]
    attributes_files: dict[str, str]
    manifest: str
    created: bool  # False when a complete corpus with the same options was already there
    seconds: float = 0.0
    first_image: dict[str, Any] = field(default_factory=dict)  # file, captions of image 1


# --------------------------------------------------------------------------------------------
# Scenes


def scene_for(seed: int, index: int) -> tuple[dict, np.random.Generator]:
    """The attributes of image ``index`` (0-based) and the generator that goes on to draw it."""
    rng = np.random.default_rng([seed, index])
    draw = rng.random()
    count = 1 if draw < 0.3 else 2 if draw < 0.7 else 3  # 30% one object, 40% two, 30% three
    slots = sorted(rng.permutation(len(POSITIONS))[:count].tolist())
    objects = [
        {
            "shape": SHAPES[int(rng.integers(len(SHAPES)))],
            "colour": list(COLOURS)[int(rng.integers(len(COLOURS)))],
            "size": SIZES[int(rng.integers(len(SIZES)))],
            "position": POSITIONS[slot],
        }
        for slot in slots
    ]
    return {"background": list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))], "objects": objects}, rng


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "triangle":  # centroid at (cx, cy)
        return [(cx, cy - r), (cx + 0.866 * r, cy + 0.5 * r), (cx - 0.866 * r, cy + 0.5 * r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + 0.75 * r, cy), (cx, cy + r), (cx - 0.75 * r, cy)]
    if shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else 0.45 * r
            angle = -np.pi / 2 + k * np.pi / 5
            points.append((cx + radius * np.cos(angle), cy + radius * np.sin(angle)))
        return points
    if shape == "cross":
        a = 0.35 * r
        return [(cx - a, cy - r), (cx + a, cy - r), (cx + a, cy - a), (cx + r, cy - a), (cx + r, cy + a),
                (cx + a, cy + a), (cx + a, cy + r), (cx - a, cy + r), (cx - a, cy + a), (cx - r, cy + a),
                (cx - r, cy - a), (cx - a, cy - a)]
    raise ValueError(shape)


def _jitter(rgb: tuple[int, int, int], amount: int, rng: np.random.Generator) -> tuple[int, ...]:
    shifted = np.clip(np.asarray(rgb) + rng.integers(-amount, amount + 1, size=3), 0, 255)
    return tuple(int(c) for c in shifted)


def draw_scene(scene: dict, size: int, rng: np.random.Generator) -> tuple[Image.Image, list[dict]]:
    """Render a scene; returns the image and each object's centre and radius in pixels.

    Each object sits in its own third of the width (so objects never overlap and "left of" is
    unambiguous), with jittered centre and colour, plus light pixel noise.
    """
    image = Image.new("RGB", (size, size), _jitter(BACKGROUNDS[scene["background"]], 8, rng))
    draw = ImageDraw.Draw(image)
    column = size / len(POSITIONS)
    placements = []
    for obj in scene["objects"]:
        radius = SIZE_FRACTION[obj["size"]] * size / 2
        slack_x = max(0.0, column / 2 - radius - 0.02 * size)
        slack_y = max(0.0, size / 2 - radius - 0.05 * size)
        cx = (POSITIONS.index(obj["position"]) + 0.5) * column + rng.uniform(-slack_x, slack_x)
        cy = size / 2 + rng.uniform(-slack_y, slack_y)
        fill = _jitter(COLOURS[obj["colour"]], 10, rng)
        if obj["shape"] == "circle":
            draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
        elif obj["shape"] == "square":
            half = radius * 0.85
            draw.rectangle([cx - half, cy - half, cx + half, cy + half], fill=fill)
        else:
            draw.polygon(_polygon(obj["shape"], cx, cy, radius), fill=fill)
        placements.append({"center": [round(cx, 2), round(cy, 2)], "radius": round(radius, 2)})
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-6, 7, size=(size, size, 1), dtype=np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), placements


# --------------------------------------------------------------------------------------------
# Captions and their facts
#
# mentions = {"background": str | None, "count": int | None,
#             "objects": [{"shape": .., "colour"?: .., "size"?: .., "position"?: ..}],
#             "left_of": [[i, j], ...]}   (mentioned object i is left of mentioned object j)


def _phrase(obj: dict, keys: tuple[str, ...]) -> str:
    words = [obj[k] for k in ("size", "colour") if k in keys] + [obj["shape"]]
    return " ".join(words)


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _fact(obj: dict, keys: tuple[str, ...]) -> dict:
    return {"shape": obj["shape"], **{k: obj[k] for k in keys}}


def _join_words(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _t_full(scene: dict, rng: np.random.Generator) -> tuple[str, dict]:
    """Everything: sizes, colours, arrangement and background."""
    objs, bg = scene["objects"], scene["background"]
    keys = ("size", "colour")
    if len(objs) == 1:
        where = {"left": "on the left", "center": "in the middle", "right": "on the right"}[objs[0]["position"]]
        text = f"{_a(_phrase(objs[0], keys))} {where}, on a {bg} background"
        return text, {"background": bg, "count": None, "objects": [_fact(objs[0], keys + ("position",))], "left_of": []}
    if len(objs) == 2:
        text = f"{_a(_phrase(objs[0], keys))} to the left of {_a(_phrase(objs[1], keys))} on a {bg} background"
        return text, {"background": bg, "count": None, "objects": [_fact(o, keys) for o in objs], "left_of": [[0, 1]]}
    phrases = [_a(_phrase(o, keys)) for o in objs]
    text = f"{_join_words(phrases)} in a row from left to right on {bg}"
    return text, {"background": bg, "count": 3, "objects": [_fact(o, keys) for o in objs], "left_of": [[0, 1], [1, 2]]}


def _t_count(scene: dict, rng: np.random.Generator) -> tuple[str, dict]:
    """Counts the shapes and names their colours; no sizes or places."""
    objs, bg = scene["objects"], scene["background"]
    n = len(objs)
    phrases = [_a(_phrase(o, ("colour",))) for o in objs]
    noun = "shape" if n == 1 else "shapes"
    if rng.random() < 0.5:
        text = f"{NUMBER_WORDS[n]} {noun} on a {bg} background: {_join_words(phrases)}"
        facts = {"background": bg, "count": n}
    else:
        text = f"{NUMBER_WORDS[n]} {noun}: {_join_words(phrases)}"
        facts = {"background": None, "count": n}
    return text, {**facts, "objects": [_fact(o, ("colour",)) for o in objs], "left_of": []}


def _t_loose(scene: dict, rng: np.random.Generator) -> tuple[str, dict]:
    """Objects in a random order, one of them with its size, 'over <background>'."""
    objs, bg = scene["objects"], scene["background"]
    order = rng.permutation(len(objs)).tolist()
    sized = int(rng.integers(len(objs)))
    parts, facts = [], []
    for k in order:
        keys = ("size", "colour") if k == sized else ("colour",)
        parts.append(_a(_phrase(objs[k], keys)))
        facts.append(_fact(objs[k], keys))
    text = f"{_join_words(parts)} over {bg}"
    return text, {"background": bg, "count": None, "objects": facts, "left_of": []}


def _t_one(scene: dict, rng: np.random.Generator) -> tuple[str, dict]:
    """One object only, with where it is; background sometimes."""
    objs, bg = scene["objects"], scene["background"]
    k = int(rng.integers(len(objs)))
    obj = objs[k]
    where = {"left": "on the left", "center": "in the center", "right": "on the right"}[obj["position"]]
    if rng.random() < 0.5:
        text = f"there is {_a(_phrase(obj, ('colour',)))} {where}"
        return text, {"background": None, "count": None, "objects": [_fact(obj, ("colour", "position"))], "left_of": []}
    text = f"{_a(_phrase(obj, ('size', 'colour')))} on a plain {bg} background"
    return text, {"background": bg, "count": None, "objects": [_fact(obj, ("size", "colour"))], "left_of": []}


def _t_picture(scene: dict, rng: np.random.Generator) -> tuple[str, dict]:
    """'a <bg> picture with ...': shapes and colours, or relative order of two of them."""
    objs, bg = scene["objects"], scene["background"]
    if len(objs) >= 2 and rng.random() < 0.6:
        i, j = sorted(rng.choice(len(objs), size=2, replace=False).tolist())
        text = f"{_a(_phrase(objs[j], ('colour',)))} to the right of {_a(_phrase(objs[i], ('colour',)))}"
        facts = [_fact(objs[i], ("colour",)), _fact(objs[j], ("colour",))]
        return text, {"background": None, "count": None, "objects": facts, "left_of": [[0, 1]]}
    phrases = [_a(_phrase(o, ("colour",))) for o in objs]
    text = f"a {bg} picture with {_join_words(phrases)}"
    return text, {"background": bg, "count": None, "objects": [_fact(o, ("colour",)) for o in objs], "left_of": []}


def _t_shapes(scene: dict, rng: np.random.Generator) -> tuple[str, dict]:
    """Shapes and sizes without colour."""
    objs, bg = scene["objects"], scene["background"]
    phrases = [_a(_phrase(o, ("size",))) for o in objs]
    text = f"{_join_words(phrases)} drawn on {bg}"
    return text, {"background": bg, "count": None, "objects": [_fact(o, ("size",)) for o in objs], "left_of": []}


_TEMPLATES: tuple[Callable[[dict, np.random.Generator], tuple[str, dict]], ...] = (
    _t_full, _t_count, _t_loose, _t_one, _t_picture, _t_shapes,
)


def captions_for(scene: dict, count: int, rng: np.random.Generator) -> list[tuple[str, dict]]:
    """``count`` different captions (distinct templates, distinct text) with their facts."""
    chosen: list[tuple[str, dict]] = []
    for t in rng.permutation(len(_TEMPLATES)).tolist():
        text, mentions = _TEMPLATES[t](scene, rng)
        if text not in (c[0] for c in chosen):
            chosen.append((text, mentions))
        if len(chosen) == count:
            break
    return chosen


def caption_matches(mentions: dict, image_attributes: dict) -> bool:
    """True iff the image satisfies every fact the caption asserts.

    Mentioned objects must map to distinct objects of the image with the same attributes, and
    every ``left_of`` pair must hold for that mapping; a stated background or count must match.
    """
    objects = image_attributes["objects"]
    if mentions.get("background") not in (None, image_attributes["background"]):
        return False
    if mentions.get("count") not in (None, len(objects)):
        return False
    wanted = mentions.get("objects", [])
    if len(wanted) > len(objects):
        return False
    column = {p: n for n, p in enumerate(POSITIONS)}
    for chosen in itertools.permutations(range(len(objects)), len(wanted)):
        if all(all(objects[k].get(a) == v for a, v in fact.items()) for fact, k in zip(wanted, chosen)) and all(
            column[objects[chosen[i]]["position"]] < column[objects[chosen[j]]["position"]]
            for i, j in mentions.get("left_of", [])
        ):
            return True
    return False


# --------------------------------------------------------------------------------------------
# Streaming JSON output


class _JsonArrayPart:
    """Items of one JSON array appended to a temp file, so no array is held in memory."""

    def __init__(self, folder: Path, name: str) -> None:
        self.path = folder / f".{name}.part"
        self._stream = open(self.path, "w", encoding="utf-8")
        self.count = 0

    def append(self, item: Any) -> None:
        self._stream.write(("\n" if self.count == 0 else ",\n") + json.dumps(item, sort_keys=True))
        self.count += 1

    def close(self) -> None:
        self._stream.close()


def _assemble(target: Path, head: dict, parts: list[tuple[str, _JsonArrayPart]]) -> None:
    """``{head..., "key": [part], ...}`` written to a temp file, then renamed into place."""
    with atomic_output(target, "w") as out:
        out.write("{")
        for key, value in head.items():
            out.write(f"{json.dumps(key)}: {json.dumps(value, sort_keys=True)},\n")
        for n, (key, part) in enumerate(parts):
            part.close()
            out.write(f"{json.dumps(key)}: [")
            with open(part.path, encoding="utf-8") as stream:
                shutil.copyfileobj(stream, out)
            out.write("\n]" + (",\n" if n < len(parts) - 1 else ""))
            os.remove(part.path)
        out.write("}\n")


def _write_json_atomic(target: Path, doc: dict) -> None:
    with atomic_output(target, "w") as out:
        json.dump(doc, out, indent=2, sort_keys=True)
        out.write("\n")


# --------------------------------------------------------------------------------------------
# Writing the corpus


def corpus_paths(out_dir: str | os.PathLike) -> dict[str, Any]:
    out = Path(out_dir)
    return {
        "captions": {s: out / "annotations" / f"captions_{s}.json" for s in SPLITS},
        "attributes": {s: out / "annotations" / f"attributes_{s}.json" for s in SPLITS},
        "images": {s: out / s for s in SPLITS},
        "manifest": out / "corpus.json",
    }


def _split_of(index: int, options: CorpusOptions) -> str:
    return "train" if index < options.split_counts()["train"] else "val"


def _summary(out: Path, manifest: dict, created: bool, seconds: float) -> CorpusSummary:
    paths = corpus_paths(out)
    return CorpusSummary(
        out_dir=str(out),
        counts=dict(manifest["images"]),
        caption_counts=dict(manifest["captions"]),
        captions_files={s: str(p) for s, p in paths["captions"].items()},
        image_dirs={s: str(p) for s, p in paths["images"].items()},
        attributes_files={s: str(p) for s, p in paths["attributes"].items()},
        manifest=str(paths["manifest"]),
        created=created,
        seconds=seconds,
        first_image={**manifest["first_image"], "file": str(out / manifest["first_image"]["file"])}
        if manifest.get("first_image") else {},
    )


def _prepare_folder(out: Path, options: CorpusOptions, force: bool) -> dict | None:
    """The manifest of a complete identical corpus (nothing to do), else None after clearing."""
    paths = corpus_paths(out)
    if paths["manifest"].is_file():
        try:
            manifest = json.loads(paths["manifest"].read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise BeamlensError(f"{paths['manifest']} is unreadable ({error}); use --force to rewrite the corpus") from None
        if manifest.get("options") == asdict(options) and manifest.get("format") == CORPUS_FORMAT and not force:
            return manifest
        if not force:
            there = manifest.get("options") or {}
            differ = ", ".join(
                f"{key} {there.get(key)!r} there, {value!r} asked"
                for key, value in asdict(options).items() if there.get(key) != value
            ) or f"format {manifest.get('format')!r}"
            raise BeamlensError(
                f"{out} holds a corpus made with other options ({differ}); "
                "choose another folder or use --force to replace it"
            )
    elif out.is_dir() and any(out.iterdir()) and not force:
        ours = any(p.exists() for p in (out / "annotations", out / "train", out / "val"))
        state = "an unfinished corpus (no corpus.json)" if ours else "other files"
        raise BeamlensError(f"{out} is not empty: it holds {state}; choose an empty folder or use --force to rewrite it")
    if force:
        for path in (paths["manifest"], *paths["captions"].values(), *paths["attributes"].values()):
            path.unlink(missing_ok=True)
        for folder in paths["images"].values():
            shutil.rmtree(folder, ignore_errors=True)
    return None


def _assemble_splits(paths: dict, parts: dict, options: CorpusOptions) -> None:
    """Join each split's streamed parts into its COCO caption file and its ground-truth file."""
    info = {"description": "beamlens synthetic default corpus", "version": CORPUS_FORMAT, "year": 2026,
            "contributor": "beamlens make-corpus", "options": asdict(options)}
    licenses = [{"id": 1, "name": "generated by beamlens (no rights reserved)", "url": ""}]
    for split in SPLITS:
        part = parts[split]
        _assemble(paths["attributes"][split], {"split": split, "format": CORPUS_FORMAT},
                  [("images", part["scenes"]), ("captions", part["mentions"])])
        _assemble(paths["captions"][split], {"info": {**info, "split": split}, "licenses": licenses},
                  [("images", part["images"]), ("annotations", part["annotations"])])


def write_corpus(
    out_dir: str | os.PathLike,
    options: CorpusOptions | None = None,
    progress: Callable[[str], None] | None = None,
    *,
    force: bool = False,
    progress_every: int = 1000,
) -> CorpusSummary:
    """Write the corpus into ``out_dir`` (see the module docstring for the layout).

    Re-running with the same options on a complete corpus does nothing (``created=False``);
    a folder holding anything else is refused unless ``force``.
    """
    options = options or CorpusOptions()
    options.validate()
    out = Path(out_dir)
    say = progress or (lambda _message: None)
    existing = _prepare_folder(out, options, force)
    if existing is not None:
        say(f"{out}: a complete corpus with these options is already there; nothing to do")
        return _summary(out, existing, created=False, seconds=0.0)
    paths = corpus_paths(out)
    for folder in (out / "annotations", *paths["images"].values()):
        folder.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    parts = {
        split: {name: _JsonArrayPart(out / "annotations", f"{split}.{name}") for name in ("images", "annotations", "scenes", "mentions")}
        for split in SPLITS
    }
    first_image: dict[str, Any] = {}
    annotation_id = 0
    total = options.num_images
    for index in range(total):
        image_id = index + 1
        split = _split_of(index, options)
        scene, rng = scene_for(options.seed, index)
        image, placements = draw_scene(scene, options.image_size, rng)
        file_name = f"{image_id:012d}.jpg"
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        (paths["images"][split] / file_name).write_bytes(buffer.getvalue())
        part = parts[split]
        part["images"].append({
            "id": image_id, "file_name": file_name, "width": options.image_size, "height": options.image_size,
            "license": 1, "date_captured": "",
        })
        objects = [{**obj, **placed} for obj, placed in zip(scene["objects"], placements)]
        part["scenes"].append({"image_id": image_id, "file_name": file_name, "background": scene["background"], "objects": objects})
        captions = captions_for(scene, options.captions_per_image, rng)
        for text, mentions in captions:
            annotation_id += 1
            part["annotations"].append({"id": annotation_id, "image_id": image_id, "caption": text})
            part["mentions"].append({"id": annotation_id, "image_id": image_id, "caption": text, "mentions": mentions})
        if index == 0:
            first_image = {"file": str(paths["images"][split] / file_name), "captions": [c[0] for c in captions]}
        done = index + 1
        if done % progress_every == 0 or done == total:
            elapsed = time.perf_counter() - started
            say(f"{done}/{total} images ({done / max(elapsed, 1e-9):.0f} images/s)")

    _assemble_splits(paths, parts, options)
    manifest = {
        "format": CORPUS_FORMAT,
        "options": asdict(options),
        "images": {s: parts[s]["images"].count for s in SPLITS},
        "captions": {s: parts[s]["annotations"].count for s in SPLITS},
        "first_image": {"file": os.path.relpath(first_image["file"], out), "captions": first_image["captions"]},
        "vocabulary": {"shapes": list(SHAPES), "colours": list(COLOURS), "backgrounds": list(BACKGROUNDS),
                       "sizes": list(SIZES), "positions": list(POSITIONS)},
    }
    _write_json_atomic(paths["manifest"], manifest)  # last: its presence means the corpus is complete
    seconds = time.perf_counter() - started
    return _summary(out, manifest, created=True, seconds=seconds)


# --------------------------------------------------------------------------------------------
# Reading the ground truth


@dataclass
class GroundTruth:
    """Scene facts per image and caption facts per annotation, keyed by id as decimal text."""

    split: str
    images: dict[str, dict]  # image_id -> {"file_name", "background", "objects": [...]}
    captions: dict[str, dict]  # annotation id -> {"image_id", "caption", "mentions"}

    def relevant_images(self, annotation_id: str) -> list[str]:
        """Every image of this split that satisfies the caption (always includes its own)."""
        mentions = self.captions[str(annotation_id)]["mentions"]
        return [image_id for image_id, attrs in self.images.items() if caption_matches(mentions, attrs)]

    def iter_captions(self) -> Iterator[tuple[str, dict]]:
        return iter(self.captions.items())


def load_ground_truth(corpus_dir: str | os.PathLike, split: str) -> GroundTruth:
    """Read ``annotations/attributes_<split>.json`` of a complete corpus."""
    if split not in SPLITS:
        raise BeamlensError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    paths = corpus_paths(corpus_dir)
    if not paths["manifest"].is_file():
        raise BeamlensError(f"{corpus_dir} is not a complete beamlens corpus (no corpus.json); run beamlens make-corpus")
    target = paths["attributes"][split]
    try:
        doc = json.loads(target.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BeamlensError(f"ground truth file not found: {target}") from None
    except json.JSONDecodeError as error:
        raise BeamlensError(f"{target}: not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}") from None
    images = {
        str(r["image_id"]): {"file_name": r["file_name"], "background": r["background"], "objects": r["objects"]}
        for r in doc["images"]
    }
    captions = {
        str(r["id"]): {"image_id": str(r["image_id"]), "caption": r["caption"], "mentions": r["mentions"]}
        for r in doc["captions"]
    }
    return GroundTruth(split=split, images=images, captions=captions)
