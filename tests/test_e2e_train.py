"""End to end: fine-tune a tiny BERT with the real loop, then predict with its model folder;
resume after a stop gives the uninterrupted run's metrics; a missing encoder fails fast."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import TAGS, run_module, tiny_train_overrides


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
    assert len(summary["history"]) == 2
    assert {"val/f1_weighted", "test/f1_weighted", "temperature"} <= set(summary["summary"])
    test = json.loads((run / "test" / "metrics.json").read_text())
    assert test["coverage"]["threshold_chosen_on"] == "given"
    # The behavioural suite ran on the saved model and is part of the evaluation report.
    behaviour = json.loads((run / "behavior.json").read_text())
    assert behaviour["approved_output"]["pass_rate"] == 1.0
    assert summary["summary"]["behavior/approved_output"] == 1.0
    assert "## Behavioural tests" in (run / "test" / "report.md").read_text()


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


def test_wandb_offline_run_has_tables_and_artifacts(trained):
    runs = list((trained / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    tables = list(runs[0].rglob("*.table.json"))
    names = {p.name.split("_")[0] for p in tables}
    assert tables and any("per" in p.name for p in tables), names
    assert list(runs[0].glob("*.wandb"))


def test_predict_cli_round_trip(trained, tmp_path):
    model = trained / "run" / "model"
    items = tmp_path / "in.jsonl"
    items.write_text(
        '{"id": 7, "title": "Object detection with YOLO"}\n'
        '{"id": 8, "title": "Forecast sales", "description": "time series"}\n'
    )
    out = tmp_path / "preds.jsonl"
    proc = run_module(
        "mltagger.cli",
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
        assert p["tag"] in TAGS
        assert set(p["scores"]) == set(TAGS[:6])
        assert abs(sum(p["scores"].values()) - 1) < 1e-3
        assert p["needs_review"] == (
            p["confidence"] < json.loads((model / "inference.json").read_text())["threshold"]
        )

    one = run_module(
        "mltagger.cli",
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
    proc = run_module("mltagger.cli", "predict", "--model", str(model), "--input", str(bad))
    assert proc.returncode == 1 and "row 1 (id 1): title: empty" in proc.stderr

    proc = run_module("mltagger.cli", "predict", "--model", str(tmp_path), "--title", "x")
    assert proc.returncode == 2 and "not an mltagger model folder" in proc.stderr


def test_resume_ends_with_the_uninterrupted_metrics(tmp_path, items_file, tiny_model_dir):
    full = run_module(
        "mltagger.train",
        *tiny_train_overrides(
            tmp_path / "full", items_file, tiny_model_dir, "logger=none", "trainer.max_epochs=3"
        ),
    )
    assert full.returncode == 0, full.stderr[-3000:]
    stopped = run_module(
        "mltagger.train",
        *tiny_train_overrides(
            tmp_path / "stopped",
            items_file,
            tiny_model_dir,
            "logger=none",
            "trainer.max_epochs=3",
            "trainer.stop_after_epochs=1",
        ),
    )
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert not (tmp_path / "stopped" / "run" / "model").exists()
    resumed = run_module(
        "mltagger.train",
        *tiny_train_overrides(
            tmp_path / "resumed",
            items_file,
            tiny_model_dir,
            "logger=none",
            "trainer.max_epochs=3",
            f"resume={tmp_path / 'stopped' / 'run'}",
        ),
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    def history(name):
        return json.loads((tmp_path / name / "run" / "metrics.json").read_text())

    a, b = history("full"), history("resumed")
    assert [h["epoch"] for h in b["history"]] == [1, 2, 3]
    for key in ("val/f1_weighted", "test/f1_weighted", "test/accuracy", "best_epoch"):
        assert b["summary"][key] == pytest.approx(a["summary"][key], abs=1e-9), key
    assert [h["train/epoch_loss"] for h in b["history"]] == pytest.approx(
        [h["train/epoch_loss"] for h in a["history"]], abs=1e-6
    )


def test_missing_encoder_fails_fast_with_instructions(tmp_path):
    start = time.perf_counter()
    proc = run_module(
        "mltagger.train",
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
        ("trainer.monitor=val/f1", "trainer.monitor='val/f1' is not a metric"),
        ("trainer.max_epochs=abc", "trainer.max_epochs='abc': expected an integer >= 1"),
        ("resume=/nonexistent/run", "resume=/nonexistent/run"),
    ],
)
def test_bad_settings_are_refused_before_training(tmp_path, override, message):
    proc = run_module(
        "mltagger.train", override, "logger=none", f"hydra.run.dir={tmp_path / 'run'}", timeout=120
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_distil_a_one_layer_student_from_the_trained_model(trained, tmp_path):
    """The distillation path of the loop: soft targets from the tiny teacher, a student that
    keeps one of its two layers, and a normal model folder at the end."""
    from tests.conftest import make_items

    items_file = tmp_path / "items.json"
    items_file.write_text(json.dumps(make_items()))
    teacher = trained / "run" / "model"
    proc = run_module(
        "mltagger.train",
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

    bad = run_module(
        "mltagger.train",
        *tiny_train_overrides(tmp_path / "b", items_file, teacher, "distill.teacher=/nope"),
    )
    assert bad.returncode == 2 and "no such model folder" in bad.stderr
