"""The built wheel installs ``beamlens`` and nothing else at the top of site-packages, next to a
distribution that ships its own top-level ``models`` and ``transforms``, inside a user project that
has them too; the README's Python examples and the seed's Model Maker snippet run there.

The fresh environment is made by uv from its cache, offline (``make install`` filled the cache):
no test reaches the internet.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import TESTDATA
from tests.test_model_maker import SEED_SNIPPET

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("setup.py", "README.md", "beamlens", "models", "pipelines", "transforms")
NO_DEPS = ("tflite-support==0.4.4",)  # as the Makefile installs it (its protobuf pin is false for our use)


def _run(args: list, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _wheel(source: Path, out: Path) -> Path:
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, "."], source)
    return next(out.glob("*.whl"))


def _other_distribution(folder: Path) -> Path:
    """A distribution with top-level ``models`` and ``transforms`` packages, as many ML projects ship."""
    for name in ("models", "transforms"):
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(f"OWNER = 'othertools.{name}'\n")
    (folder / "setup.py").write_text("from setuptools import setup\n"
                                     "setup(name='othertools', version='1.0', packages=['models', 'transforms'])\n")
    return _wheel(folder, folder / "dist")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """(python of a fresh venv with the beamlens wheel and othertools, wheel path, project folder)."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    source.mkdir()
    for name in SOURCES:  # a copy: building in the clone would leave build/ there
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, source / name)
    wheel = _wheel(source, base / "dist")
    other = _other_distribution(base / "othertools")
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    venv = base / "venv"
    _run([uv, "venv", "-q", "--python", sys.executable, venv], base)
    python = venv / "bin" / "python"
    _run([uv, "pip", "install", "-q", "--offline", "--python", python, wheel, other], base)
    _run([uv, "pip", "install", "-q", "--offline", "--no-deps", "--python", python, *NO_DEPS], base)
    project = base / "project" / "work"  # ../shared beside it, as for a clone
    (project / "models").mkdir(parents=True)  # the user's own top-level packages, first on sys.path
    (project / "models" / "__init__.py").write_text("OWNER = 'the user'\n")
    (project / "transforms.py").write_text("OWNER = 'the user'\n")
    (base / "project" / "shared").symlink_to(TESTDATA.parent, target_is_directory=True)
    return python, wheel, project


def test_the_wheel_holds_only_the_beamlens_package(fresh):
    _, wheel, _ = fresh
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert {name.split("/")[0] for name in names} == {"beamlens", "beamlens-0.1.0.dist-info"}
    for module in ("beamlens/__init__.py", "beamlens/models/searcher/model_maker.py", "beamlens/pipelines/cli.py",
                   "beamlens/transforms/embed_job.py", "beamlens/model_maker/searcher.py",
                   "beamlens/models/encoders/data/imagenet_labels.txt"):
        assert module in names
    with zipfile.ZipFile(wheel) as archive:
        entry_points = archive.read("beamlens-0.1.0.dist-info/entry_points.txt").decode()
    assert "beamlens = beamlens.pipelines.cli:main" in entry_points


def test_installed_next_to_other_top_level_models_and_transforms(fresh):
    python, _, project = fresh
    code = ("import models, transforms, beamlens, beamlens.models.searcher.options, beamlens.transforms.read_images\n"
            "print(models.OWNER, '|', transforms.OWNER, '|', beamlens.models.__file__.split('site-packages/')[1])\n")
    out = _run([python, "-c", code], project).stdout
    assert out.strip() == "the user | the user | beamlens/models/__init__.py"
    other = _run([python, "-c", "import models, transforms; print(models.OWNER, transforms.OWNER)"], project.parent).stdout
    assert other.split() == ["othertools.models", "othertools.transforms"]  # untouched by our install
    help_text = _run([python.parent / "beamlens", "--help"], project).stdout
    assert "build-searcher" in help_text and "reindex" in help_text


def _readme_examples() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python API"):readme.index("## Try it in the browser")]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_python_examples_run_in_the_fresh_install(fresh):
    python, _, project = fresh
    examples = _readme_examples()
    assert len(examples) == 3
    outputs = [_run([python, "-c", code], project).stdout for code in examples]
    photos = len(list((TESTDATA / "coco-mini-cc" / "val2017").glob("*.jpg")))
    assert f"{photos} of {photos} photos embedded, 0 dead letters" in outputs[0]
    query = sorted((TESTDATA / "coco-mini-cc" / "val2017").glob("*.jpg"))[0].name
    first_hit = [line for line in outputs[0].splitlines() if line.startswith("1 ")][0]
    assert first_hit.split()[1].endswith(query)  # the query photo finds itself first (glob ids are paths)
    assert f"'new': {photos}" in outputs[1]
    assert (project / "out" / "model_maker_searcher.tflite").stat().st_size > 0


def test_the_seed_snippet_runs_unchanged_in_the_fresh_install(fresh):
    python, _, project = fresh
    setup = ("import numpy as np\nfrom beamlens.model_maker import searcher\n"
             "from beamlens.models.searcher import read_searcher\n"
             "tflite_embedder_path = '../shared/testdata/models/mobilenet_v3_small_075_224_embedder.tflite'\n"
             "rows = np.random.default_rng(0).normal(size=(4000, 1024)).astype(np.float32)\n"
             "image_embeddings = rows / np.linalg.norm(rows, axis=1, keepdims=True)\n"
             "metadata = [f'item {i}' for i in range(4000)]\n")
    check = "info = read_searcher('searcher.tflite')\nprint(info.num_items, info.num_leaves, info.num_leaves_to_search)\n"
    out = _run([python, "-c", setup + SEED_SNIPPET + check], project).stdout
    assert out.split()[-3:] == ["4000", "351", "4"]
