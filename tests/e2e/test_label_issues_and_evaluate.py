"""End to end with out-of-scope items: find suspect weak labels, train seven classes with the
suspects down-weighted, and read the out-of-scope figures from the reports and the CLI."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TAGS, make_items, make_other_items, run_job


def overrides(tmp, model_dir, run: str, *extra: str) -> list[str]:
    return [
        f"hydra.run.dir={tmp / run}",
        "data=with_other",
        f"data.sources=[{{name: projects, path: '{tmp / 'projects.json'}', sha256: null}},"
        f"{{name: other, path: '{tmp / 'other.json'}', sha256: null}}]",
        "data.min_freq=2",
        "data.split.val_size=0.2",
        "data.split.test_size=0.2",
        "data.reviewed_labels=null",
        f"data.label_noise.layer={tmp / 'layer.json'}",
        "data.label_noise.folds=3",
        f"model.name_or_path={model_dir}",
        "model.name=tiny",
        "model.batch_size=8",
        "model.lr=1e-3",
        f"paths.models_dir={tmp / 'models'}",
        "trainer.max_epochs=2",
        "logger=none",
        *extra,
    ]


@pytest.fixture(scope="module")
def seven(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("seven")
    (tmp / "projects.json").write_text(json.dumps(make_items()))
    (tmp / "other.json").write_text(json.dumps(make_other_items()))
    found = run_job("label-issues", *overrides(tmp, tiny_model_dir, "li"))
    assert found.returncode == 0, found.stderr[-3000:]
    trained = run_job(
        "train",
        *overrides(tmp, tiny_model_dir, "run", "data.label_noise.action=downweight"),
    )
    assert trained.returncode == 0, trained.stderr[-4000:]
    return tmp, found.stdout


def test_label_issue_layer_is_written_for_the_train_split(seven):
    tmp, stdout = seven
    layer = json.loads((tmp / "layer.json").read_text())
    assert layer["method"]["name"] == "cleanlab.filter.find_label_issues"
    assert layer["method"]["folds"] == 3 and layer["method"]["probs"].startswith("tfidf_logreg")
    train_ids = set(json.loads((tmp / "run" / "split.json").read_text())["ids"]["train"])
    assert {r["id"] for r in layer["issues"]} <= train_ids
    assert "suspect labels among" in stdout
    assert (tmp / "li" / "review_candidates.jsonl").is_file()


def test_seven_class_model_reports_out_of_scope(seven):
    tmp, _ = seven
    run = tmp / "run"
    assert json.loads((run / "model" / "labels.json").read_text())["labels"] == TAGS
    manifest = json.loads((run / "split.json").read_text())
    assert manifest["label_noise"]["action"] == "downweight"
    test = json.loads((run / "test" / "metrics.json").read_text())
    oos = test["scope"]["out_of_scope"]
    assert oos["num_samples"] >= 1
    assert oos["as_other"] + oos["to_review"] + oos["auto_topic"] == pytest.approx(1.0)
    assert "out_of_scope" in test["slices"]
    assert "test/oos_auto_topic_rate" in json.loads((run / "metrics.json").read_text())["summary"]
    report = (run / "test" / "report.md").read_text()
    assert "Topic items and out-of-scope items" in report
    assert (run / "test" / "out_of_scope_tradeoff.png").stat().st_size > 1000
    assert len(test["scope"]["curve"]) == 41
    preds = [json.loads(x) for x in (run / "test" / "predictions.jsonl").read_text().splitlines()]
    for p in preds:
        assert p["reason"] == ("low_confidence" if p["needs_review"] else "classifier")


def test_evaluate_cli_on_a_model_folder(seven, tiny_model_dir):
    tmp, _ = seven
    out = tmp / "eval"
    proc = run_job(
        "evaluate",
        "--model",
        str(tmp / "run" / "model"),
        "--output",
        str(out),
        *overrides(tmp, tiny_model_dir, "unused", "data.label_noise.action=downweight")[1:],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "out-of-scope" in proc.stdout and "from the model folder" in proc.stdout
    test = json.loads((out / "test" / "metrics.json").read_text())
    model_threshold = json.loads((tmp / "run" / "model" / "inference.json").read_text())
    assert test["coverage"]["threshold"] == pytest.approx(model_threshold["threshold"])
    bad = run_job("evaluate", "--model", str(tmp / "run" / "model"), "nope=1")
    assert bad.returncode == 2 and "bad config override" in bad.stderr
