"""Validation: every bad-input case gives its own clear message; nothing is lost."""

from __future__ import annotations

import json

import pytest

from mltagger.core.errors import DataError
from mltagger.data.text import clean_text
from mltagger.data.validation import RawRow, load_items, read_rows, validate_rows


def problems_of(rows, tags, **kw):
    report = validate_rows([RawRow(i, r) for i, r in enumerate(rows, start=1)], tags, **kw)
    return report, [str(p) for p in report.problems]


GOOD = {
    "id": 1,
    "created_on": "2020-02-20 06:43:18",
    "title": "YOLO",
    "description": "Detect.",
    "tag": "computer-vision",
}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"title": None}, "row 1 (id 1): title: missing"),
        ({"title": "   \r\n "}, "row 1 (id 1): title: empty"),
        ({"title": 42}, "row 1 (id 1): title: must be a string, got int"),
        ({"description": ["a"]}, "row 1 (id 1): description: must be a string, got list"),
        ({"description": None}, "row 1 (id 1): description: missing"),
        ({"tag": "nlp"}, "row 1 (id 1): tag: unknown tag 'nlp'; approved tags: "),
        ({"tag": None}, "row 1 (id 1): tag: missing"),
        ({"tag": 3}, "row 1 (id 1): tag: must be a string, got int"),
        (
            {"created_on": "2020-13-45 99:00:00"},
            "row 1 (id 1): created_on: unparseable date '2020-13-45 99:00:00'",
        ),
        ({"created_on": 20200220}, "row 1 (id 1): created_on: must be a string, got int"),
        ({"id": "abc"}, "row 1 (id abc): id: must be an integer, got 'abc'"),
        ({"id": True}, "row 1 (id True): id: must be an integer, got True"),
        ({"id": None}, "row 1: id: missing"),
    ],
)
def test_each_bad_field_has_its_message(tags, change, expected):
    report, msgs = problems_of([{**GOOD, **change}], tags)
    assert not report.ok and report.items == []
    assert any(m.startswith(expected) for m in msgs), msgs


def test_all_problems_of_a_row_are_reported_not_only_the_first(tags):
    _, msgs = problems_of([{**GOOD, "title": "", "tag": "nlp", "created_on": "yesterday"}], tags)
    assert [m.split(":")[1].strip() for m in msgs] == ["title", "created_on", "tag"]


def test_duplicate_ids_point_at_the_first_row(tags):
    report, msgs = problems_of([GOOD, {**GOOD, "title": "Other"}], tags)
    assert msgs == ["row 2 (id 1): id: duplicate id 1 (first seen at row 1)"]
    assert [it["id"] for it in report.items] == [1]


def test_non_object_row(tags):
    _, msgs = problems_of(["just a string"], tags)
    assert msgs[0].startswith("row 1: row: expected an object")


def test_unlabeled_mode_needs_only_a_title(tags):
    report, msgs = problems_of(
        [{"title": "Graph nets"}, {"description": "no title"}], tags, labeled=False
    )
    assert msgs == ["row 2: title: missing"]
    assert report.items[0]["id"] == 1 and report.items[0]["tag"] is None


def test_valid_rows_are_cleaned_and_keep_the_original(tags):
    raw = {**GOOD, "title": "  Ｙｏｌｏ\u200b  v4 ", "description": "Fast.\r\nReally   fast. "}
    report, msgs = problems_of([raw], tags)
    assert msgs == []
    item = report.items[0]
    assert item["title"] == "Yolo v4"
    assert item["description"] == "Fast. Really fast."
    assert item["text"] == "Yolo v4. Fast. Really fast."
    assert item["title_raw"] == raw["title"] and item["description_raw"] == raw["description"]


def test_clean_text_keeps_emoji_and_negations():
    assert clean_text("not\tother 🤗\n\n") == "not other 🤗"


def test_report_format_has_problems_and_summary(tags):
    report, _ = problems_of([GOOD, {**GOOD, "id": 2, "tag": "nlp"}], tags)
    text = report.format()
    assert "1 of 2 rows are invalid" in text
    assert "row 2 (id 2): tag: unknown tag 'nlp'" in text
    assert "computer-vision  1" in text


def test_rejects_file_keeps_every_bad_row(tmp_path, tags):
    report, _ = problems_of([GOOD, {**GOOD, "id": 2, "tag": "x"}, {"id": 3}], tags)
    path = report.write_rejects(tmp_path / "rejects.jsonl")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["row"] for r in records] == [2, 3]
    assert records[0]["data"]["tag"] == "x" and records[0]["problems"]


# --- reading files -------------------------------------------------------------------------


def test_json_jsonl_and_csv_give_the_same_items(tmp_path, tags, raw_items):
    import csv

    rows = raw_items[:5]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with (tmp_path / "a.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    loaded = [load_items(tmp_path / f"a.{ext}", tags).items for ext in ("json", "jsonl", "csv")]
    assert loaded[0] == loaded[1] == loaded[2]
    assert len(loaded[0]) == 5


def test_broken_jsonl_line_is_a_row_problem(tmp_path, tags):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(GOOD) + "\n{not json\n")
    report = load_items(path, tags)
    assert len(report.items) == 1
    assert str(report.problems[0]).startswith("row 2: row: invalid JSON")


def test_csv_row_numbers_are_file_lines(tmp_path, tags):
    path = tmp_path / "a.csv"
    path.write_text(
        "id,created_on,title,description,tag\n1,2020-01-01,A,b,mlops\n2,2020-01-01,,b,mlops\n"
    )
    assert str(load_items(path, tags).problems[0]) == "row 3 (id 2): title: empty"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.json", None, "no such file"),
        ("a.txt", "x", "unsupported format .txt"),
        ("a.json", '{"id": 1}', "expected a JSON list of items, got dict"),
        ("a.json", "[{", "invalid JSON at line 1"),
    ],
)
def test_file_level_problems_raise_data_error(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_rows(path)
