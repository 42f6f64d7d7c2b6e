"""Properties of row validation over generated rows (Hypothesis): every valid row is accepted
and comes back cleaned; each kind of invalid row is rejected with a message naming its row and
field while the other rows still pass; and no input, however odd, makes validation raise
anything but the declared DataError (a file-level problem), so one bad row never hides the
report on the others.
"""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mltagger.core.errors import DataError
from mltagger.data.text import blank_characters, clean_text, item_text
from mltagger.data.validation import (
    DATE_FORMATS,
    FIELDS,
    RawRow,
    load_items,
    parse_date,
    validate_rows,
)

FAST = settings(max_examples=50, deadline=None)
TAGS = ["natural-language-processing", "computer-vision", "mlops", "other"]

# letters, numbers, punctuation and symbols that show (not the few that render as nothing)
VISIBLE = st.characters(categories=("L", "N", "P", "S")).filter(
    lambda c: ord(c) not in blank_characters()
)
SPACES = st.text(st.sampled_from(" \t\r\n\u00a0\u200b"), max_size=3)
TITLES = st.builds(
    lambda a, t, b: a + t + b, SPACES, st.text(VISIBLE, min_size=1, max_size=20), SPACES
)
TEXTS = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
DATES = st.builds(
    lambda d, fmt: d.strftime(fmt),
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2030, 12, 31)),
    st.sampled_from(DATE_FORMATS),
)
# An id as JSON has it, or as a CSV cell (a string of digits, maybe padded).
IDS = st.integers(-(10**12), 10**12)
SHOWN_IDS = st.one_of(IDS, IDS.map(str), IDS.map(lambda i: f" {i} "))


@st.composite
def valid_rows(draw, min_size: int = 1) -> list[dict]:
    ids = draw(st.lists(IDS, min_size=min_size, max_size=5, unique=True))
    rows = []
    for i in ids:
        row = {
            "id": draw(st.sampled_from([i, str(i), f" {i} "])),
            "created_on": draw(DATES),
            "title": draw(TITLES),
            "description": draw(TEXTS),
            "tag": draw(st.sampled_from([*TAGS, *(f" {t} " for t in TAGS)])),
        }
        if draw(st.booleans()):
            row["author_tag"] = draw(st.sampled_from(TAGS))
        rows.append(row)
    return rows


def validate(rows: list, **kw):
    return validate_rows([RawRow(n, r) for n, r in enumerate(rows, start=1)], TAGS, **kw)


@FAST
@given(valid_rows())
def test_every_valid_row_is_accepted_and_cleaned(rows):
    report = validate(rows)
    assert report.ok and report.problems == [], report.format()
    assert len(report.items) == report.n_rows == len(rows)
    for row, item in zip(rows, report.items, strict=True):
        assert item["id"] == int(str(row["id"]).strip())
        assert item["title"] == clean_text(row["title"]) != ""
        assert item["description"] == clean_text(row["description"])
        assert item["text"] == item_text(row["title"], row["description"])
        assert item["tag"] == row["tag"].strip() and item["tag"] in TAGS
        assert item["title_raw"] == row["title"]  # the original is kept
        assert parse_date(item["created_on"]) is not None
        assert item.get("author_tag") == row.get("author_tag")


@FAST
@given(st.lists(TITLES, min_size=1, max_size=8))
def test_items_to_tag_need_only_a_title(titles):
    report = validate([{"title": t} for t in titles], labeled=False)
    assert report.ok
    assert [it["id"] for it in report.items] == list(range(1, len(titles) + 1))  # row numbers
    assert all(it["tag"] is None and it["description"] == "" for it in report.items)


# Each kind of invalid row: (field, how to break it, what the message says).
NOT_A_STRING = st.one_of(st.integers(), st.floats(allow_nan=False), st.lists(st.integers()))
BREAKS = {
    "id missing": ("id", st.just(None), "missing"),
    "id not an integer": (
        "id",
        st.one_of(
            st.sampled_from(["abc", "1.5", "--5", "²", "1e3", "0x10", True, 2.5, [1]]),
            st.text(st.sampled_from("abc-._ "), min_size=1),
        ),
        "must be an integer",
    ),
    "title missing": ("title", st.just(None), "missing"),
    "title not a string": ("title", NOT_A_STRING, "must be a string"),
    "title blank": ("title", st.text(st.sampled_from(" \t\r\n\u00a0\u200b\ufeff\u00ad")), "empty"),
    "description missing": ("description", st.just(None), "missing"),
    "description not a string": ("description", NOT_A_STRING, "must be a string"),
    "created_on missing": ("created_on", st.sampled_from([None, ""]), "missing"),
    "created_on not a string": ("created_on", NOT_A_STRING, "must be a string"),
    "created_on unparseable": (
        "created_on",
        st.text(st.sampled_from("abcxyz-:/ 0123456789"), min_size=1).filter(
            lambda s: parse_date(s) is None and s.strip()
        ),
        "unparseable date",
    ),
    "tag missing": ("tag", st.sampled_from([None, ""]), "missing"),
    "tag not a string": ("tag", NOT_A_STRING, "must be a string"),
    "tag unknown": ("tag", TEXTS.filter(lambda t: t.strip() not in TAGS and t), "unknown tag"),
    "author_tag unknown": ("author_tag", st.sampled_from(["nlp", "ML", "misc"]), "unknown tag"),
}


@FAST
@given(valid_rows(min_size=2), st.sampled_from(sorted(BREAKS)), st.data())
@example(
    rows=[
        {"id": 1, "created_on": "2020-01-01", "title": "A", "description": "", "tag": "mlops"},
        {"id": 2, "created_on": "2020-01-01", "title": "B", "description": "", "tag": "mlops"},
    ],
    kind="id not an integer",
    data=None,
).via("the id '--5' crashed validation with a ValueError from int()")
def test_each_kind_of_invalid_row_is_rejected_naming_row_and_field(rows, kind, data):
    field, values, says = BREAKS[kind]
    value = data.draw(values) if data is not None else "--5"
    bad = data.draw(st.integers(0, len(rows) - 1)) if data is not None else 1
    rows[bad] = {**rows[bad], field: value}
    report = validate(rows)
    rejected = {raw.number: problems for raw, problems in report.rejected}
    assert list(rejected) == [bad + 1], report.format()
    assert any(p.field == field and says in p.message for p in rejected[bad + 1])
    assert all(str(p).startswith(f"row {bad + 1}") for p in rejected[bad + 1])
    assert len(report.items) == len(rows) - 1  # the other rows are not held back


@FAST
@given(valid_rows(min_size=2), st.data())
def test_a_repeated_id_is_rejected_at_its_second_row(rows, data):
    first, second = sorted(
        data.draw(st.lists(st.integers(0, len(rows) - 1), min_size=2, max_size=2, unique=True))
    )
    rows[second] = {**rows[second], "id": f" {str(rows[first]['id']).strip()} "}  # "7" == 7
    report = validate(rows)
    ((raw, problems),) = report.rejected
    assert raw.number == second + 1
    assert [p.field for p in problems] == ["id"]
    assert f"first seen at row {first + 1}" in problems[0].message


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXTS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXTS, inner, max_size=3),
    max_leaves=8,
)
ODD_ROWS = st.lists(
    st.one_of(
        JSON,
        st.fixed_dictionaries({}, optional={f: st.one_of(JSON, SHOWN_IDS) for f in FIELDS}),
    ),
    max_size=6,
)


@FAST
@given(ODD_ROWS, st.booleans())
def test_no_row_makes_validation_raise(rows, labeled):
    report = validate(rows, labeled=labeled)  # never raises: bad rows are reported
    assert len(report.items) + len(report.rejected) == report.n_rows == len(rows)
    for raw, problems in report.rejected:
        assert problems
        for p in problems:
            assert p.row == raw.number and str(p).startswith(f"row {raw.number}")
            assert p.field in (*FIELDS, "row", "author_tag")
    report.format()  # the printed report too
    json.dumps([raw.data for raw, _ in report.rejected], default=str)


@FAST
@given(st.binary(max_size=200), st.sampled_from([".json", ".jsonl", ".csv"]))
def test_any_file_content_is_a_report_or_a_data_error(content, suffix):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"items{suffix}"
        path.write_bytes(content)
        try:
            report = load_items(path, TAGS)
        except DataError as err:
            assert str(path) in str(err)  # names the file
        else:
            assert len(report.items) + len(report.rejected) == report.n_rows
