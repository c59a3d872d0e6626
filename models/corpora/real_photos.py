"""Real photographs that ship inside a pip wheel: the demo's caption-free corpus.

The scikit-image wheel carries real photos in ``skimage/data`` (astronaut, camera, chelsea the
cat, coffee, coins, horse, Hubble, moon, motorcycle, retina, rocket; the rest there are textures
and test patterns). They are found without importing scikit-image and copied into the demo's
work folder, where ``beamlens embed --input-glob`` reads them like any user folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# Indexed with no captions; each query names the photo it should find.
REAL_PHOTOS = ("astronaut.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "horse.png",
               "hubble_deep_field.jpg", "moon.png", "motorcycle_left.png", "retina.jpg", "rocket.jpg")
REAL_QUERIES = (("a cat", "chelsea.png"), ("a cup of coffee", "coffee.png"), ("a rocket on the launch pad", "rocket.jpg"))


def skimage_data_dir() -> Path | None:
    """skimage/data of the installed wheel, found without importing scikit-image."""
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    return folder if folder.is_dir() else None


def stage_real_photos(workdir: Path, source: Path) -> Path:
    """Copy the real photographs into ``workdir/real-photos`` (the corpus ``embed`` globs)."""
    folder = workdir / "real-photos"
    folder.mkdir(parents=True, exist_ok=True)
    for name in REAL_PHOTOS:
        if (source / name).exists() and not (folder / name).exists():
            shutil.copyfile(source / name, folder / name)
    return folder


