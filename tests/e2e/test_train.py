"""End to end: fine-tune a tiny BERT with the real loop, then predict with its model folder;
resume after a stop gives the uninterrupted run's metrics; a missing encoder fails fast."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from tests.conftest import (
    PROBES,
    TAGS,
    gold_soft_labels,
    run_job,
    split_by_confidence,
    tiny_train_overrides,
)


def test_run_folder_has_everything(trained):
    run = trained / "run"
    for name in (
        "config.yaml",
        "split.json",
        "run_info.json",
        "metrics.json",
        "training_curves.png",
        "test/metrics.json",
        "test/report.md",
        "val/precision_coverage.png",
    ):
        assert (run / name).is_file(), name
    summary = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in summary["history"]] == list(range(1, 21))
    assert {"val/f1_weighted", "test/f1_weighted", "temperature"} <= set(summary["summary"])
    test = json.loads((run / "test" / "metrics.json").read_text())
    assert test["coverage"]["threshold_chosen_on"] == "given"
    # The behavioural suite ran on the saved model and is part of the evaluation report.
    behaviour = json.loads((run / "behavior.json").read_text())
    assert behaviour["approved_output"]["pass_rate"] == 1.0
    assert summary["summary"]["behavior/approved_output"] == 1.0
    assert "## Behavioural tests" in (run / "test" / "report.md").read_text()


def test_fresh_set_is_reported_beside_test(trained):
    """The tiny fresh set: its own report folder, fresh/ figures in the run's metrics, the
    model card, and the table make train ends with."""
    run = trained / "run"
    fresh = json.loads((run / "fresh" / "metrics.json").read_text())
    assert fresh["num_samples"] == 14 and fresh["fresh"]["rows"] == 14
    # Applied with the shipped rule, not chosen on the fresh items themselves.
    assert fresh["coverage"]["threshold_chosen_on"] == "given"
    summary = json.loads((run / "metrics.json").read_text())["summary"]
    for key in ("fresh/topic_auto_precision", "fresh/topic_coverage", "fresh/oos_auto_topic_rate"):
        assert key in summary, key
    # No out-of-fold predictions of this recipe: one val threshold, said so.
    decision = json.loads((run / "decision.json").read_text())
    assert decision["rule_used"] == "global" and decision["why"].startswith("auto:")
    card = (run / "model" / "card.md").read_text()
    assert "## Fresh figures" in card
    # The split manifest names the fresh items, so a run says which fresh set it saw.
    split = json.loads((run / "split.json").read_text())
    assert len(split["fresh"]["ids"]) == 14


def test_model_folder_and_latest(trained):
    model = trained / "run" / "model"
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer_config.json",
        "labels.json",
        "inference.json",
        "card.md",
    ):
        assert (model / name).is_file(), name
    labels = json.loads((model / "labels.json").read_text())["labels"]
    assert labels == TAGS[:6]
    inference = json.loads((model / "inference.json").read_text())
    assert inference["temperature"] > 0 and inference["max_length"] == 128
    assert "## Test figures" in (model / "card.md").read_text()
    latest = trained / "models" / "latest"
    assert latest.resolve() == model.resolve()


def test_the_tiny_model_learns_auto_tags_and_sends_the_rest_to_review(trained):
    run = trained / "run"
    summary = json.loads((run / "metrics.json").read_text())["summary"]
    assert summary["val/accuracy"] >= 0.75, summary  # it learned (chance is 1/6)
    inference = json.loads((run / "model" / "inference.json").read_text())
    # A real operating point, not the fallbacks (1.01: target unreachable; T clamped at 20).
    assert 0.2 < inference["threshold"] < 1.0
    assert 0.05 < inference["temperature"] < 20.0
    rows = [
        json.loads(line) for line in (run / "test" / "predictions.jsonl").read_text().splitlines()
    ]
    auto = [r for r in rows if not r["needs_review"]]
    review = [r for r in rows if r["needs_review"]]
    assert auto, "nothing auto-tagged on test"
    assert all(r["tag"] == r["predicted"] and r["reason"] == "classifier" for r in auto)
    assert all(r["confidence"] >= inference["threshold"] for r in auto)
    assert all(r["tag"] == "other" and r["reason"] == "low_confidence" for r in review)
    assert all(r["confidence"] < inference["threshold"] for r in review)
    assert np.mean([r["tag"] == r["gold"] for r in auto]) >= 0.6
    sure, _unsure = split_by_confidence(run / "model")
    # The clear probes (first six, one per topic) are auto-tagged with their topic.
    clear = {t for t, _ in PROBES[:6]}
    assert len([r for r in sure if r["title"] in clear]) >= 4
    tags = {r["pred"]["tag"] for r in sure if r["title"] in clear}
    assert len(tags) >= 4, tags


def test_test_split_gets_the_threshold_chosen_on_val(trained):
    run = trained / "run"
    val = json.loads((run / "val" / "metrics.json").read_text())["coverage"]
    test = json.loads((run / "test" / "metrics.json").read_text())["coverage"]
    inference = json.loads((run / "model" / "inference.json").read_text())
    assert val["threshold_chosen_on"] == "this_data" and test["threshold_chosen_on"] == "given"
    assert test["threshold"] == val["threshold"] == inference["threshold"]
    assert val["threshold"] == val["threshold_for_target"]


def test_predictor_reproduces_the_runs_calibrated_scores(trained):
    """The model folder's predictor divides by the same temperature training fitted: its scores
    on the test items equal the ones in the run's predictions (T != 1, so 1/T would differ)."""
    from mltagger.models.predict import Predictor

    run = trained / "run"
    rows = [
        json.loads(line) for line in (run / "test" / "predictions.jsonl").read_text().splitlines()
    ]
    predictor = Predictor(run / "model")
    assert abs(predictor.inference.temperature - 1.0) > 0.05
    probs = predictor.predict_proba([r["text"] for r in rows])
    expected = np.array([[r["scores"][t] for t in predictor.labels] for r in rows])
    np.testing.assert_allclose(probs, expected, atol=2e-5)


def test_wandb_offline_run_has_tables_and_artifacts(trained):
    runs = list((trained / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    tables = list(runs[0].rglob("*.table.json"))
    names = {p.name.split("_")[0] for p in tables}
    assert tables and any("per" in p.name for p in tables), names
    assert list(runs[0].glob("*.wandb"))


def test_predict_cli_round_trip(trained, tmp_path):
    model = trained / "run" / "model"
    sure, unsure = split_by_confidence(model)
    probes = [sure[0], unsure[0]]
    items = tmp_path / "in.jsonl"
    items.write_text(
        "".join(
            json.dumps({"id": 7 + k, "title": p["title"], "description": p["description"]}) + "\n"
            for k, p in enumerate(probes)
        )
    )
    out = tmp_path / "preds.jsonl"
    proc = run_job(
        "predict",
        "--model",
        str(model),
        "--input",
        str(items),
        "--output",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    preds = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["id"] for p in preds] == [7, 8]
    for p in preds:
        assert set(p["scores"]) == set(TAGS[:6])
        assert abs(sum(p["scores"].values()) - 1) < 1e-3
    auto, review = preds
    assert auto["tag"] == sure[0]["pred"]["tag"] != "other" and auto["needs_review"] is False
    assert auto["reason"] == "classifier"
    assert auto["confidence"] == pytest.approx(sure[0]["pred"]["confidence"], abs=1e-5)
    assert (review["tag"], review["needs_review"], review["reason"]) == (
        "other",
        True,
        "low_confidence",
    )

    one = run_job(
        "predict",
        "--model",
        str(model),
        "--title",
        "GNN",
        "--description",
        "graph neural network",
    )
    assert one.returncode == 0 and json.loads(one.stdout)["tag"] in TAGS

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "title": ""}\n')
    proc = run_job("predict", "--model", str(model), "--input", str(bad))
    assert proc.returncode == 1 and "row 1 (id 1): title: empty" in proc.stderr

    proc = run_job("predict", "--model", str(tmp_path), "--title", "x")
    assert proc.returncode == 2 and "not an mltagger model folder" in proc.stderr


@pytest.mark.slow  # a stopped and a resumed training (~40 s)
def test_resume_ends_with_the_uninterrupted_metrics(tmp_path, items_file, tiny_model_dir):
    # With shipped teacher soft labels (distill.soft_labels): they are used, and a resumed run
    # still ends exactly where the uninterrupted one does.
    soft = tmp_path / "soft_labels.json"
    soft.write_text(
        json.dumps(gold_soft_labels(tiny_train_overrides(tmp_path, items_file, tiny_model_dir)))
    )
    full = run_job(
        "train",
        *tiny_train_overrides(
            tmp_path / "full",
            items_file,
            tiny_model_dir,
            "logger=none",
            "trainer.max_epochs=3",
            f"distill.soft_labels={soft}",
        ),
    )
    assert full.returncode == 0, full.stderr[-3000:]
    stopped = run_job(
        "train",
        *tiny_train_overrides(
            tmp_path / "stopped",
            items_file,
            tiny_model_dir,
            "logger=none",
            "trainer.max_epochs=3",
            "trainer.stop_after_epochs=1",
            f"distill.soft_labels={soft}",
        ),
    )
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert not (tmp_path / "stopped" / "run" / "model").exists()
    resumed = run_job(
        "train",
        *tiny_train_overrides(
            tmp_path / "resumed",
            items_file,
            tiny_model_dir,
            "logger=none",
            "trainer.max_epochs=3",
            f"resume={tmp_path / 'stopped' / 'run'}",
            f"distill.soft_labels={soft}",
        ),
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    def history(name):
        return json.loads((tmp_path / name / "run" / "metrics.json").read_text())

    used = json.loads((tmp_path / "full" / "run" / "soft_labels.json").read_text())
    assert used["used"] is True and used["teacher"]["name"] == "gold-agreeing test"
    train_ids = json.loads((tmp_path / "full" / "run" / "split.json").read_text())["ids"]["train"]
    assert used["rows"] == len(train_ids)
    a, b = history("full"), history("resumed")
    assert [h["epoch"] for h in b["history"]] == [1, 2, 3]
    for key in ("val/f1_weighted", "test/f1_weighted", "test/accuracy", "best_epoch"):
        assert b["summary"][key] == pytest.approx(a["summary"][key], abs=1e-9), key
    assert [h["train/epoch_loss"] for h in b["history"]] == pytest.approx(
        [h["train/epoch_loss"] for h in a["history"]], abs=1e-6
    )


def test_missing_encoder_fails_fast_with_instructions(tmp_path):
    start = time.perf_counter()
    proc = run_job(
        "train",
        "model=scibert",
        "logger=none",
        f"hydra.run.dir={tmp_path / 'run'}",
        timeout=120,
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 2
    assert "model.name_or_path=/path/to/folder" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.perf_counter() - start < 60


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.monitor=val/f1", "trainer.monitor='val/f1': expected a val metric"),
        ("trainer.max_epochs=abc", "trainer.max_epochs='abc': expected an integer >= 1"),
        ("resume=/nonexistent/run", "resume=/nonexistent/run"),
        # With the default shipped soft labels, the distillation settings are checked too.
        ("distill.alpha=2", "distill.alpha=2: expected a number in [0, 1]"),
    ],
)
def test_bad_settings_are_refused_before_training(tmp_path, override, message):
    proc = run_job(
        "train", override, "logger=none", f"hydra.run.dir={tmp_path / 'run'}", timeout=120
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow  # a second training (~20 s); the distillation loss is unit-tested
def test_distil_a_one_layer_student_from_the_trained_model(trained, tmp_path):
    """The distillation path of the loop: soft targets from the tiny teacher, a student that
    keeps one of its two layers, and a normal model folder at the end."""
    from tests.conftest import make_items

    items_file = tmp_path / "items.json"
    items_file.write_text(json.dumps(make_items()))
    teacher = trained / "run" / "model"
    proc = run_job(
        "train",
        *tiny_train_overrides(
            tmp_path,
            items_file,
            teacher,
            "logger=none",
            f"distill.teacher={teacher}",
            "distill.keep_layers=[1]",
            "update_latest=false",
        ),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    student = tmp_path / "run" / "model"
    config = json.loads((student / "config.json").read_text())
    assert config["num_hidden_layers"] == 1
    assert json.loads((student / "labels.json").read_text())["labels"] == TAGS[:6]
    log = proc.stdout + proc.stderr
    assert "logits for" in log and "student keeps teacher layers [1] of 2" in log

    bad = run_job(
        "train",
        *tiny_train_overrides(tmp_path / "b", items_file, teacher, "distill.teacher=/nope"),
    )
    assert bad.returncode == 2 and "no such model folder" in bad.stderr


def test_soft_labels_of_other_data_stop_the_run_in_one_line(tmp_path, items_file, tiny_model_dir):
    """Never a quiet fallback to gold labels: the teacher's labels were made for other data."""
    blob = gold_soft_labels(tiny_train_overrides(tmp_path, items_file, tiny_model_dir))
    soft = tmp_path / "soft_labels.json"
    soft.write_text(json.dumps(blob | {"data_sha256": "0" * 64}))
    proc = run_job(
        "train",
        *tiny_train_overrides(
            tmp_path, items_file, tiny_model_dir, "logger=none", f"distill.soft_labels={soft}"
        ),
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = [x for x in proc.stderr.strip().splitlines() if x.startswith("error:")]
    assert "does not fit this run: computed for data 000000000000" in line
    assert "make teacher" in line and "distill.soft_labels=null" in line
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "model").exists()


NEGATIVES = [
    ("fastjson-rs", "A fast JSON parser for Rust web services"),
    ("tailwind-kit", "Tailwind CSS components for React dashboards"),
    ("exif-rename", "Rename holiday photos by their EXIF capture date"),
    ("airdrop-claim", "Claim free crypto tokens in the weekly airdrop"),
    ("pg-migrate", "Schema migrations for PostgreSQL from YAML files"),
    ("taskbar-weather", "A weather widget for the Windows taskbar"),
    ("invoice-pdf", "Generate PDF invoices from spreadsheet rows"),
    ("discord-dice", "A dice-rolling bot for Discord servers"),
]


def test_a_run_ships_its_out_of_scope_gate(tmp_path, items_file, tiny_model_dir):
    """With data.gate_negatives, the run fits the gate (train split + negatives), saves
    gate.json beside the model and records its AUROC; the service-side scorer reads it."""
    from mltagger.models.gate import TextGate

    rows = [
        {"id": 990001 + k, "title": name, "description": text, "tag": "other",
         "created_on": None, "source": "npm", "stratum": "not-ml-npm", "rule": "test",
         "reference": f"npm:{name}@1.0.0", "text_origin": "author-summary"}
        for k, (name, text) in enumerate(NEGATIVES)
    ]  # fmt: skip
    negatives = tmp_path / "negatives.json"
    negatives.write_text(json.dumps(rows))
    proc = run_job(
        "train",
        *tiny_train_overrides(
            tmp_path, items_file, tiny_model_dir, "logger=none", "trainer.max_epochs=1",
            f"+data.gate_negatives={{path: '{negatives}', sha256: null}}",
        ),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = tmp_path / "run" / "model"
    gate = TextGate.load(model)
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())["summary"]
    assert summary["gate/negatives"] == len(rows)
    # topic texts score above the negatives' kind of text
    topic, off = gate.in_scope(["graph neural network for molecules", "a JSON parser for Rust"])
    assert topic > off


def test_negatives_that_copy_a_training_item_stop_the_run_before_the_epochs(
    tmp_path, items_file, tiny_model_dir
):
    train_item = json.loads(items_file.read_text())[0]
    copy = {
        "id": 990001, "title": train_item["title"], "description": train_item["description"],
        "tag": "other", "created_on": None, "source": "npm", "stratum": "not-ml-npm",
        "rule": "test", "reference": "npm:copy@1.0.0", "text_origin": "author-summary",
    }  # fmt: skip
    negatives = tmp_path / "negatives.json"
    negatives.write_text(json.dumps([copy]))
    proc = run_job(
        "train",
        *tiny_train_overrides(
            tmp_path, items_file, tiny_model_dir, "logger=none",
            f"+data.gate_negatives={{path: '{negatives}', sha256: null}}",
        ),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = [x for x in proc.stderr.strip().splitlines() if x.startswith("error:")]
    assert "1 of 1 rows are invalid" in line and f"training item {train_item['id']}" in line
    assert "validate --negatives" in line and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()  # no epoch was run
