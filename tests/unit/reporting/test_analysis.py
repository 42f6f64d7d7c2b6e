"""Error-analysis helpers on hand-made metrics and predictions, and the committed notebooks'
hygiene (stored without outputs)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from mltagger.reporting import analysis as A
from tests.conftest import REPO

METRICS = {
    "num_samples": 10,
    "overall": {"f1_weighted": 0.8},
    "per_class": {
        "mlops": {
            "precision": 0.9,
            "precision_ci95": [0.6, 0.98],
            "recall": 0.5,
            "f1": 0.64,
            "num_samples": 4,
        },
        "other": {
            "precision": 0.7,
            "precision_ci95": [0.4, 0.9],
            "recall": 0.9,
            "f1": 0.79,
            "num_samples": 6,
        },
    },
    "slices": {
        "short_text": {"num_samples": 40, "f1_weighted": 0.6},
        "tutorial": {"num_samples": 35, "f1_weighted": 0.9},
        "llm": {"num_samples": 3, "f1_weighted": 0.1, "noisy": True},
        "tag=mlops": {"num_samples": 40, "f1_weighted": 0.2},
    },
    "confusion_matrix": {"labels": ["mlops", "other"], "matrix": [[2, 2], [1, 5]]},
    "coverage": {
        "at_threshold": {
            "auto_precision": 0.86,
            "coverage": 0.7,
            "num_review": 3,
            "per_class_precision": {"other": 0.8},
        }
    },
}
PREDS = [
    {"gold": "mlops", "predicted": "other", "confidence": 0.95, "needs_review": False, "text": "a"},
    {"gold": "mlops", "predicted": "other", "confidence": 0.55, "needs_review": True, "text": "b"},
    {"gold": "other", "predicted": "mlops", "confidence": 0.70, "needs_review": False, "text": "c"},
    {"gold": "other", "predicted": "other", "confidence": 0.40, "needs_review": True, "text": "d"},
]


def test_tables_and_rankings_by_hand():
    run = A.Run(folder=Path("."), summary={}, test=METRICS, predictions=PREDS)
    head = A.headline(run)
    assert head["meets_target"] and head["precision"] == 0.86
    assert not A.headline(run, target=0.9)["meets_target"]
    tags = {r["tag"]: r for r in A.per_tag_table(METRICS)}
    assert tags["mlops"]["ci_low"] == 0.6 and tags["other"]["auto_precision"] == 0.8
    # Too-small and per-tag slices are left out of "weakest".
    assert [r["slice"] for r in A.weakest_slices(METRICS, k=2, min_n=30)] == [
        "short_text",
        "tutorial",
    ]
    assert A.top_confusions(METRICS) == [
        {"gold": "mlops", "predicted": "other", "count": 2},
        {"gold": "other", "predicted": "mlops", "count": 1},
    ]
    worst = A.worst_mistakes(PREDS, per_tag=1)
    assert [(m["gold"], m["confidence"], m["auto_applied"]) for m in worst] == [
        ("mlops", 0.95, True),
        ("other", 0.70, True),
    ]
    assert [r["text"] for r in A.review_items(PREDS)] == ["d", "b"]  # least confident first
    notes = A.weak_spots(run)
    assert any(n.startswith("mlops: precision 90%") for n in notes)
    assert any("coverage 70%" in n for n in notes)


def test_resolve_run_accepts_a_model_folder_and_explains_a_wrong_path(tmp_path):
    run = tmp_path / "runs" / "train" / "x"
    (run / "test").mkdir(parents=True)
    (run / "model").mkdir()
    (run / "test" / "metrics.json").write_text(json.dumps(METRICS))
    assert A.resolve_run(run / "model") == run.resolve()
    assert A.load_run(run).test["num_samples"] == 10
    with pytest.raises(A.RunNotFound, match="not a run folder"):
        A.resolve_run(tmp_path)
    with pytest.raises(A.RunNotFound, match="wandb:<entity>/<project>/<run id>"):
        A.download_wandb_run("wandb:only/two")


@pytest.mark.parametrize("name", ["error_analysis", "data_exploration"])
def test_committed_notebooks_have_no_outputs(name):
    nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "empty notebook"
    dirty = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
    assert not dirty, f"{name}: code cells {dirty} have outputs: run `make strip-notebooks`"


def _auto(per_tag: dict) -> dict:
    """A metrics report whose automatic tags are per_tag {tag: (num_auto, right)}."""
    from mltagger.evaluation.metrics import wilson_interval

    return {
        "coverage": {
            "at_threshold": {
                "per_class_auto": {
                    t: {
                        "num_auto": n,
                        "precision": (r / n) if n else None,
                        "precision_ci95": list(wilson_interval(r, n)) if n else [None, None],
                    }
                    for t, (n, r) in per_tag.items()
                }
            }
        }
    }


def test_the_promise_is_the_lowest_per_tag_automatic_precision():
    from mltagger.evaluation.metrics import lowest_tag

    report = _auto({"mlops": (10, 10), "natural-language-processing": (28, 16), "other": (0, 0)})
    worst = lowest_tag(report)
    assert worst["tag"] == "natural-language-processing" and worst["num_auto"] == 28
    assert worst["precision"] == pytest.approx(16 / 28) and worst["low"] < worst["precision"]
    assert lowest_tag(_auto({"mlops": (0, 0)})) is None  # nothing applied: no promise to read


def test_the_report_leads_with_the_promise_on_fresh_in_red_when_broken():
    from mltagger.reporting.html import _header

    run = A.Run(Path("."), {}, METRICS | _auto({"mlops": (20, 20)}), predictions=[])
    fresh = _auto({"mlops": (9, 9), "natural-language-processing": (28, 16)})
    page = "\n".join(_header(run, 0.85, None, fresh))
    card = page.split('<div class="card">')[1]
    assert card.startswith("lowest per-tag auto-tag precision (fresh)")
    assert '<b class="bad">57.1%</b>natural-language-processing, 28 auto-tagged' in card
    assert "below the 85% promise" in page
    good = "\n".join(_header(run, 0.85, None, _auto({"mlops": (9, 9)})))
    assert '<b class="ok">100.0%</b>mlops' in good
    # no fresh figures in the run: the test set's, named as such
    assert "lowest per-tag auto-tag precision (test)" in "\n".join(_header(run, 0.85, None))


def test_the_latency_card_shows_the_shipped_export_not_the_fastest_candidate():
    from mltagger.reporting.html import _header

    run = A.Run(Path("."), {}, METRICS | _auto({"mlops": (20, 20)}), predictions=[])
    rows = [
        {"name": "teacher-int8", "p99_ms": 2.3, "shipped": False},
        {"name": "teacher-int8-static", "p99_ms": 2.9, "shipped": True},
    ]
    page = "\n".join(_header(run, 0.85, rows))
    assert "latency p99, shipped export<b>2.9 ms</b>teacher-int8-static" in page
    assert "2.3 ms" not in page
    unshipped = "\n".join(_header(run, 0.85, [{**rows[0]}]))
    assert "was not benchmarked" in unshipped and "2.3 ms" not in unshipped


def test_the_model_card_says_whether_the_promise_holds_on_fresh():
    from mltagger.training.card import _fresh_card

    def report(per_tag):
        return _auto(per_tag) | {
            "num_samples": 40,
            "overall": {"f1_weighted": 0.8},
            "per_class": {},
            "coverage": _auto(per_tag)["coverage"],
        }

    broken = "\n".join(_fresh_card(report({"natural-language-processing": (28, 16)})))
    assert "the lowest is natural-language-processing, right 0.571 of 28 times" in broken
    assert "**broken**" in broken
    kept = "\n".join(_fresh_card(report({"mlops": (30, 30)})))
    assert "kept." in kept and "broken" not in kept
