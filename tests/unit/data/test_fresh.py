"""mltagger.freshset: every bad row of a fresh-set file is listed; overlap with training refused."""

from __future__ import annotations

import json

from tests.conftest import REPO, TAGS, make_fresh_items, make_items, run_job


def _training() -> list[dict]:
    from mltagger.data.validation import RawRow, validate_rows

    rows = make_items()
    return validate_rows([RawRow(i + 1, r) for i, r in enumerate(rows)], TAGS).items


def test_a_good_fresh_file_passes(tmp_path):
    from mltagger.data.fresh import check_fresh

    path = tmp_path / "fresh.json"
    path.write_text(json.dumps(make_fresh_items()))
    report = check_fresh(path, TAGS, _training())
    assert report.ok, report.format()
    assert len(report.items) == 14
    assert report.items[0]["kind"] == "paper" and report.items[0]["source"] == "fresh"


def test_every_bad_row_is_listed(tmp_path):
    from mltagger.data.fresh import check_fresh

    rows = make_fresh_items()
    rows[1]["tag"] = "llm"  # unknown tag
    rows[2]["id"] = rows[0]["id"]  # duplicate id
    del rows[3]["reference"]  # missing field
    rows[4]["kind"] = "blog"  # unknown kind
    rows[5]["created_on"] = "2019-05-01"  # too old
    train = _training()
    # An exact copy and a reworded near copy of training items.
    rows[6].update(title=train[0]["title"], description=train[0]["description"])
    rows[7].update(title=train[9]["title"] + " (2024)", description=train[9]["description"])
    path = tmp_path / "fresh.json"
    path.write_text(json.dumps(rows))
    report = check_fresh(path, TAGS, train)
    assert not report.ok
    bad = {(p.row, p.field) for p in report.problems}
    assert {(2, "tag"), (3, "id"), (4, "reference"), (5, "kind"), (6, "created_on")} <= bad
    overlap = [p for p in report.problems if "training item" in p.message]
    assert {p.row for p in overlap} == {7, 8}
    assert "exact copy" in next(p.message for p in overlap if p.row == 7)
    assert len(report.items) == len(rows) - 7
    text = report.format()
    assert "7 of 14 rows are invalid" in text


def test_cli_validate_fresh_lists_rows_and_exits_1(tmp_path):
    rows = make_fresh_items()
    rows[0]["tag"] = "llm"
    rows[1]["id"] = rows[2]["id"]
    path = tmp_path / "fresh.json"
    path.write_text(json.dumps(rows))
    proc = run_job("validate", str(path), "--fresh", "--data-config", "with_other")
    assert proc.returncode == 1, proc.stderr
    assert "unknown tag 'llm'" in proc.stdout and "duplicate id" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_cli_validate_fresh_refuses_a_copy_of_a_shipped_training_item(tmp_path):
    shipped = json.loads((REPO / "data" / "projects.json").read_text())[5]
    rows = make_fresh_items()
    rows[0].update(title=shipped["title"], description=shipped["description"])
    path = tmp_path / "fresh.json"
    path.write_text(json.dumps(rows))
    proc = run_job("validate", str(path), "--fresh", "--data-config", "with_other")
    assert proc.returncode == 1
    assert f"training item {shipped['id']}" in proc.stdout


def test_two_entries_about_the_same_thing_are_refused(tmp_path):
    from mltagger.data.fresh import check_fresh

    rows = make_fresh_items()
    rows[5].update(title=rows[4]["title"], description=rows[4]["description"])
    path = tmp_path / "fresh.json"
    path.write_text(json.dumps(rows))
    report = check_fresh(path, TAGS, _training())
    assert [(p.row, p.id) for p in report.problems] == [(6, rows[5]["id"])]
    assert f"near copy of fresh item {rows[4]['id']}" in report.problems[0].message
