"""The stakeholder report: `make report` -> one self-contained HTML page per run.

Headline precision and coverage against the 85% target, per-tag and per-slice tables, the
baselines and the previous model side by side, latency from the export benchmark, behavioural
test pass rates, known weak spots, and the run's plots embedded (base64), so the page can be
mailed or attached as it is. A headless Chromium renders it to `report.png` next to it (the
check that the page really renders). With W&B online the same content becomes a W&B Report
whose URL is printed; offline it says so and keeps the HTML.
"""

from __future__ import annotations

import base64
import html
import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mltagger.analysis import (
    Run,
    headline,
    load_run,
    per_tag_table,
    slice_table,
    top_confusions,
    weak_spots,
    worst_mistakes,
)

PLOTS = (
    ("precision_coverage", "Precision and coverage as the review threshold moves"),
    ("out_of_scope_tradeoff", "Out-of-scope items: what the threshold does to them"),
    ("confusion_matrix", "Confusion matrix (test)"),
    ("reliability", "Calibration: confidence vs accuracy"),
    ("training_curves", "Training curves"),
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


class ReportError(RuntimeError):
    """Something the report needs is missing (a browser, a W&B package); a clear message."""


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def _num(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _table(
    headers: list[str], rows: list[list[Any]], numeric_from: int = 1, text_cols: tuple = ()
) -> str:
    def cls(i: int) -> str:
        return "num" if i >= numeric_from and i not in text_cols else ""

    head = "".join(f'<th class="{cls(i)}">{html.escape(h)}</th>' for i, h in enumerate(headers))
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{cls(i)}">{html.escape(str(c))}</td>' for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _model_version(run: Run) -> str:
    path = run.folder / "model" / "inference.json"
    return json.loads(path.read_text()).get("model_version", "") if path.is_file() else ""


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
    from mltagger.behavior import run_suite, write_suite
    from mltagger.predict import Predictor

    suite = run_suite(Predictor(run.folder / "model"))
    write_suite(suite, cached)
    return suite


def _side_by_side(test: dict, fresh: dict) -> list[list[Any]]:
    """The headline figures of test and fresh, row by row."""

    def figs(m: dict) -> dict:
        at = m.get("coverage", {}).get("at_threshold") or {}
        scope = m.get("scope") or {}
        t, o = scope.get("topics", {}), scope.get("out_of_scope", {})
        return {
            "items": m.get("num_samples"),
            "topic weighted F1": _num(t.get("f1_weighted")),
            "topic auto-tag precision": _pct(t.get("auto_precision")),
            "topic coverage": _pct(t.get("coverage")),
            "topic items auto-tagged other": _pct(t.get("lost_to_other")),
            "out-of-scope auto-tagged with a topic": _pct(o.get("auto_topic")),
            "auto-tag precision, all items": _pct(at.get("auto_precision")),
            "coverage, all items": _pct(at.get("coverage")),
        }

    a, b = figs(test), figs(fresh)
    return [[k, a[k], b[k]] for k in a]


def _comparison_rows(run: Run, baselines: dict, previous: Run | None) -> list[list[Any]]:
    def row(name: str, m: dict) -> list[Any]:
        at = m.get("coverage", {}).get("at_threshold", {})
        oos = (m.get("scope") or {}).get("out_of_scope", {}).get("auto_topic")
        return [
            name,
            _num(m.get("overall", {}).get("f1_weighted")),
            _pct(at.get("auto_precision")),
            _pct(at.get("coverage")),
            _pct(oos),
        ]

    rows = [row(f"this model ({run.name})", run.test)]
    if previous is not None:
        rows.append(row(f"previous model ({previous.name})", previous.test))
    for name, m in baselines.items():
        rows.append(row(f"baseline: {name}", m))
    return rows


def build_html(
    run: Run,
    *,
    root: Path,
    target: float = 0.85,
    previous: Run | None = None,
    baselines: dict | None = None,
    latency: list[dict] | None = None,
    suite: dict | None = None,
    sweep: dict | None = None,
) -> str:
    head = headline(run, target)
    met = head["meets_target"]
    verdict = (
        f"Auto-applied tags are right {_pct(head['precision'])} of the time "
        f"({'above' if met else 'below'} the {target:.0%} target), for "
        f"{_pct(head['coverage'])} of items; the rest ({head['num_review']} of "
        f"{head['num_samples']} test items) go to a person."
    )
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>mltagger report — {html.escape(run.name)}</title>",
        "<style>body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;"
        "color:#222;padding:0 1em}h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid"
        " #ddd}table{border-collapse:collapse;margin:.6em 0;font-size:14px}td,th{padding:3px 9px;"
        "border-bottom:1px solid #eee;text-align:left}.num{text-align:right}.cards{display:flex;"
        "gap:1em;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:8px;padding:.7em 1.1em;"
        "min-width:150px}.card b{display:block;font-size:1.7em}.ok{color:#17803d}.bad{color:"
        "#b42318}figure{display:inline-block;margin:.5em;max-width:520px}img{max-width:100%}"
        "figcaption{font-size:13px;color:#555}.meta{color:#666;font-size:13px}</style></head><body>",
        "<h1>Tagging model report</h1>",
        f'<p class="meta">run {html.escape(run.name)} · model {html.escape(_model_version(run))}'
        f" · git {html.escape(str(run.info.get('git', {}).get('commit', ''))[:10])} · data sha256 "
        f"{html.escape(str(run.info.get('data_sha256', ''))[:12])} · made "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC</p>",
        '<div class="cards">',
        f'<div class="card">auto-tag precision<b class="{"ok" if met else "bad"}">'
        f"{_pct(head['precision'])}</b>target &gt; {target:.0%}</div>",
        f'<div class="card">coverage<b>{_pct(head["coverage"])}</b>tagged without a person</div>',
        f'<div class="card">weighted F1<b>{_num(head["f1_weighted"])}</b>all test items</div>',
        f'<div class="card">out-of-scope given a topic<b>{_pct(head["oos_auto_topic"])}</b>'
        "should be near 0</div>",
    ]
    shipped = next((r for r in (latency or []) if r.get("backend") == "onnx"), None)
    if latency:
        fastest = min(latency, key=lambda r: r["p99_ms"])
        parts.append(
            f'<div class="card">latency p99<b>{fastest["p99_ms"]:.1f} ms</b>'
            f"{html.escape(fastest['name'])}, budget 100 ms</div>"
        )
    parts += ["</div>", f"<p>{html.escape(verdict)}</p>"]
    fresh_path = run.folder / "fresh" / "metrics.json"
    fresh = json.loads(fresh_path.read_text()) if fresh_path.is_file() else None
    if fresh is not None:
        parts.append("<h2>Test (2020 content) and the fresh 2023–2026 set</h2>")
        parts.append(_table(["figure", "test", "fresh"], _side_by_side(run.test, fresh)))
    else:
        parts.append("<p>No fresh-set figures in this run (data.fresh was off).</p>")

    ops = run.test.get("coverage", {}).get("operating_points") or []
    if ops:
        parts.append("<h2>Operating points (threshold chosen on validation)</h2>")
        parts.append(
            _table(
                ["precision target", "threshold", "test precision", "test coverage"],
                [
                    [
                        f"{o['precision_target']:.0%}",
                        _num(o.get("threshold")),
                        _pct(o.get("test_precision")),
                        _pct(o.get("test_coverage")),
                    ]
                    if o.get("threshold") is not None
                    else [f"{o['precision_target']:.0%}", "not reachable on val", "—", "—"]
                    for o in ops
                ],
            )
        )
    for split, metrics in (("test", run.test), ("fresh", fresh)):
        if metrics is None:
            continue
        parts.append(f"<h2>Per tag ({split})</h2>")
        parts.append(
            _table(
                [
                    "tag",
                    "precision",
                    "95% interval",
                    "recall",
                    "F1",
                    "items",
                    "threshold",
                    "auto-tagged",
                    "auto-tag precision",
                    "its 95% interval",
                ],
                [
                    [
                        r["tag"],
                        _pct(r["precision"]),
                        f"{_pct(r['ci_low'])}–{_pct(r['ci_high'])}",
                        _pct(r["recall"]),
                        _num(r["f1"]),
                        r["support"],
                        _num(r["threshold"]),
                        r["num_auto"] if r["num_auto"] is not None else "—",
                        _pct(r["auto_precision"]),
                        f"{_pct(r['auto_ci_low'])}–{_pct(r['auto_ci_high'])}",
                    ]
                    for r in per_tag_table(metrics)
                ],
            )
        )
    parts.append("<h2>Per slice (test)</h2>")
    parts.append(
        _table(
            ["slice", "items", "weighted F1", "auto-tag precision", "coverage", "note"],
            [
                [
                    r["slice"],
                    r["n"],
                    _num(r["f1_weighted"]),
                    _pct(r["auto_precision"]),
                    _pct(r["coverage"]),
                    ("few items: noisy. " if r["noisy"] else "") + r["description"],
                ]
                for r in slice_table(run.test)
            ],
            text_cols=(5,),
        )
    )
    parts.append("<h2>Against simpler models and the previous model (same test split)</h2>")
    parts.append(
        _table(
            ["model", "weighted F1", "auto-tag precision", "coverage", "out-of-scope auto-tagged"],
            _comparison_rows(run, baselines or {}, previous),
        )
    )
    if not baselines:
        parts.append("<p>No baselines run on this data yet: <code>make baselines</code>.</p>")
    if latency:
        parts.append("<h2>Latency (<code>make bench</code>, one item, 2 CPU threads)</h2>")
        parts.append(
            _table(
                ["model", "backend", "MB", "p50 ms", "p99 ms", "items/s at batch 32"],
                [
                    [
                        r["name"],
                        r["backend"],
                        f"{r['size_mb']:.1f}",
                        f"{r['p50_ms']:.1f}",
                        f"{r['p99_ms']:.1f}",
                        f"{r['throughput_batch32_per_s']:.0f}",
                    ]
                    for r in latency
                ],
            )
        )
        if shipped is None:
            parts.append(
                "<p>No ONNX export benchmarked: <code>make export && make bench</code>.</p>"
            )
    if suite:
        parts.append("<h2>Behavioural tests (CheckList style, <code>make test-model</code>)</h2>")
        parts.append(
            _table(
                ["family", "passed", "pass rate", "required"],
                [
                    [
                        name,
                        f"{f['passed']}/{f['total']}",
                        _pct(f["pass_rate"]),
                        _pct(f["min_pass_rate"]),
                    ]
                    for name, f in suite.items()
                ],
            )
        )
        fails = [f for fam in suite.values() for f in fam["failures"][:3]]
        if fails:
            parts.append("<p>Examples of failures:</p>")
            parts.append(_table(["case", "got"], [[f["case"], f["got"]] for f in fails], 9))
    parts.append("<h2>Known weak spots</h2><ul>")
    parts += [f"<li>{html.escape(n)}</li>" for n in weak_spots(run, target)]
    parts.append("</ul>")
    confusions = top_confusions(run.test)
    if confusions:
        parts.append(
            _table(
                ["gold tag", "predicted as", "items"],
                [[c["gold"], c["predicted"], c["count"]] for c in confusions],
                2,
            )
        )
    mistakes = worst_mistakes(run.predictions, per_tag=1)
    if mistakes:
        parts.append("<p>The most confident mistake per tag:</p>")
        parts.append(
            _table(
                ["gold", "predicted", "confidence", "applied without review", "text"],
                [
                    [
                        m["gold"],
                        m["predicted"],
                        f"{m['confidence']:.2f}",
                        m["auto_applied"],
                        m["text"][:140],
                    ]
                    for m in mistakes
                ],
                9,
            )
        )
    if sweep:
        best = sweep.get("best") or {}
        parts.append("<h2>Hyperparameter search</h2>")
        parts.append(
            f"<p>Study {html.escape(str(sweep.get('study', '')))}: "
            f"{html.escape(json.dumps(sweep.get('counts', {})))}; best value "
            f"{_num(best.get('value'), 4)} (trial {best.get('number')}): "
            f"<code>{html.escape(' '.join(best.get('overrides', [])))}</code>.</p>"
        )
    parts.append("<h2>Plots</h2>")
    for name, caption in PLOTS:
        path = run.plot(name)
        if path is not None:
            parts.append(_img(path, caption))
    if sweep and sweep.get("_history_png"):
        parts.append(_img(Path(sweep["_history_png"]), "Sweep: optimisation history"))
    parts.append("</body></html>")
    return "\n".join(parts)


def screenshot(html_path: Path, png_path: Path, width: int = 1280, height: int = 6000) -> Path:
    """Render the page in headless Chromium and save a PNG (fails loudly without a browser)."""
    browser = next(
        (
            shutil.which(b)
            for b in ("chromium", "chromium-browser", "google-chrome")
            if shutil.which(b)
        ),
        None,
    )
    if browser is None:
        raise ReportError(
            "Chromium not found: install it (Debian: apt-get install chromium) for the "
            "screenshot check, or pass --no-screenshot"
        )
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
        f"| {r['tag']} | {_pct(r['precision'])} | {_pct(r['ci_low'])}–{_pct(r['ci_high'])} | "
        f"{_pct(r['recall'])} | {r['support']} |"
        for r in per_tag_table(run.test)
    )
    slice_rows = "\n".join(
        f"| {r['slice']} | {r['n']} | {_num(r['f1_weighted'])} | {_pct(r['auto_precision'])} |"
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
                f"Auto-tag precision {_pct(head['precision'])} at coverage "
                f"{_pct(head['coverage'])} (target > 85%); weighted F1 {_num(head['f1_weighted'])}."
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
    from mltagger.paths import project_root

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
    if take_screenshot:
        result["screenshot"] = str(screenshot(html_path, out_dir / "report.png"))
    if wandb_online():
        result["wandb_url"] = publish_wandb_report(run, wandb_project, wandb_entity)
    else:
        result["wandb_url"] = None
    return result


def main(argv: list[str] | None = None) -> int:
    import argparse

    from mltagger.cli import user_errors

    parser = argparse.ArgumentParser(prog="mltagger report", description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="run folder or model folder (default models/latest)")
    parser.add_argument(
        "--previous",
        help="the run to compare with (default: the newest earlier run on the same data)",
    )
    parser.add_argument("--sweep", help="a sweep folder (runs/sweep/<study>) to include")
    parser.add_argument("--output", help="folder for report.html (default <run>/report)")
    parser.add_argument("--no-screenshot", action="store_true", help="skip the Chromium check")
    parser.add_argument("--no-behaviour", action="store_true", help="skip the behavioural suite")
    parser.add_argument("--wandb-project", default=os.environ.get("WANDB_PROJECT", "mltagger"))
    parser.add_argument("--wandb-entity", default=os.environ.get("WANDB_ENTITY"))
    args = parser.parse_args(argv)
    with user_errors():
        try:
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
        except ReportError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
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


if __name__ == "__main__":
    sys.exit(main())
