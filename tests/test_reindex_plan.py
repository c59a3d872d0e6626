"""beamlens.transforms.reindex_plan (the per-image rule) and models.shards.versions (versions + LATEST): pure, fast."""

from __future__ import annotations

import os

import pytest

from beamlens.models.shards import versions as vo
from beamlens.models.errors import BeamlensError
from beamlens.transforms.reindex_plan import Action, Current, Decision, PlanCounts, Previous, decide

FP = "sha256:aaaa"


def _hashes(mapping):
    calls = []

    def hash_current(uri):
        calls.append(uri)
        return mapping.get(uri)

    return hash_current, calls


def test_decide_covers_every_case_and_hashes_only_when_needed():
    hash_current, calls = _hashes({"a.jpg": "h1", "b.jpg": "h2-new"})
    prev = lambda h, caps=("x",), uri="a.jpg", fp=FP: [Previous(h, fp, caps, uri)]  # noqa: E731
    assert decide("gone", [], prev("h"), FP, hash_current).action is Action.DELETE
    assert decide("new", [Current("n.jpg")], [], FP, hash_current).action is Action.EMBED_NEW
    assert decide("m", [Current("a.jpg")], prev("h1", fp="sha256:old"), FP, hash_current).action is Action.EMBED_MODEL
    assert calls == []  # none of these needed the bytes
    same = decide("a", [Current("a.jpg", ("x",))], prev("h1"), FP, hash_current)
    assert same == Decision("a", Action.CARRY, False, False, "h1", hashed=True)
    recaptioned = decide("a", [Current("a.jpg", ("y",))], prev("h1"), FP, hash_current)
    assert recaptioned.action is Action.CARRY and recaptioned.captions_changed and not recaptioned.uri_changed
    changed = decide("b", [Current("b.jpg", ("x",))], prev("h2-old", uri="b.jpg"), FP, hash_current)
    assert changed.action is Action.EMBED_CHANGED and changed.current_hash == "h2-new"
    unreadable = decide("c", [Current("missing.jpg")], prev("h3"), FP, hash_current)
    assert unreadable.action is Action.EMBED_CHANGED  # the embed path then records the read error
    no_hash_stored = decide("a", [Current("a.jpg", ("x",))], prev(""), FP, hash_current)
    assert no_hash_stored.action is Action.EMBED_CHANGED
    moved = decide("a", [Current("elsewhere/a.jpg", ("x",))], [Previous("h1", FP, ("x",), "a.jpg")], FP,
                   lambda uri: "h1")
    assert moved.action is Action.CARRY and moved.uri_changed


def test_an_unchanged_stamp_carries_without_reading_the_file():
    hash_current, calls = _hashes({"a.jpg": "h1", "b.jpg": "h2-new"})
    stored = [Previous("h1", FP, ("x",), "a.jpg", stamp=(1000, 5))]
    quick = decide("a", [Current("a.jpg", ("y",), stamp=(1000, 5))], stored, FP, hash_current)
    assert quick == Decision("a", Action.CARRY, captions_changed=True, current_hash="h1", hashed=False)
    assert calls == []
    touched = decide("a", [Current("a.jpg", ("x",), stamp=(1000, 6))], stored, FP, hash_current)
    assert touched.action is Action.CARRY and touched.hashed and calls == ["a.jpg"]
    rewritten = decide("b", [Current("b.jpg", stamp=(1000, 7))], [Previous("h2-old", FP, (), "b.jpg", (1000, 5))],
                       FP, hash_current)
    assert rewritten.action is Action.EMBED_CHANGED and rewritten.hashed
    unknown = decide("a", [Current("a.jpg", ("x",), stamp=None)], stored, FP, hash_current)
    assert unknown.hashed  # no stamp now (unreadable metadata): read the bytes
    never_stored = decide("a", [Current("a.jpg", ("x",), stamp=(1000, 5))], [Previous("h1", FP, ("x",), "a.jpg")], FP,
                          hash_current)
    assert never_stored.hashed  # records written before stamps existed are hashed
    calls.clear()
    rehash = decide("a", [Current("a.jpg", ("x",), stamp=(1000, 5))], stored, FP, hash_current, trust_stamps=False)
    assert rehash.action is Action.CARRY and rehash.hashed and calls == ["a.jpg"]
    plan = PlanCounts()
    for decision in (quick, touched, rewritten, rehash):
        plan.add(decision)
    assert plan.hashed == 3 and PlanCounts.from_dict(plan.to_dict()).hashed == 3


def test_plan_counts_merge_and_round_trip():
    one, two = PlanCounts(), PlanCounts()
    one.add(Decision("1", Action.CARRY))
    one.add(Decision("2", Action.CARRY, captions_changed=True))
    two.add(Decision("3", Action.EMBED_NEW))
    two.add(Decision("4", Action.DELETE))
    total = PlanCounts.from_dict(one.to_dict()).merge(PlanCounts.from_dict(two.to_dict()))
    assert total.to_dict()["counts"] == {"carry": 2, "new": 1, "changed": 0, "model_changed": 0, "deleted": 1}
    assert total.embedded == 1 and total.metadata_updated == 1 and total.changes_index
    assert total.sample_ids == {"new": ["3"], "deleted": ["4"]}
    quiet = PlanCounts()
    quiet.add(Decision("1", Action.CARRY))
    assert not quiet.changes_index


def _finish(root, name):
    os.makedirs(os.path.join(root, name, vo.SHARDS_DIR), exist_ok=True)
    with open(os.path.join(root, name, vo.SHARDS_DIR, "manifest.json"), "w") as stream:
        stream.write('{"shards": ["embeddings-00000-of-00001.tfrecord"]}')
    with open(os.path.join(root, name, vo.SHARDS_DIR, "embeddings-00000-of-00001.tfrecord"), "wb") as stream:
        stream.write(b"")
    with open(os.path.join(root, name, vo.COMPLETE_MARKER), "w") as stream:
        stream.write("{}")


def test_versions_pointer_cleanup_and_prune(tmp_path):
    root = str(tmp_path)
    assert vo.read_latest(root) is None and vo.resolve_previous(root) is None
    names = [f"v-2026112{i}-000000-00000{i}" for i in range(1, 5)]
    for name in names[:3]:
        _finish(root, name)
    with pytest.raises(BeamlensError, match="refusing to point LATEST"):
        os.makedirs(os.path.join(root, names[3]))
        vo.set_latest(root, names[3])  # unfinished: refused
    assert not os.path.exists(os.path.join(root, vo.POINTER_NAME))
    vo.set_latest(root, names[2])
    assert vo.read_latest(root) == names[2]
    assert [n for n in os.listdir(root) if n.startswith(".")] == []  # no temp file left behind
    resolved = vo.resolve_previous(root)
    assert resolved.version_dir == os.path.join(root, names[2]) and resolved.searchers_dir is None
    assert vo.resolve_previous(os.path.join(root, vo.POINTER_NAME)) == resolved
    assert vo.clean_partial_versions(root) == [names[3]]
    assert vo.prune_old_versions(root, 2) == [names[0]]
    assert vo.list_versions(root) == names[1:3]
    with open(os.path.join(root, vo.POINTER_NAME), "w") as stream:
        stream.write("v-missing\n")
    with pytest.raises(BeamlensError, match="not a finished version"):
        vo.read_latest(root)
    name = vo.new_version_name()
    assert name.startswith("v-") and len(name.split("-")) == 5 and name != vo.new_version_name()
