"""`mltagger report` on a machine without Chromium: the HTML is the report, so it is written, the
screenshot is skipped with exactly one warning line, and the exit is 0. A hand-made run folder
keeps this fast (no training)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from mltagger.reporting import report
from tests.conftest import run_job

METRICS = {
    "num_samples": 4,
    "overall": {"f1_weighted": 0.5},
    "per_class": {
        t: {"precision": 0.5, "precision_ci95": [0.1, 0.9], "recall": 0.5, "f1": 0.5}
        for t in ("mlops", "other")
    },
    "confusion_matrix": {"labels": ["mlops", "other"], "matrix": [[1, 1], [1, 1]]},
    "coverage": {"at_threshold": {"auto_precision": 0.9, "coverage": 0.5, "num_review": 2}},
}
PREDS = [
    {"gold": "mlops", "predicted": "other", "confidence": 0.9, "needs_review": False, "text": "a"},
    {"gold": "other", "predicted": "other", "confidence": 0.4, "needs_review": True, "text": "b"},
]


@pytest.fixture
def run_folder(tmp_path, monkeypatch) -> Path:
    """A run folder with test metrics and predictions only, under an empty project root."""
    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.setenv("MLTAGGER_ROOT", str(root))  # no runs/ to compare with
    folder = tmp_path / "run"
    (folder / "test").mkdir(parents=True)
    (folder / "test" / "metrics.json").write_text(json.dumps(METRICS))
    (folder / "test" / "predictions.jsonl").write_text("\n".join(map(json.dumps, PREDS)))
    return folder


def test_the_cli_writes_the_html_and_warns_once_without_chromium(run_folder, tmp_path):
    empty = tmp_path / "bin"  # PATH with no browser on it (python is called by its full path)
    empty.mkdir()
    proc = run_job(
        "report",
        "--run",
        str(run_folder),
        "--no-behaviour",
        timeout=120,
        env={"PATH": str(empty), "MLTAGGER_ROOT": str(tmp_path / "root")},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    html = run_folder / "report" / "report.html"
    assert html.is_file() and "auto-tag precision" in html.read_text()
    assert not (run_folder / "report" / "report.png").exists()
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("WARNING: Chromium not found") and "screenshot skipped" in lines[0]
    assert f"report: {html}" in proc.stdout


def test_make_report_logs_one_warning_and_says_why_in_its_result(run_folder, monkeypatch, caplog):
    monkeypatch.setattr(report.shutil, "which", lambda _name: None)
    with caplog.at_level(logging.WARNING):
        out = report.make_report(run_folder, take_screenshot=True, behaviour_suite=False)
    assert Path(out["html"]).is_file()
    assert out["screenshot"] is None and out["screenshot_skipped"] == report.NO_BROWSER
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == [report.NO_BROWSER]
    # Asked for directly, the screenshot still says it cannot be taken.
    with pytest.raises(report.ReportError, match="Chromium not found"):
        report.screenshot(Path(out["html"]), run_folder / "x.png")


def test_with_a_browser_the_screenshot_is_taken_and_nothing_is_skipped(
    run_folder, monkeypatch, caplog
):
    taken = []

    def fake_screenshot(html_path: Path, png_path: Path) -> Path:
        taken.append(html_path)
        png_path.write_bytes(b"png")
        return png_path

    monkeypatch.setattr(report, "find_browser", lambda: "/usr/bin/chromium")
    monkeypatch.setattr(report, "screenshot", fake_screenshot)
    with caplog.at_level(logging.WARNING):
        out = report.make_report(run_folder, take_screenshot=True, behaviour_suite=False)
    assert taken == [Path(out["html"])] and Path(out["screenshot"]).is_file()
    assert "screenshot_skipped" not in out and not caplog.records
    # --no-screenshot: no browser is looked for, no warning either.
    monkeypatch.setattr(report, "find_browser", lambda: None)
    out = report.make_report(run_folder, take_screenshot=False, behaviour_suite=False)
    assert "screenshot" not in out and not caplog.records
