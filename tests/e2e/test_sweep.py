"""The Optuna sweep on the tiny model: trials with pruning, a best-trial experiment that `train`
reproduces, resume, two workers on one SQLite study, and failed trials that do not stop it."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO, make_learnable_items, run_job, tiny_train_overrides


def space(tmp, study: str, params: dict, n_trials: int = 3) -> str:
    """A search-space file in a temp config folder (added to Hydra's search path)."""
    folder = tmp / "conf" / "hparams_search"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{study}.yaml").write_text(
        "# @package _global_\n"
        + yaml.safe_dump(
            {
                "sweep": {
                    "study_name": study,
                    "metric": "val/f1_weighted",
                    "direction": "maximize",
                    "n_trials": n_trials,
                    "timeout": None,
                    "storage": None,
                    "dir": str(tmp / "sweep" / study),
                    "experiment_dir": str(tmp / "conf" / "experiment"),
                    "sampler": {"name": "tpe", "seed": 0, "n_startup_trials": 2},
                    "pruner": {"name": "median", "n_startup_trials": 2, "n_warmup_steps": 0},
                    "params": params,
                }
            }
        )
    )
    return study


PARAMS = {
    "optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    "trainer.max_epochs": {"type": "int", "low": 2, "high": 5},
    "loss.class_weighting": {"type": "categorical", "choices": ["none", "sqrt"]},
}


def sweep_args(tmp, model_dir, study: str, *extra: str) -> list[str]:
    items = tmp / "items.json"
    if not items.exists():
        items.write_text(json.dumps(make_learnable_items()))
    base = [o for o in tiny_train_overrides(tmp, items, model_dir) if not o.startswith("hydra.")]
    return [
        f"hydra.searchpath=[file://{tmp / 'conf'}]",
        f"hydra.run.dir={tmp / 'sweep_run' / study}",
        f"hparams_search={study}",
        "logger=none",
        *base,
        *extra,
    ]


def trials_in(tmp, study: str) -> list[tuple]:
    with sqlite3.connect(tmp / "sweep" / study / "study.db") as db:
        return db.execute("SELECT number, state FROM trials ORDER BY number").fetchall()


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("sweep")
    study = space(tmp, "tiny", PARAMS, n_trials=3)
    proc = run_job("sweep", *sweep_args(tmp, tiny_model_dir, study))
    assert proc.returncode == 0, proc.stderr[-4000:]
    # As the sweep left it: test_rerunning_resumes_the_study adds a trial, in any test order.
    snapshot = json.loads((tmp / "sweep" / "tiny" / "summary.json").read_text())
    (tmp / "summary_after_sweep.json").write_text(json.dumps(snapshot))
    return tmp, proc.stdout


def test_sweep_runs_trials_and_writes_the_best_experiment(swept):
    tmp, stdout = swept
    summary = json.loads((tmp / "summary_after_sweep.json").read_text())
    assert sum(summary["counts"].values()) == 3
    assert summary["counts"].get("complete", 0) >= 1
    assert stdout.count("\ntrial ") + stdout.startswith("trial ") == 3  # one line per trial
    assert "best trial #" in stdout and "make train ARGS=" in stdout
    best = tmp / "conf" / "experiment" / "best_tiny.yaml"
    body = yaml.safe_load(best.read_text())
    assert set(body) >= {"optim", "trainer", "loss"}
    assert (tmp / "sweep" / "tiny" / "optimization_history.png").is_file()


@pytest.mark.slow  # retrains the best trial (~16 s)
def test_best_experiment_reproduces_the_best_trial(swept, tiny_model_dir):
    """The command written into the experiment file reruns the best trial exactly, although the
    sweep's base overrides set a searched key too (trainer.max_epochs)."""
    from mltagger.training.sweep import rerun_base

    tmp, _ = swept
    summary = json.loads((tmp / "sweep" / "tiny" / "summary.json").read_text())
    text = (tmp / "conf" / "experiment" / "best_tiny.yaml").read_text()
    command = next(line for line in text.splitlines() if "make train ARGS=" in line)
    assert "experiment=best_tiny" in command
    for key in ("trainer.max_epochs=", "optim.lr=", "loss.class_weighting="):
        assert key not in command, command  # the experiment file sets them
    base = [o for o in sweep_args(tmp, tiny_model_dir, "tiny") if not o.startswith("hydra.")]
    args = rerun_base(base, summary["best"]["overrides"])
    assert "trainer.max_epochs=2" in base and "trainer.max_epochs=2" not in args
    proc = run_job(
        "train",
        *args,
        "experiment=best_tiny",
        f"hydra.searchpath=[file://{tmp / 'conf'}]",
        f"hydra.run.dir={tmp / 'rerun' / 'run'}",
        "update_latest=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rerun = json.loads((tmp / "rerun" / "run" / "metrics.json").read_text())["summary"]
    assert rerun["val/f1_weighted"] == pytest.approx(summary["best"]["value"], abs=1e-9)


@pytest.mark.slow  # a second sweep process (~8 s)
def test_rerunning_resumes_the_study(swept, tiny_model_dir):
    tmp, _ = swept
    proc = run_job("sweep", *sweep_args(tmp, tiny_model_dir, "tiny", "sweep.n_trials=1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [n for n, _ in trials_in(tmp, "tiny")] == [0, 1, 2, 3]


@pytest.mark.slow  # two concurrent sweep processes (~30 s); the resume test covers the storage
def test_two_workers_share_one_study(tmp_path, tiny_model_dir):
    study = space(tmp_path, "shared", PARAMS, n_trials=2)
    args = sweep_args(tmp_path, tiny_model_dir, study)
    env_cmd = [sys.executable, "-m", "mltagger", "sweep"]
    import os

    env = {**os.environ, "MLTAGGER_ROOT": str(REPO)}
    workers = [
        subprocess.Popen(
            [*env_cmd, *args, f"hydra.run.dir={tmp_path / f'w{k}'}"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(2)
    ]
    outs = [w.communicate(timeout=600) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-2000:] for o in outs]
    trials = trials_in(tmp_path, study)
    # 2 workers x 2 trials: none lost, none run twice, all finished.
    assert [n for n, _ in trials] == [0, 1, 2, 3]
    assert {s for _, s in trials} <= {"COMPLETE", "PRUNED"}
    dirs = sorted(p.name for p in (tmp_path / "sweep" / study / "trials").iterdir())
    assert dirs == [f"trial_{n:04d}" for n in range(4)]


@pytest.mark.slow  # a sweep of its own (~9 s)
def test_failed_trials_are_recorded_and_the_sweep_goes_on(tmp_path, tiny_model_dir):
    study = space(
        tmp_path,
        "broken",
        {"model.dropout": {"type": "categorical", "choices": [-1.0]}},
        n_trials=2,
    )
    proc = run_job("sweep", *sweep_args(tmp_path, tiny_model_dir, study))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "sweep" / "broken" / "summary.json").read_text())
    assert summary["counts"] == {"fail": 2}
    assert all("model.dropout=-1.0" in t["error"] for t in summary["trials"])
    assert "best" not in summary


def test_unknown_metric_is_refused(tmp_path, tiny_model_dir):
    study = space(tmp_path, "bad", PARAMS, n_trials=1)
    proc = run_job("sweep", *sweep_args(tmp_path, tiny_model_dir, study, "sweep.metric=val/nope"))
    assert proc.returncode == 2 and "sweep.metric='val/nope': expected a val metric" in proc.stderr


def test_the_best_trial_is_the_maximum_of_the_completed_ones(swept):
    """sweep.direction=maximize reaches Optuna: the best value is the largest, not the least."""
    import optuna

    tmp, _ = swept
    summary = json.loads((tmp / "sweep" / "tiny" / "summary.json").read_text())
    study = optuna.load_study(
        study_name="tiny", storage=f"sqlite:///{tmp / 'sweep' / 'tiny' / 'study.db'}"
    )
    values = [t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(set(values)) > 1, values  # trials that differ, so min and max are not the same
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert summary["best"]["value"] == max(values)


@pytest.mark.slow  # k trainings a trial; the CV machinery itself is in tests/e2e/test_cv.py
def test_sweep_can_optimise_the_cv_mean(tmp_path, tiny_model_dir):
    """sweep.objective=cv: each trial is a k-fold CV; its value is the mean over held-out folds."""
    study = space(
        tmp_path,
        "bycv",
        {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
        n_trials=2,
    )
    proc = run_job(
        "sweep",
        *sweep_args(
            tmp_path,
            tiny_model_dir,
            study,
            "+sweep.objective=cv",
            "+sweep.cv_folds=2",
            "trainer.max_epochs=1",
        ),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "sweep" / "bycv" / "summary.json").read_text())
    assert summary["counts"] == {"complete": 2}
    for t in summary["trials"]:
        cv = json.loads(
            (
                tmp_path / "sweep" / "bycv" / "trials" / f"trial_{t['number']:04d}" / "summary.json"
            ).read_text()
        )
        # The trial's value is the CV mean of the metric, not a single val figure.
        assert t["value"] == pytest.approx(cv["global_rule"]["f1_weighted"]["mean"])
        assert cv["folds"] == 2
