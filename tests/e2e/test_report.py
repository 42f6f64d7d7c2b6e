"""`make report` on the tiny run: one self-contained HTML page with the headline, tables and
embedded plots, rendered by headless Chromium when it is installed (.ci/run installs it)."""

from __future__ import annotations

import shutil

import pytest

from mltagger.reporting.report import ReportError, make_report, screenshot, wandb_report


def test_report_is_self_contained_and_says_w_and_b_is_offline(trained, tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("WANDB_MODE", "offline")
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "summary.json").write_text(
        json.dumps(
            {
                "study": "tiny",
                "counts": {"complete": 2},
                "best": {"number": 1, "value": 0.5, "overrides": ["optim.lr=0.0001"]},
            }
        )
    )
    out = make_report(
        trained / "run",
        output=tmp_path,
        take_screenshot=False,
        previous=trained / "run",
        sweep=sweep,
    )
    html = (tmp_path / "report.html").read_text()
    assert "previous model (" in html and "optim.lr=0.0001" in html
    with pytest.raises(FileNotFoundError, match=r"no summary\.json"):
        make_report(trained / "run", output=tmp_path, take_screenshot=False, sweep=tmp_path)
    assert out["wandb_url"] is None
    for needle in (
        "auto-tag precision",
        "target &gt; 85%",
        "Per tag (test)",
        "Per tag (fresh)",
        "Test (2020 content) and the fresh 2023–2026 set",
        "Per slice (test)",
        "Behavioural tests",
        "Known weak spots",
        "data:image/png;base64,",
    ):
        assert needle in html, needle
    # Nothing is fetched from elsewhere: no external scripts, styles or images.
    assert 'src="http' not in html and "<script" not in html and "<link" not in html
    assert (trained / "run" / "behavior.json").is_file()  # the suite result is kept with the run


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)",
)
def test_report_renders_in_headless_chromium(trained, tmp_path):
    from PIL import Image

    out = make_report(trained / "run", output=tmp_path, take_screenshot=True)
    with Image.open(out["screenshot"]) as img:
        assert img.size[0] == 1280
        # A rendered page is not one flat colour.
        assert len(img.convert("L").resize((64, 64)).getcolors(4096) or []) > 4


def test_missing_browser_skips_only_the_screenshot(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    out = make_report(trained / "run", output=tmp_path, take_screenshot=True)
    assert (tmp_path / "report.html").is_file() and not (tmp_path / "report.png").exists()
    assert out["screenshot"] is None and "Chromium not found" in out["screenshot_skipped"]
    with pytest.raises(ReportError, match="Chromium not found"):  # asked for directly
        screenshot(tmp_path / "report.html", tmp_path / "report.png")


def test_the_w_and_b_report_object_holds_the_same_sections(trained):
    from mltagger.reporting.analysis import load_run

    report = wandb_report(load_run(trained / "run"), project="mltagger", entity="team")
    titles = [getattr(b, "text", None) for b in report.blocks]
    assert {"Headline", "Per tag", "Per slice", "Known weak spots"} <= set(titles)
