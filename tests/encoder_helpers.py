"""One tiny trained dual encoder shared by the encoder tests (training it once keeps them fast)."""

from __future__ import annotations

from pathlib import Path

_CACHE: dict[str, Path] = {}


def tiny_corpus(root: Path, num_images: int = 48) -> Path:
    from beamlens.models.corpora.synthetic import CorpusOptions, write_corpus  # noqa: PLC0415

    out = root / "corpus"
    write_corpus(out, CorpusOptions(num_images=num_images, image_size=64, val_fraction=0.25, seed=3))
    return out


def trained_model(tmp_path_factory) -> tuple[Path, Path]:
    """(model dir, corpus dir): 1 epoch on a 48-image corpus, 32-pixel images."""
    if "model" not in _CACHE:
        from beamlens.pipelines import train  # noqa: PLC0415

        root = tmp_path_factory.mktemp("encoder")
        corpus = tiny_corpus(root)
        model = root / "model"
        ann = corpus / "annotations"
        code = train.main([
            "--captions", str(ann / "captions_train.json"), "--images", str(corpus / "train"),
            "--val-captions", str(ann / "captions_val.json"), "--val-images", str(corpus / "val"),
            "--out", str(model), "--epochs", "1", "--batch-size", "16", "--image-size", "32",
            "--max-tokens", "16", "--image-backbone", "scratch_cnn", "--text-backbone", "scratch_text"])
        assert code == 0
        _CACHE["model"], _CACHE["corpus"] = model, corpus
    return _CACHE["model"], _CACHE["corpus"]
