"""The shipped dataset itself: checksum, schema, label set, counts (as documented in SOURCE.md)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from omegaconf import OmegaConf

from tests.conftest import REPO

DATA_CFG = OmegaConf.load(REPO / "conf" / "data" / "projects.yaml")
PATH = REPO / DATA_CFG.sources[0].path


@pytest.fixture(scope="module")
def report():
    from mltagger.data.validation import load_items

    return load_items(PATH, list(DATA_CFG.tags))


def test_checksum_matches_config():
    from mltagger.data.validation import sha256_file

    assert sha256_file(PATH) == DATA_CFG.sources[0].sha256


def test_every_row_is_valid(report):
    assert report.ok, report.format()
    assert report.n_rows == 764


def test_schema_is_exactly_the_documented_fields():
    rows = json.loads(PATH.read_text())
    assert all(set(r) == {"id", "created_on", "title", "description", "tag"} for r in rows)


def test_class_counts_as_documented(report):
    assert report.tag_counts() == Counter(
        {
            "natural-language-processing": 310,
            "computer-vision": 285,
            "mlops": 63,
            "reinforcement-learning": 45,
            "graph-learning": 33,
            "time-series": 28,
        }
    )


def test_labels_are_approved_and_other_is_not_used(report):
    assert set(report.tag_counts()) < set(DATA_CFG.tags)
    assert "other" not in report.tag_counts()


def test_no_empty_text(report):
    assert all(it["title"] and it["text"] for it in report.items)


def test_default_split_has_every_tag_in_every_split():
    from mltagger.data.prepare import prepare_data

    data = prepare_data(DATA_CFG, REPO)
    for name, items in data.splits.items():
        assert {it["tag"] for it in items} == set(data.label_names()), name
    n = sum(len(v) for v in data.splits.values())
    assert n == 764 - len(data.removed_duplicates)
    assert len(data.splits["test"]) >= 100


@pytest.fixture(scope="module")
def with_other():
    from mltagger.core.config import compose_config
    from mltagger.data.prepare import prepare_data

    cfg = compose_config("train", ["data=with_other"])
    return cfg.data, prepare_data(cfg.data, REPO)


def test_other_source_checksum_and_rows(with_other):
    from mltagger.data.validation import load_items, sha256_file

    cfg, _ = with_other
    other = next(s for s in cfg.sources if s.name == "other")
    assert sha256_file(REPO / other.path) == other.sha256
    report = load_items(REPO / other.path, list(cfg.tags))
    assert report.ok and report.n_rows == 641
    assert report.tag_counts() == Counter({"other": 641})


def test_with_other_shares_the_topic_split_and_applies_both_layers(with_other):
    """The committed label-issue layer matches the shipped data (training would refuse a stale
    one), and topic items sit in the same splits as with the six-topic data."""
    from mltagger.data.prepare import prepare_data

    _, data = with_other
    six = prepare_data(DATA_CFG, REPO)
    for split in ("train", "val", "test"):
        topic_ids = [it["id"] for it in data.splits[split] if it.get("source") == "projects"]
        assert topic_ids == [it["id"] for it in six.splits[split]], split
    assert data.label_noise["affected"] > 0 and data.label_noise["action"] == "relabel"
    # Every weak `other` row was read: 19 val/test and 46 train rows corrected.
    assert data.reviewed_labels["corrected"] == 65
    assert data.reviewed_labels["by_split"]["train"] == 46
    assert data.label_names() == list(DATA_CFG.tags)  # seven classes


def test_the_default_data_trains_on_the_pool_and_its_derived_files_match_it():
    """data=with_pool: the stream pool in train + val only (test is the platform's own, as in
    with_packages), the LLMOps mapping as documented, and the shipped teacher and out-of-fold
    files made from exactly this data (training would stop on a stale one)."""
    from mltagger.core.config import compose_config
    from mltagger.data.prepare import prepare_data

    cfg = compose_config("train", ["data=with_pool"])
    data = prepare_data(cfg.data, REPO)
    plain = prepare_data(compose_config("train", ["data=with_packages"]).data, REPO)
    where = Counter((s, it.get("source")) for s, v in data.splits.items() for it in v)
    assert where[("train", "pool")] + where[("val", "pool")] == 1775
    assert where[("test", "pool")] == 0
    assert [it["id"] for it in data.splits["test"]] == [it["id"] for it in plain.splits["test"]]
    assert data.relabel["relabelled"] == 10
    assert data.relabel["moves"] == {"natural-language-processing -> mlops": 10}
    for key in ("teacher_soft_labels", "cv_oof"):
        blob = json.loads((REPO / cfg.data[key]).read_text())
        assert blob["data_sha256"] == data.data_sha256, key
