"""The shipped fresh evaluation set (data/eval/fresh.json): what the issue promises of it, and
that it is new to every training source."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from omegaconf import OmegaConf

from tests.conftest import REPO

PROJECTS = OmegaConf.load(REPO / "conf" / "data" / "projects.yaml")
# Every training source of the widest data config: projects, other, the external lists and the
# package pool.
WIDEST = OmegaConf.load(REPO / "conf" / "data" / "with_packages.yaml")
FRESH = REPO / PROJECTS.fresh.path
SECOND = REPO / "data" / "eval" / "fresh_second_labels.json"
TOPICS = [t for t in PROJECTS.tags if t != PROJECTS.fallback_tag]


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return json.loads(FRESH.read_text())


@pytest.fixture(scope="module")
def checked():
    """check_fresh against every training source (projects, other, external, packages), as
    training loads it."""
    from mltagger.data.fresh import check_fresh
    from mltagger.data.validation import load_items

    training = []
    for src in WIDEST.sources:
        training += load_items(REPO / src.path, list(PROJECTS.tags)).items
    return check_fresh(FRESH, list(PROJECTS.tags), training)


def test_checksum_matches_config():
    from mltagger.data.validation import sha256_file

    assert sha256_file(FRESH) == PROJECTS.fresh.sha256


def test_every_row_is_valid_and_new_to_the_training_data(checked, rows):
    assert checked.ok, checked.format()
    assert len(checked.items) == len(rows)


def test_counts_the_issue_asks_for(rows):
    tags = Counter(r["tag"] for r in rows)
    assert len(rows) >= 400
    assert all(tags[t] >= 45 for t in TOPICS), tags
    assert tags["other"] >= 80
    assert sum(1 for r in rows if r.get("non_ml")) >= 20
    assert all(r["tag"] == "other" for r in rows if r.get("non_ml"))
    assert sum(1 for r in rows if r["kind"] == "library") <= len(rows) / 2


def test_every_item_is_2023_to_2026_and_cites_a_reference(rows):
    assert all("2023-01-01" <= r["created_on"] <= "2026-12-31" for r in rows)
    assert all(len(r["reference"]) >= 6 for r in rows)
    libs = [r for r in rows if r["kind"] == "library"]
    assert all(r["reference"].startswith("pypi:") and "==" in r["reference"] for r in libs)


def test_descriptions_are_platform_style(rows):
    words = [len(r["description"].split()) for r in rows]
    assert min(words) >= 5 and max(words) <= 90


def test_a_blind_second_labelling_of_15_percent_is_recorded(rows):
    second = json.loads(SECOND.read_text())["labels"]
    by_id = {r["id"]: r for r in rows}
    assert len(second) >= 0.15 * len(rows)
    assert all(s["id"] in by_id and s["tag"] in PROJECTS.tags for s in second)
    # Every disagreement is settled in the item's note.
    for s in second:
        if s["tag"] != by_id[s["id"]]["tag"]:
            assert "second label" in by_id[s["id"]]["note"], s["id"]
