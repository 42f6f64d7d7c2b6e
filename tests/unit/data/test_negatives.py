"""The gate's negatives: their own fields, and no copy of a training, fresh or pool item."""

from __future__ import annotations

import json

import pytest

from mltagger.cli import main
from mltagger.core.errors import EXIT_USAGE, DataError
from mltagger.data import negatives as negatives_module
from mltagger.data.negatives import check_negatives


def neg_row(i: int, title: str, description: str, **extra) -> dict:
    return {
        "id": i,
        "title": title,
        "description": description,
        "tag": "other",
        "created_on": None,
        "source": "npm",
        "stratum": "not-ml-npm",
        "rule": "not-ml-npm (seed 32, 1 of 2 drawn uniformly from 9)",
        "reference": f"npm:{title}@1.0.0",
        "text_origin": "author-summary",
        **extra,
    }


GOOD = [
    neg_row(2, "left-pad-plus", "Pads strings on the left with any character you like"),
    neg_row(1, "django-forms-x", "Wrap several Django forms into one form-like object",
            source="pypi", stratum="not-ml-pypi", created_on="2024-05-01 00:00:00",
            reference="pypi:django-forms-x==0.3"),
]  # fmt: skip


def write(tmp_path, rows) -> str:
    path = tmp_path / "negatives.json"
    path.write_text(json.dumps(rows))
    return str(path)


def test_a_good_file_loads_in_id_order(tmp_path):
    report = check_negatives(write(tmp_path, GOOD))
    report.raise_if_bad("negatives.json", "--negatives")
    items = sorted(report.items, key=lambda it: it["id"])
    assert [it["id"] for it in items] == [1, 2]
    assert {it["tag"] for it in items} == {"other"}
    assert {it["source"] for it in items} == {"npm", "pypi"}


def test_a_copy_of_a_training_or_fresh_item_names_both_rows(tmp_path):
    rows = [
        *GOOD,
        neg_row(3, "rust-release-notes", "Rust 1.80 released with new lints and faster builds"),
        neg_row(4, "airdrop-free", "Claim your free crypto airdrop tokens today for nothing"),
    ]
    training = [
        {
            "id": 41,
            "title": "Rust release notes",
            "description": "Rust 1.80 released with new lints and faster builds",
        }
    ]
    fresh = [{"id": 100007, "title": "Free airdrop",
              "description": "Claim your free crypto airdrop tokens today for nothing",
              "reference": "https://example.org/airdrop"}]  # fmt: skip
    report = check_negatives(write(tmp_path, rows), training, fresh)
    text = report.format()
    assert "(id 3): title:" in text and "of training item 41 ('Rust release notes')" in text
    assert "(id 4): title:" in text and "of fresh-set item 100007 ('Free airdrop')" in text
    assert [it["id"] for it in report.items] == [2, 1]
    with pytest.raises(DataError, match="2 of 4 rows are invalid") as err:
        check_negatives(write(tmp_path, rows), training, fresh).raise_if_bad("f", "--negatives")
    assert "\n" not in str(err.value)


def test_the_same_registry_package_as_the_pool_is_a_copy(tmp_path):
    pool = [{"id": 500009, "title": "Left_Pad.Plus", "description": "something else entirely",
             "reference": "pypi:Left_Pad.Plus==2.0 (2024-01)"}]  # fmt: skip
    report = check_negatives(write(tmp_path, GOOD), pool=pool)
    assert "(id 2): reference: package left-pad-plus is already pool item 500009" in (
        report.format()
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"tag": "natural-language-processing"},
            "row 1 (id 2): tag: 'natural-language-processing'",
        ),
        ({"description": None}, "row 1 (id 2): description: missing or empty"),
    ],
)
def test_a_bad_row_is_one_line(tmp_path, change, expected):
    rows = [{**GOOD[0], **change}, GOOD[1]]
    with pytest.raises(DataError) as err:
        check_negatives(write(tmp_path, rows)).raise_if_bad("f", "--negatives")
    message = str(err.value)
    assert "\n" not in message
    assert f"1 of 2 rows are invalid, first {expected}" in message
    assert "validate --negatives" in message


def test_validate_negatives_exits_2_on_a_bad_file_and_0_on_a_good_one(
    tmp_path, monkeypatch, capsys
):
    # the CLI checks against the project's data; here against nothing, to stay fast
    empty = {"training": [], "fresh": [], "packages": []}
    monkeypatch.setattr(negatives_module, "references", lambda cfg, root: empty)
    assert main(["validate", "--negatives", write(tmp_path, GOOD)]) == 0
    out = capsys.readouterr().out
    assert "all 2 rows are valid" in out
    assert "per source: npm 1, pypi 1" in out and "not-ml-npm 1" in out
    bad = [{**GOOD[0], "tag": "mlops"}, {**GOOD[1], "description": ""}]
    assert main(["validate", "--negatives", write(tmp_path, bad)]) == EXIT_USAGE
    out = capsys.readouterr().out
    assert "row 1 (id 2): tag: 'mlops'" in out
    assert "row 2 (id 1): description: missing or empty" in out
