"""The static student of MiniLM: the text it learns from, its shape, its start, its fit, its file.

The fit is tested against a small stand-in teacher (an order-aware bag of words over a 60-token
vocab) so that it runs in seconds; the Task Library round trip of the real-sized student is in
test_static_minilm_export.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from beamlens.models.encoders.bert_tokenizer import BertTokenizer
from beamlens.models.encoders.distillation import recipe as distill
from beamlens.models.encoders.distillation import sentences
from beamlens.models.encoders.distillation.student import build_student, initial_weights, layer_weights, set_layer_weights
from beamlens.models.errors import BeamlensError

WORDS = ("a", "an", "the", "two", "red", "blue", "green", "big", "small", "dog", "dogs", "cat", "cats", "man", "woman",
         "bus", "car", "ball", "frisbee", "table", "street", "beach", "field", "kitchen", "on", "with", "next", "to",
         "in", "of", "holding", "riding", "playing", "sitting", "hot", "fire", "hydrant", "light", "traffic", "pizza")
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", ".", *WORDS, "##s", "##ing"]


def test_plural_follows_english_rules() -> None:
    assert [sentences.plural(n) for n in ("traffic light", "bus", "person", "knife", "sheep", "strawberry", "toy",
                                           "box", "group of people")] == [
        "traffic lights", "buses", "people", "knives", "sheep", "strawberries", "toys", "boxes", "group of people"]
    assert sentences.with_article("apple") == "an apple" and sentences.with_article("dog") == "a dog"


def test_caption_like_text_is_deterministic_and_varied() -> None:
    first = sentences.caption_like(200, ["dog", "fire hydrant"], seed=3)
    assert first == sentences.caption_like(200, ["dog", "fire hydrant"], seed=3)
    assert first != sentences.caption_like(200, ["dog", "fire hydrant"], seed=4)
    assert len(first) == 200 and len(set(first)) > 150
    assert any(s.endswith(".") and s[0].isupper() for s in first) and any(s[0].islower() for s in first)
    assert any("fire hydrant" in s for s in first) and any("dogs" in s for s in first)


def test_vocabulary_words_are_the_whole_ascii_words() -> None:
    assert sentences.vocabulary_words(["[PAD]", "##ing", "dog", "a", "café", "x1", "zebra"]) == ["dog", "zebra"]


def _student(width: int = 8, length: int = 6):
    return build_student(len(VOCAB), length, width=width, teacher_width=12)


def test_student_gives_unit_vectors_that_do_not_depend_on_padding() -> None:
    small, long = _student(length=6), _student(length=16)
    rng = np.random.default_rng(0)
    weights = {key: rng.normal(size=value.shape).astype(np.float32) * 0.3 for key, value in layer_weights(small).items()}
    set_layer_weights(small, weights)
    set_layer_weights(long, weights)
    tokenizer = BertTokenizer(VOCAB)
    texts = ["a red dog on the beach", "two cats", "the man riding a bus"]
    got_small = small.predict(tokenizer.encode_batch(texts, 6), verbose=0)
    got_long = long.predict(tokenizer.encode_batch(texts, 16), verbose=0)
    assert got_small.shape == (3, 12)
    np.testing.assert_allclose(np.linalg.norm(got_small, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got_small[1], got_long[1], atol=1e-5)  # "two cats" fits both: same vector
    assert float(got_small[0] @ got_small[2]) < 0.999  # different texts, different vectors


def test_initial_weights_put_a_lone_token_where_the_teacher_does() -> None:
    rng = np.random.default_rng(1)
    teacher = rng.normal(size=(len(VOCAB), 12)).astype(np.float32)
    teacher /= np.linalg.norm(teacher, axis=1, keepdims=True)
    student = _student(width=12)  # full rank: the PCA loses nothing
    set_layer_weights(student, initial_weights(teacher, 12))
    ids = np.zeros((3, 6), np.int32)
    ids[:, 0] = [7, 20, 33]
    mask = (ids != 0).astype(np.int32)
    got = student.predict({"ids": ids, "mask": mask, "segment_ids": np.zeros_like(ids)}, verbose=0)
    np.testing.assert_allclose(got, teacher[[7, 20, 33]], atol=1e-4)


@dataclasses.dataclass
class StandInTeacher:
    """Order-aware bag of words: the sum of token vectors plus a term for each adjacent pair."""

    tokenizer: BertTokenizer

    def __post_init__(self) -> None:
        rng = np.random.default_rng(5)
        self.token = rng.normal(size=(self.tokenizer.size, 12))
        self.pair = rng.normal(size=(self.tokenizer.size, 12)) * 0.3

    def _vector(self, ids: list[int]) -> np.ndarray:
        vector = self.token[ids].sum(axis=0) + sum(self.pair[a] * self.token[b] for a, b in zip(ids, ids[1:]))
        return vector / np.linalg.norm(vector)

    def embed(self, texts, length: int) -> np.ndarray:
        encoded = self.tokenizer.encode_batch(texts, length)
        return np.stack([self._vector([int(i) for i, m in zip(row, mask) if m])
                         for row, mask in zip(encoded["ids"], encoded["mask"])]).astype(np.float32)

    def lone_token_vectors(self) -> np.ndarray:
        cls_id, sep_id = self.tokenizer.id_of("[CLS]"), self.tokenizer.id_of("[SEP]")
        return np.stack([self._vector([cls_id, i, sep_id]) for i in range(self.tokenizer.size)]).astype(np.float32)


def _mean_cosine(student, teacher: StandInTeacher, texts: list[str]) -> float:
    got = student.predict(teacher.tokenizer.encode_batch(texts, 12), verbose=0)
    return float(np.mean(np.sum(got * teacher.embed(texts, 12), axis=1)))


def test_fitting_brings_the_student_closer_to_its_teacher(capsys) -> None:
    teacher = StandInTeacher(BertTokenizer(VOCAB))
    nouns = ["dog", "cat", "man", "bus", "car", "ball", "table", "fire hydrant", "traffic light", "pizza"]
    texts = sentences.caption_like(1500, nouns, seed=0)
    held_out = sentences.caption_like(200, nouns, seed=9)
    recipe = distill.DistillationRecipe(width=12, epochs=8, batch_size=64, learning_rate=1e-2, max_tokens=12)
    start = build_student(len(VOCAB), 12, 12, 12)
    set_layer_weights(start, initial_weights(teacher.lone_token_vectors(), 12))
    words = ["dog", "cats"]
    targets = np.concatenate([teacher.embed(texts, 12), teacher.embed(words, 8)])
    fitted = distill.fit_student(recipe, teacher.tokenizer, texts + words, targets, teacher.lone_token_vectors())
    before, after = _mean_cosine(start, teacher, held_out), _mean_cosine(fitted, teacher, held_out)
    assert after > before + 0.05 and after > 0.85, (before, after)
    progress = capsys.readouterr().err
    assert "student epoch 8/8: mean cosine to MiniLM" in progress and "student fitted in" in progress


def test_a_student_file_round_trips_and_anything_else_is_refused(tmp_path) -> None:
    student = _student()
    rng = np.random.default_rng(2)
    set_layer_weights(student, {"token_vectors": rng.normal(size=(len(VOCAB), 8)).astype(np.float32)})
    path = distill.save_student(student, str(tmp_path / "student.npz"), distill.DistillationRecipe(width=8))
    loaded = distill.load_student_weights(path)
    np.testing.assert_array_equal(loaded["token_vectors"], layer_weights(student)["token_vectors"])
    assert sorted(loaded) == sorted(layer_weights(student))
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(BeamlensError, match="not a beamlens text-student file"):
        distill.load_student_weights(str(tmp_path / "other.npz"))
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(BeamlensError, match="cannot read the text-student weights"):
        distill.load_student_weights(str(tmp_path / "broken.npz"))


def test_the_backbone_loads_a_student_file_and_names_its_teacher(tmp_path) -> None:
    from beamlens.models.encoders.backbones import BackboneConfig, build_text_backbone, text_tokenizer_kind

    student = _student()
    path = distill.save_student(student, str(tmp_path / "student.npz"), distill.DistillationRecipe(width=8))
    model = build_text_backbone(BackboneConfig("minilm_static", max_tokens=10, weights=path))
    assert model.teacher == "minilm" and text_tokenizer_kind("minilm_static") == "bert"
    assert [i.name for i in model.inputs] == ["ids", "mask", "segment_ids"] and model.inputs[0].shape[1] == 10
    assert model.output.shape[-1] == 12
    with pytest.raises(BeamlensError, match="text-student weights not found"):
        build_text_backbone(BackboneConfig("minilm_static", weights=str(tmp_path / "missing.npz")))


def test_the_training_text_is_generated_apart_from_the_demo_corpus() -> None:
    from beamlens.models.corpora.synthetic import CorpusOptions

    tokens = [*VOCAB, "zebra", "giraffe"]
    recipe = distill.DistillationRecipe(generated_sentences=500, synthetic_images=50)
    texts, words = distill.training_texts(recipe, tokens)
    assert words == [w for w in tokens if w.isalpha() and len(w) > 1]
    assert len(texts) == 500 + 8000 + 100  # generated + 1,000 classes x 8 prompts + 2 captions x 50 images
    assert recipe.synthetic_seed != CorpusOptions().seed  # the demo's images are not drawn from
    assert texts == distill.training_texts(recipe, tokens)[0]


def test_the_teachers_targets_are_cached_by_the_text_recipe(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("BEAMLENS_CACHE", str(tmp_path))
    teacher = StandInTeacher(BertTokenizer(VOCAB))
    texts, words = ["a dog on the beach", "two red buses"], ["cat"]
    recipe = distill.DistillationRecipe(max_tokens=12)
    stamp = {"path": "teacher", "size": 1, "mtime": 1}
    first = distill._cached_targets(recipe, teacher, texts, words, stamp)
    assert "teacher vectors of 2 sentences, 1 words" in capsys.readouterr().err
    refit = dataclasses.replace(recipe, epochs=3, learning_rate=1e-4)  # fitting settings: same targets
    again = distill._cached_targets(refit, teacher, texts, words, stamp)
    assert capsys.readouterr().err == ""
    np.testing.assert_array_equal(first[0], again[0])
    assert first[0].shape == (3, 12) and first[1].shape == (len(VOCAB), 12)
    distill._cached_targets(dataclasses.replace(recipe, seed=2), teacher, texts, words, stamp)
    assert "teacher vectors" in capsys.readouterr().err  # other text: computed anew
    assert len(list(tmp_path.glob("teacher-targets-*.npz"))) == 2


def test_adapting_the_student_to_training_captions_brings_held_out_captions_closer(tmp_path, monkeypatch, capsys) -> None:
    from beamlens.models.encoders.distillation.adaptation import adapt_student

    monkeypatch.setenv("BEAMLENS_CACHE", str(tmp_path))  # no distillation cache: the mixed-in text is embedded now
    teacher = StandInTeacher(BertTokenizer(VOCAB))
    nouns = ["dog", "cat", "man", "bus", "car", "ball", "table", "fire hydrant", "traffic light", "pizza"]
    captions, held_out = sentences.caption_like(600, nouns, seed=3), sentences.caption_like(100, nouns, seed=9)
    student = build_student(len(VOCAB), 12, 12, 12)
    set_layer_weights(student, initial_weights(teacher.lone_token_vectors(), 12))
    student.trainable = False  # as a frozen backbone is
    start = layer_weights(student)["token_vectors"].copy()
    recipe = distill.DistillationRecipe(width=12, generated_sentences=300, synthetic_images=20, class_prompts=False,
                                        vocabulary_words=False, max_tokens=12)
    result = adapt_student(student, teacher.tokenizer, captions, held_out, teacher=teacher, recipe=recipe)
    assert result.training_captions == 600 and result.epochs == 3
    assert result.held_out_cosine_after > result.held_out_cosine_before + 0.05, result
    assert abs(result.held_out_cosine_after - _mean_cosine(student, teacher, held_out)) < 1e-3  # the student itself changed
    assert not np.allclose(layer_weights(student)["token_vectors"], start)
    assert not student.trainable and not student.trainable_weights  # frozen again for the heads
    assert f"mean cosine to MiniLM on 100 held-out captions {result.held_out_cosine_before:.3f} -> " in capsys.readouterr().err
