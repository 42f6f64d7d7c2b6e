"""The stakeholder report as one self-contained HTML page: headline cards, per-tag and per-slice
tables, the comparison with baselines and the previous run, and the run's plots.

Kept apart from `report` (which finds runs and publishes) because the page is long but is only
string building; nothing here reads a file except the plots it embeds.
"""

from __future__ import annotations

import base64
import html
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mltagger.evaluation.metrics import lowest_tag
from mltagger.reporting.analysis import (
    Run,
    headline,
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


def fmt_pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def fmt_num(x: float | None, digits: int = 3) -> str:
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


def _side_by_side(test: dict, fresh: dict) -> list[list[Any]]:
    """The headline figures of test and fresh, row by row."""

    def figs(m: dict) -> dict:
        at = m.get("coverage", {}).get("at_threshold") or {}
        scope = m.get("scope") or {}
        t, o = scope.get("topics", {}), scope.get("out_of_scope", {})
        return {
            "items": m.get("num_samples"),
            "topic weighted F1": fmt_num(t.get("f1_weighted")),
            "topic auto-tag precision": fmt_pct(t.get("auto_precision")),
            "topic coverage": fmt_pct(t.get("coverage")),
            "topic items auto-tagged other": fmt_pct(t.get("lost_to_other")),
            "out-of-scope auto-tagged with a topic": fmt_pct(o.get("auto_topic")),
            "auto-tag precision, all items": fmt_pct(at.get("auto_precision")),
            "coverage, all items": fmt_pct(at.get("coverage")),
        }

    a, b = figs(test), figs(fresh)
    return [[k, a[k], b[k]] for k in a]


def _comparison_rows(run: Run, baselines: dict, previous: Run | None) -> list[list[Any]]:
    def row(name: str, m: dict) -> list[Any]:
        at = m.get("coverage", {}).get("at_threshold", {})
        oos = (m.get("scope") or {}).get("out_of_scope", {}).get("auto_topic")
        return [
            name,
            fmt_num(m.get("overall", {}).get("f1_weighted")),
            fmt_pct(at.get("auto_precision")),
            fmt_pct(at.get("coverage")),
            fmt_pct(oos),
        ]

    rows = [row(f"this model ({run.name})", run.test)]
    if previous is not None:
        rows.append(row(f"previous model ({previous.name})", previous.test))
    for name, m in baselines.items():
        rows.append(row(f"baseline: {name}", m))
    return rows


_STYLE = (
    "<style>body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;"
    "color:#222;padding:0 1em}h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid"
    " #ddd}table{border-collapse:collapse;margin:.6em 0;font-size:14px}td,th{padding:3px 9px;"
    "border-bottom:1px solid #eee;text-align:left}.num{text-align:right}.cards{display:flex;"
    "gap:1em;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:8px;padding:.7em 1.1em;"
    "min-width:150px}.card b{display:block;font-size:1.7em}.ok{color:#17803d}.bad{color:"
    "#b42318}figure{display:inline-block;margin:.5em;max-width:520px}img{max-width:100%}"
    "figcaption{font-size:13px;color:#555}.meta{color:#666;font-size:13px}</style></head><body>"
)


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
    """The report page, section by section in the order a reader meets them: the verdict and
    its cards, test beside fresh, operating points, per tag, per slice, the comparison, latency,
    the behavioural suite, weak spots, the sweep and the plots."""
    fresh_path = run.folder / "fresh" / "metrics.json"
    fresh = json.loads(fresh_path.read_text()) if fresh_path.is_file() else None
    parts = [
        *_header(run, target, latency, fresh),
        *_fresh_section(run.test, fresh),
        *_operating_points_section(run.test),
    ]
    for split, metrics in (("test", run.test), ("fresh", fresh)):
        if metrics is not None:
            parts += _per_tag_section(split, metrics)
    parts += [
        *_slice_section(run.test),
        *_comparison_section(run, baselines, previous),
        *_latency_section(latency),
        *_suite_section(suite),
        *_weak_spots_section(run, target),
        *_sweep_section(sweep),
        *_plots_section(run, sweep),
        "</body></html>",
    ]
    return "\n".join(parts)


def _promise(run: Run, fresh: dict | None, target: float) -> tuple[str, str]:
    """The first card and sentence: the promise (precision > target per tag) as it stands on
    current content, i.e. the lowest per-tag automatic precision on the fresh set (on test
    when the run has no fresh figures), red when under the target."""
    split, worst = ("fresh", lowest_tag(fresh)) if fresh else ("test", lowest_tag(run.test))
    if worst is None:
        return (
            f'<div class="card">lowest per-tag auto-tag precision<b>—</b>{split}: nothing '
            "was tagged automatically</div>",
            f"Nothing in the {split} set was tagged automatically.",
        )
    ok = worst["precision"] > target
    card = (
        f'<div class="card">lowest per-tag auto-tag precision ({split})'
        f'<b class="{"ok" if ok else "bad"}">{fmt_pct(worst["precision"])}</b>'
        f"{html.escape(worst['tag'])}, {worst['num_auto']} auto-tagged; target &gt; "
        f"{target:.0%} for every tag</div>"
    )
    sentence = (
        f"On {'2023–2026 content (the fresh set)' if split == 'fresh' else 'the test set'}, "
        f"the tag applied automatically with the lowest precision is {worst['tag']}: right "
        f"{fmt_pct(worst['precision'])} of {worst['num_auto']} times (95% interval from "
        f"{fmt_pct(worst['low'])}), {'above' if ok else 'below'} the {target:.0%} promise."
    )
    return card, sentence


def _header(
    run: Run, target: float, latency: list[dict] | None, fresh: dict | None = None
) -> list[str]:
    """Title, the run's identity, the headline cards (the per-tag promise on current content
    first) and the verdict."""
    head = headline(run, target)
    met = head["meets_target"]
    promise_card, promise = _promise(run, fresh, target)
    verdict = (
        f"{promise} On test, auto-applied tags are right {fmt_pct(head['precision'])} of the "
        f"time overall, for {fmt_pct(head['coverage'])} of items; the rest "
        f"({head['num_review']} of {head['num_samples']} test items) go to a person."
    )
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>mltagger report — {html.escape(run.name)}</title>",
        _STYLE,
        "<h1>Tagging model report</h1>",
        f'<p class="meta">run {html.escape(run.name)} · model {html.escape(model_version(run))}'
        f" · git {html.escape(str(run.info.get('git', {}).get('commit', ''))[:10])} · data sha256 "
        f"{html.escape(str(run.info.get('data_sha256', ''))[:12])} · made "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC</p>",
        '<div class="cards">',
        promise_card,
        f'<div class="card">auto-tag precision, test<b class="{"ok" if met else "bad"}">'
        f"{fmt_pct(head['precision'])}</b>all tags together</div>",
        f'<div class="card">coverage, test<b>{fmt_pct(head["coverage"])}</b>'
        "tagged without a person</div>",
        f'<div class="card">weighted F1<b>{fmt_num(head["f1_weighted"])}</b>all test items</div>',
        f'<div class="card">out-of-scope given a topic<b>{fmt_pct(head["oos_auto_topic"])}</b>'
        "should be near 0</div>",
    ]
    shipped = [r for r in latency or [] if r.get("shipped")]
    if shipped:  # the export that serves, never a faster candidate that does not
        row = shipped[0]
        parts.append(
            f'<div class="card">latency p99, shipped export<b>{row["p99_ms"]:.1f} ms</b>'
            f"{html.escape(row['name'])}, budget 100 ms</div>"
        )
    elif latency:
        parts.append(
            '<div class="card">latency p99<b>—</b>the shipped export (models/export) was not '
            "benchmarked: make bench</div>"
        )
    return [*parts, "</div>", f"<p>{html.escape(verdict)}</p>"]


def _fresh_section(test: dict, fresh: dict | None) -> list[str]:
    if fresh is None:
        return ["<p>No fresh-set figures in this run (data.fresh was off).</p>"]
    return [
        "<h2>Test (2020 content) and the fresh 2023–2026 set</h2>",
        _table(["figure", "test", "fresh"], _side_by_side(test, fresh)),
    ]


def _operating_points_section(test: dict) -> list[str]:
    ops = test.get("coverage", {}).get("operating_points") or []
    if not ops:
        return []
    rows = [
        [
            f"{o['precision_target']:.0%}",
            fmt_num(o.get("threshold")),
            fmt_pct(o.get("test_precision")),
            fmt_pct(o.get("test_coverage")),
        ]
        if o.get("threshold") is not None
        else [f"{o['precision_target']:.0%}", "not reachable on val", "—", "—"]
        for o in ops
    ]
    return [
        "<h2>Operating points (threshold chosen on validation)</h2>",
        _table(["precision target", "threshold", "test precision", "test coverage"], rows),
    ]


_PER_TAG_HEADERS = [
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
]


def _per_tag_section(split: str, metrics: dict) -> list[str]:
    rows = [
        [
            r["tag"],
            fmt_pct(r["precision"]),
            f"{fmt_pct(r['ci_low'])}–{fmt_pct(r['ci_high'])}",
            fmt_pct(r["recall"]),
            fmt_num(r["f1"]),
            r["support"],
            fmt_num(r["threshold"]),
            r["num_auto"] if r["num_auto"] is not None else "—",
            fmt_pct(r["auto_precision"]),
            f"{fmt_pct(r['auto_ci_low'])}–{fmt_pct(r['auto_ci_high'])}",
        ]
        for r in per_tag_table(metrics)
    ]
    return [f"<h2>Per tag ({split})</h2>", _table(_PER_TAG_HEADERS, rows)]


def _slice_section(test: dict) -> list[str]:
    rows = [
        [
            r["slice"],
            r["n"],
            fmt_num(r["f1_weighted"]),
            fmt_pct(r["auto_precision"]),
            fmt_pct(r["coverage"]),
            ("few items: noisy. " if r["noisy"] else "") + r["description"],
        ]
        for r in slice_table(test)
    ]
    headers = ["slice", "items", "weighted F1", "auto-tag precision", "coverage", "note"]
    return ["<h2>Per slice (test)</h2>", _table(headers, rows, text_cols=(5,))]


def _comparison_section(run: Run, baselines: dict | None, previous: Run | None) -> list[str]:
    headers = ["model", "weighted F1", "auto-tag precision", "coverage", "out-of-scope auto-tagged"]
    parts = [
        "<h2>Against simpler models and the previous model (same test split)</h2>",
        _table(headers, _comparison_rows(run, baselines or {}, previous)),
    ]
    if not baselines:
        parts.append("<p>No baselines run on this data yet: <code>make baselines</code>.</p>")
    return parts


def _latency_section(latency: list[dict] | None) -> list[str]:
    if not latency:
        return []
    rows = [
        [
            r["name"] + (" (shipped)" if r.get("shipped") else ""),
            r["backend"],
            f"{r['size_mb']:.1f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['throughput_batch32_per_s']:.0f}",
        ]
        for r in latency
    ]
    parts = [
        "<h2>Latency (<code>make bench</code>, one item, 2 CPU threads)</h2>",
        _table(["model", "backend", "MB", "p50 ms", "p99 ms", "items/s at batch 32"], rows),
    ]
    if not any(r.get("backend") == "onnx" for r in latency):
        parts.append("<p>No ONNX export benchmarked: <code>make export && make bench</code>.</p>")
    return parts


def _suite_section(suite: dict | None) -> list[str]:
    if not suite:
        return []
    rows = [
        [name, f"{f['passed']}/{f['total']}", fmt_pct(f["pass_rate"]), fmt_pct(f["min_pass_rate"])]
        for name, f in suite.items()
    ]
    parts = [
        "<h2>Behavioural tests (CheckList style, <code>make test-model</code>)</h2>",
        _table(["family", "passed", "pass rate", "required"], rows),
    ]
    fails = [f for fam in suite.values() for f in fam["failures"][:3]]
    if fails:
        parts.append("<p>Examples of failures:</p>")
        parts.append(_table(["case", "got"], [[f["case"], f["got"]] for f in fails], 9))
    return parts


def _weak_spots_section(run: Run, target: float) -> list[str]:
    """The weak spots in words, then the commonest confusions and the most confident mistakes."""
    parts = ["<h2>Known weak spots</h2><ul>"]
    parts += [f"<li>{html.escape(n)}</li>" for n in weak_spots(run, target)]
    parts.append("</ul>")
    confusions = top_confusions(run.test)
    if confusions:
        rows = [[c["gold"], c["predicted"], c["count"]] for c in confusions]
        parts.append(_table(["gold tag", "predicted as", "items"], rows, 2))
    mistakes = worst_mistakes(run.predictions, per_tag=1)
    if mistakes:
        rows = [
            [
                m["gold"],
                m["predicted"],
                f"{m['confidence']:.2f}",
                m["auto_applied"],
                m["text"][:140],
            ]
            for m in mistakes
        ]
        headers = ["gold", "predicted", "confidence", "applied without review", "text"]
        parts.append("<p>The most confident mistake per tag:</p>")
        parts.append(_table(headers, rows, 9))
    return parts


def _sweep_section(sweep: dict | None) -> list[str]:
    if not sweep:
        return []
    best = sweep.get("best") or {}
    return [
        "<h2>Hyperparameter search</h2>",
        f"<p>Study {html.escape(str(sweep.get('study', '')))}: "
        f"{html.escape(json.dumps(sweep.get('counts', {})))}; best value "
        f"{fmt_num(best.get('value'), 4)} (trial {best.get('number')}): "
        f"<code>{html.escape(' '.join(best.get('overrides', [])))}</code>.</p>",
    ]


def _plots_section(run: Run, sweep: dict | None) -> list[str]:
    parts = ["<h2>Plots</h2>"]
    for name, caption in PLOTS:
        path = run.plot(name)
        if path is not None:
            parts.append(_img(path, caption))
    if sweep and sweep.get("_history_png"):
        parts.append(_img(Path(sweep["_history_png"]), "Sweep: optimisation history"))
    return parts


def model_version(run: Run) -> str:
    path = run.folder / "model" / "inference.json"
    return json.loads(path.read_text()).get("model_version", "") if path.is_file() else ""
