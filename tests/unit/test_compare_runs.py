"""scripts/compare_runs.py: the check that a refactor left training results unchanged."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np

from tests.conftest import REPO


def _script():
    spec = importlib.util.spec_from_file_location("compare_runs", REPO / "scripts/compare_runs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare_runs"] = module
    spec.loader.exec_module(module)
    return module


def _run(path, f1=0.9, seconds=10.0, logits=(1.0, 2.0)):
    (path / "test").mkdir(parents=True)
    history = [{"epoch": 1, "val/f1_weighted": f1, "train/epoch_seconds": seconds}]
    (path / "metrics.json").write_text(json.dumps({"history": history}))
    (path / "test" / "metrics.json").write_text(json.dumps({"f1": f1}))
    np.savez(path / "logits.npz", test_logits=np.array(logits))
    return path


def test_same_results_with_other_timings_compare_equal(tmp_path, capsys):
    script = _script()
    a, b = _run(tmp_path / "a"), _run(tmp_path / "b", seconds=99.0)
    assert script.main([str(a), str(b)]) == 0
    assert "3 of 3 the same" in capsys.readouterr().out


def test_one_changed_figure_or_logit_is_reported(tmp_path, capsys):
    script = _script()
    a = _run(tmp_path / "a")
    assert script.main([str(a), str(_run(tmp_path / "b", f1=0.91))]) == 1
    assert script.main([str(a), str(_run(tmp_path / "c", logits=(1.0, 2.0000001)))]) == 1
    out = capsys.readouterr().out
    assert "test/metrics.json  DIFFERENT" in out and "logits.npz         DIFFERENT" in out


def test_a_folder_that_is_not_a_run_is_one_line_and_exit_2(tmp_path, capsys):
    assert _script().main([str(tmp_path), str(tmp_path)]) == 2
    assert "neither a training run folder" in capsys.readouterr().err


def test_two_evaluation_folders_compare_on_their_reports(tmp_path, capsys):
    """`mltagger evaluate` folders (no root metrics.json): the primary figures of a model folder
    with and without its secondary head must be the same (issue 35)."""
    script = _script()
    for name, f1 in (("a", 0.9), ("b", 0.9), ("c", 0.8)):
        (tmp_path / name / "test").mkdir(parents=True)
        (tmp_path / name / "test" / "metrics.json").write_text(json.dumps({"f1": f1}))
    assert script.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert script.main([str(tmp_path / "a"), str(tmp_path / "c")]) == 1
    assert "1 of 1 the same" in capsys.readouterr().out
