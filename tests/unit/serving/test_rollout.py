"""Shadow and canary routing, the audit sample, promote and rollback on real links."""

import hashlib

import pytest

from mltagger.models.modelio import read_model_metadata, write_model_metadata
from mltagger.serving.rollout import (
    Rollout,
    RolloutError,
    audit_pick,
    check_candidate,
    promote,
    rollback,
)
from tests.fakes import LABELS, make_model_folder

HASHES = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(4000)]


def test_rollout_settings_parse_or_say_what_is_allowed():
    assert Rollout.parse("shadow") == Rollout("shadow") and Rollout.parse(None).mode == "shadow"
    assert Rollout.parse("canary:12.5") == Rollout("canary", 12.5)
    assert str(Rollout.parse("canary:10")) == "canary:10"
    for bad in ("canary", "canary:0", "canary:101", "canary:x", "blue-green"):
        with pytest.raises(RolloutError, match="shadow or canary"):
            Rollout.parse(bad)


def test_the_canary_takes_its_share_by_a_stable_hash_and_shadow_none():
    canary = Rollout.parse("canary:10")
    picked = [h for h in HASHES if canary.serves_candidate(h)]
    assert 0.08 < len(picked) / len(HASHES) < 0.12
    assert picked == [h for h in HASHES if canary.serves_candidate(h)]  # same item, same model
    assert not any(Rollout.parse("shadow").serves_candidate(h) for h in HASHES)


def test_the_audit_sample_is_its_share_and_independent_of_the_canary():
    audited = {h for h in HASHES if audit_pick(h, 0.2)}
    assert 0.17 < len(audited) / len(HASHES) < 0.23
    canary = {h for h in HASHES if Rollout.parse("canary:50").serves_candidate(h)}
    both = len(audited & canary) / len(audited)
    assert 0.4 < both < 0.6  # half the audited items are canary items, as for any item
    assert not any(audit_pick(h, 0.0) for h in HASHES)


def test_a_candidate_must_be_a_model_folder_with_the_same_labels(tmp_path):
    good = make_model_folder(tmp_path / "good")
    assert check_candidate(good, list(LABELS)) == good
    with pytest.raises(RolloutError, match="no such model folder"):
        check_candidate(tmp_path / "missing", list(LABELS))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RolloutError, match="not a model folder"):
        check_candidate(tmp_path / "empty", list(LABELS))
    other = make_model_folder(tmp_path / "other")
    labels, inference = read_model_metadata(other)
    write_model_metadata(other, list(reversed(labels)), inference)
    with pytest.raises(RolloutError, match="same tags"):
        check_candidate(other, list(LABELS))


def test_promote_points_the_link_at_the_candidate_and_rollback_back(tmp_path):
    old = make_model_folder(tmp_path / "runs" / "old")
    new = make_model_folder(tmp_path / "runs" / "new")
    link = tmp_path / "models" / "export"
    link.parent.mkdir()
    link.symlink_to("../runs/old")
    with pytest.raises(RolloutError, match="nothing to roll back"):
        rollback(link)
    done = promote(link, new)
    assert link.resolve() == new.resolve() and done["from"] == str(old.resolve())
    assert (tmp_path / "models" / "export.previous").resolve() == old.resolve()
    with pytest.raises(RolloutError, match="already points"):
        promote(link, new)
    rollback(link)
    assert link.resolve() == old.resolve()
    rollback(link)  # and forward again: the two links swap
    assert link.resolve() == new.resolve()


def test_promote_needs_a_link(tmp_path):
    folder = make_model_folder(tmp_path / "plain")
    with pytest.raises(RolloutError, match="not a link"):
        promote(folder, make_model_folder(tmp_path / "cand"))
