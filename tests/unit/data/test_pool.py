"""The stream pool's checks: its own fields, and no copy of a fresh or training item."""

from __future__ import annotations

import json

import pytest

from mltagger.core.errors import DataError
from mltagger.data.pool import check_pool, load_pool, package_name
from tests.conftest import TAGS


def pool_row(i: int, title: str, description: str, **extra) -> dict:
    return {
        "id": i,
        "created_on": "2025-03-01",
        "title": title,
        "description": description,
        "tag": "reinforcement-learning",
        "also": "",
        "kind": "library",
        "reference": f"pypi:{title}==1.0 (2025-03)",
        "text_origin": "author-summary",
        "rule": "topic-reinforcement-learning (seed 31, 1 of 2 drawn uniformly from 9)",
        **extra,
    }


def write(tmp_path, rows) -> str:
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(rows))
    return str(path)


def test_a_clean_pool_is_valid_and_loads_in_date_order(tmp_path):
    rows = [
        pool_row(2, "gym-kitchen", "A Gymnasium environment for robots", created_on="2026-01-01"),
        pool_row(1, "ppo-lite", "Proximal policy optimisation in forty lines of JAX", also="other"),
    ]  # fmt: skip
    report = check_pool(write(tmp_path, rows), TAGS)
    assert report.ok, report.format()
    assert [it["id"] for it in load_pool(write(tmp_path, rows), TAGS)] == [1, 2]
    assert {it["also"] for it in report.items} == {"", "other"}
    assert {it["source"] for it in report.items} == {"pool"}


def test_each_own_field_is_checked(tmp_path):
    rows = [
        pool_row(1, "a-pkg", "Reinforcement learning for traffic lights", text_origin="guess"),
        pool_row(2, "b-pkg", "Offline RL from logged data in warehouses", rule=" "),
        pool_row(3, "c-pkg", "Multi-agent RL for drone swarms in the open", also="robots"),
        pool_row(4, "d-pkg", "Bandit algorithms for ads", also="reinforcement-learning"),
    ]  # fmt: skip
    report = check_pool(write(tmp_path, rows), TAGS)
    got = {(p.id, p.field) for p in report.problems}
    assert got == {(1, "text_origin"), (2, "rule"), (3, "also"), (4, "also")}
    assert "one of author-summary, written-from-reference" in report.format()
    assert not report.items


def test_a_copy_names_both_rows(tmp_path):
    rows = [
        pool_row(1, "rl-arena", "An arena of RL environments for benchmarking agents quickly"),
        pool_row(2, "new-thing", "Graph neural networks for power grids", tag="graph-learning"),
        pool_row(3, "rl-arena-two", "An arena of RL environments for benchmarking agents quickly"),
        pool_row(4, "skforecast", "Forecasting with any regressor, anew", tag="time-series"),
    ]  # fmt: skip
    fresh = [
        {"id": 100007, "title": "new-thing", "description": "Graph neural networks for power grids",
         "reference": "pypi:other-name==2.0 (2024-01)"},
    ]  # fmt: skip
    packages = [{"id": 300011, "title": "SKForecast", "description": "anything"}]
    report = check_pool(write(tmp_path, rows), TAGS, fresh=fresh, packages=packages)
    text = report.format()
    assert "(id 2): title: exact copy of fresh-set item 100007" in text
    assert "(id 3): title: exact copy of pool item 1" in text or "near copy of pool item 1" in text
    assert "(id 4): reference: package skforecast is already package-pool item 300011" in text
    assert [it["id"] for it in report.items] == [1]
    with pytest.raises(DataError, match="3 of 4 rows are invalid"):
        load_pool(write(tmp_path, rows), TAGS, fresh=fresh, packages=packages)


def test_package_names_are_normalised():
    assert package_name("pypi:Foo_Bar.baz==1.2 (2024-01)") == "foo-bar-baz"
    assert package_name("arXiv:2401.00001") is None


def test_a_bad_pool_stops_the_replay_with_one_line(tmp_path):
    rows = [
        pool_row(1, "ppo-lite", "Proximal policy optimisation in forty lines of JAX"),
        pool_row(2, "gym-bar", "A Gymnasium environment for bar tending", tag="cooking"),
        {k: v for k, v in pool_row(3, "rl-x", "Offline RL for warehouses").items()
         if k != "created_on"},
    ]  # fmt: skip
    with pytest.raises(DataError) as err:
        load_pool(write(tmp_path, rows), TAGS)
    message = str(err.value)
    assert "\n" not in message
    assert "2 of 3 rows are invalid, first row 2 (id 2): tag:" in message
    assert "validate --pool" in message
    report = check_pool(write(tmp_path, rows), TAGS)
    assert (3, "created_on") in {(p.id, p.field) for p in report.problems}
