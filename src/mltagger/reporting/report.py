"""The stakeholder report: `make report` -> one self-contained HTML page per run.

Headline precision and coverage against the 85% target, per-tag and per-slice tables, the
baselines and the previous model side by side, latency from the export benchmark, behavioural
test pass rates, known weak spots, and the run's plots embedded (base64), so the page can be
mailed or attached as it is. A headless Chromium renders it to `report.png` next to it (the
check that the page really renders); without Chromium the HTML is still the report and the
screenshot is skipped with one warning, since a missing browser says nothing about the run. With
W&B online the same content becomes a W&B Report whose URL is printed; offline it says so and
keeps the HTML.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from mltagger.core.errors import UserError, user_errors
from mltagger.core.paths import project_root
from mltagger.evaluation.behavior import run_suite, write_suite
from mltagger.models.predict import Predictor
from mltagger.reporting.analysis import (
    Run,
    headline,
    load_run,
    per_tag_table,
    slice_table,
    weak_spots,
)
from mltagger.reporting.html import build_html, fmt_num, fmt_pct

log = logging.getLogger(__name__)

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
NO_BROWSER = (
    "Chromium not found (Debian: apt-get install chromium): screenshot skipped; "
    "the HTML report is complete"
)

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


class ReportError(UserError):
    """Something the report needs is missing (a browser, a W&B package); a clear message."""


def find_baselines(run: Run, root: Path) -> dict[str, dict]:
    """Test metrics of the newest baselines run on the same data (same data sha256)."""
    sha = run.info.get("data_sha256")
    candidates = sorted((root / "runs" / "baselines").glob("*/run_info.json"), reverse=True)
    for info_path in candidates:
        info = json.loads(info_path.read_text())
        if sha and info.get("data_sha256") != sha:
            continue
        found = {}
        for name in ("rules", "tfidf"):
            m = info_path.parent / name / "test" / "metrics.json"
            if m.is_file():
                found[name] = json.loads(m.read_text())
        if found:
            return found
    return {}


def find_previous(run: Run, root: Path) -> Run | None:
    """The newest other run on the same data that finished before this one."""
    sha = run.info.get("data_sha256")
    runs = []
    for metrics in (root / "runs").glob("*/*/test/metrics.json"):
        folder = metrics.parent.parent
        if folder.resolve() == run.folder.resolve() or "baselines" in folder.parts:
            continue
        info_path = folder / "run_info.json"
        if not info_path.is_file() or not (folder / "model").is_dir():
            continue
        info = json.loads(info_path.read_text())
        if info.get("data_sha256") == sha and info.get("started", "") < run.info.get("started", ""):
            runs.append((info.get("started", ""), folder))
    return load_run(max(runs)[1]) if runs else None


def latency_rows(root: Path) -> list[dict]:
    path = root / "runs" / "bench" / "bench.json"
    if not path.is_file():
        return []
    return json.loads(path.read_text()).get("results", [])


def behaviour(run: Run, compute: bool = True) -> dict | None:
    """Pass rates of the behavioural suite on the run's model (computed once, cached)."""
    cached = run.folder / "behavior.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    if not compute or not (run.folder / "model").is_dir():
        return None

    suite = run_suite(Predictor(run.folder / "model"))
    write_suite(suite, cached)
    return suite


def find_browser() -> str | None:
    """The first Chromium-family browser on PATH, or None."""
    return next((found for b in BROWSERS if (found := shutil.which(b))), None)


def screenshot(html_path: Path, png_path: Path, width: int = 1280, height: int = 6000) -> Path:
    """Render the page in headless Chromium and save a PNG (ReportError without a browser, or
    when the browser cannot render the page)."""
    browser = find_browser()
    if browser is None:
        raise ReportError(NO_BROWSER)
    png_path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [
                browser,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={png_path}",
                html_path.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    if proc.returncode != 0 or not png_path.is_file():
        raise ReportError(f"Chromium could not render {html_path}: {proc.stderr[-800:]}")
    return png_path


def wandb_online() -> bool:
    mode = os.environ.get("WANDB_MODE", "online")
    return mode not in ("offline", "disabled", "dryrun") and bool(
        os.environ.get("WANDB_API_KEY") or Path.home().joinpath(".netrc").is_file()
    )


def publish_wandb_report(run: Run, project: str, entity: str | None) -> str:
    """Save the W&B Report (needs W&B online); returns its URL."""
    report = wandb_report(run, project, entity)
    report.save()
    return str(report.url)


def wandb_report(run: Run, project: str, entity: str | None):
    """The report's content as a W&B Report object (wandb-workspaces Reports API), unsaved."""
    try:
        import wandb_workspaces.reports.v2 as wr
    except ImportError:
        raise ReportError(
            'W&B is online but wandb-workspaces is not installed: pip install "mltagger[report]"'
        ) from None
    head = headline(run)
    tag_rows = "\n".join(
        f"| {r['tag']} | {fmt_pct(r['precision'])} | "
        f"{fmt_pct(r['ci_low'])}–{fmt_pct(r['ci_high'])} | "
        f"{fmt_pct(r['recall'])} | {r['support']} |"
        for r in per_tag_table(run.test)
    )
    slice_rows = "\n".join(
        f"| {r['slice']} | {r['n']} | {fmt_num(r['f1_weighted'])} | "
        f"{fmt_pct(r['auto_precision'])} |"
        for r in slice_table(run.test)
    )
    kwargs = {"entity": entity} if entity else {}
    report = wr.Report(
        project=project,
        title=f"mltagger — {run.name}",
        description="Tagging model report: precision vs the 85% target, per tag and per slice.",
        blocks=[
            wr.H1("Headline"),
            wr.P(
                f"Auto-tag precision {fmt_pct(head['precision'])} at coverage "
                f"{fmt_pct(head['coverage'])} (target > 85%); "
                f"weighted F1 {fmt_num(head['f1_weighted'])}."
            ),
            wr.H2("Per tag"),
            wr.MarkdownBlock(
                "| tag | precision | 95% interval | recall | items |\n|---|---:|---:|---:|---:|\n"
                + tag_rows
            ),
            wr.H2("Per slice"),
            wr.MarkdownBlock(
                "| slice | items | weighted F1 | auto-tag precision |\n|---|---:|---:|---:|\n"
                + slice_rows
            ),
            wr.H2("Known weak spots"),
            wr.UnorderedList(items=weak_spots(run)),
            wr.PanelGrid(
                runsets=[wr.Runset(project=project, **kwargs)],
                panels=[
                    wr.LinePlot(x="epoch", y=["val/f1_weighted"]),
                    wr.BarPlot(metrics=["test/auto_precision", "test/coverage"]),
                ],
            ),
        ],
        **kwargs,
    )
    return report


def make_report(
    run_path: str | Path | None = None,
    *,
    output: str | Path | None = None,
    previous: str | Path | None = None,
    sweep: str | Path | None = None,
    take_screenshot: bool = True,
    behaviour_suite: bool = True,
    target: float = 0.85,
    wandb_project: str = "mltagger",
    wandb_entity: str | None = None,
) -> dict:

    run = load_run(run_path)
    root = project_root()
    out_dir = Path(output) if output else run.folder / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    prev = load_run(previous) if previous else find_previous(run, root)
    sweep_summary = None
    if sweep:
        sweep_dir = Path(sweep)
        summary_path = sweep_dir / "summary.json"
        if not summary_path.is_file():
            raise FileNotFoundError(f"{sweep_dir}: no summary.json (a folder under runs/sweep/)")
        sweep_summary = json.loads(summary_path.read_text())
        hist = sweep_dir / "optimization_history.png"
        if hist.is_file():
            sweep_summary["_history_png"] = str(hist)
    text = build_html(
        run,
        root=root,
        target=target,
        previous=prev,
        baselines=find_baselines(run, root),
        latency=latency_rows(root),
        suite=behaviour(run) if behaviour_suite else None,
        sweep=sweep_summary,
    )
    html_path = out_dir / "report.html"
    html_path.write_text(text, encoding="utf-8")
    result: dict[str, Any] = {"html": str(html_path), "previous": prev.name if prev else None}
    if take_screenshot and find_browser() is None:
        # The page is the report; the PNG only checks that it renders. A machine without a
        # browser (CI images, servers) still gets the report, and hears once what it missed.
        log.warning(NO_BROWSER)
        result["screenshot"] = None
        result["screenshot_skipped"] = NO_BROWSER
    elif take_screenshot:
        result["screenshot"] = str(screenshot(html_path, out_dir / "report.png"))
    if wandb_online():
        result["wandb_url"] = publish_wandb_report(run, wandb_project, wandb_entity)
    else:
        result["wandb_url"] = None
    return result


def main(argv: list[str] | None = None) -> int:

    parser = argparse.ArgumentParser(prog="mltagger report", description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="run folder or model folder (default models/latest)")
    parser.add_argument(
        "--previous",
        help="the run to compare with (default: the newest earlier run on the same data)",
    )
    parser.add_argument("--sweep", help="a sweep folder (runs/sweep/<study>) to include")
    parser.add_argument("--output", help="folder for report.html (default <run>/report)")
    parser.add_argument(
        "--no-screenshot",
        action="store_true",
        help="skip the Chromium check (skipped with a warning when Chromium is not installed)",
    )
    parser.add_argument("--no-behaviour", action="store_true", help="skip the behavioural suite")
    parser.add_argument("--wandb-project", default=os.environ.get("WANDB_PROJECT", "mltagger"))
    parser.add_argument("--wandb-entity", default=os.environ.get("WANDB_ENTITY"))
    args = parser.parse_args(argv)
    # Warnings (a skipped screenshot) as one line on stderr, unless logging is set up already.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    with user_errors():  # ReportError, RunNotFound and the rest: one line, exit 2
        result = make_report(
            args.run,
            output=args.output,
            previous=args.previous,
            sweep=args.sweep,
            take_screenshot=not args.no_screenshot,
            behaviour_suite=not args.no_behaviour,
            wandb_project=args.wandb_project,
            wandb_entity=args.wandb_entity,
        )
    print(f"report: {result['html']}")
    if result.get("screenshot"):
        print(f"screenshot (headless Chromium): {result['screenshot']}")
    if result["wandb_url"]:
        print(f"W&B report: {result['wandb_url']}")
    else:
        print(
            "W&B is offline (WANDB_MODE or no API key): no W&B Report made; the HTML is the report"
        )
    return 0
