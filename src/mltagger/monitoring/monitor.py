"""`mltagger monitor`: how the released model does, from the store, on a window of the stream.

For the window (the last N model-tagged items, or the last D days) it computes online precision
per tag, proxy signal and model version (`evaluation.online`), the disagreement of a shadow or
canary candidate, the review ratio and backlog, and drift against the serving model's reference
profile (`evaluation.drift`). The window is also cut into consecutive batches (an ingest file
each, or `--batch` items) and every batch is tested, which is what the plots over time show.

Writes runs/monitor/<time>/monitor.json and monitor.html, and stores the summary in the store
(`monitor_snapshots`), where the service reads it for its /metrics gauges: the figures are
computed here, in a job, never on the request path.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from mltagger.core.paths import resolve_path
from mltagger.data.text import item_text
from mltagger.evaluation.drift import Profile, drift_tests
from mltagger.evaluation.online import (
    disagreement,
    online_precision,
    out_of_scope_ratio,
    review_ratio,
    secondary_shares,
)
from mltagger.models.predict import Predictor
from mltagger.serving.store import Store

DEFAULT_LAST = 500


def batches(rows: Sequence[dict], size: int | None) -> list[list[dict]]:
    """Consecutive batches of the window: by ingest file (`source`) when size is None, else
    `size` items each."""
    out: list[list[dict]] = []
    for r in rows:
        if size is None:
            if not out or out[-1][-1]["source"] != r["source"]:
                out.append([])
        elif not out or len(out[-1]) >= size:
            out.append([])
        out[-1].append(r)
    return out


def _encode(predictor, texts: list[str], batch: int = 64) -> tuple[np.ndarray, list[dict]]:
    embs, preds = [], []
    for start in range(0, len(texts), batch):
        chunk = texts[start : start + batch]
        logits, emb = predictor.encode(chunk)
        embs.append(np.asarray(emb, dtype=np.float32))
        preds += predictor.decide([{"text": t} for t in chunk], predictor.probabilities(logits))
    return np.concatenate(embs), preds


def _overall(online: list[dict], signal: str, version: str = "all") -> dict | None:
    return next(
        (r for r in online if r["signal"] == signal and r["tag"] == "all"
         and r["model_version"] == version),
        None,
    )  # fmt: skip


def monitor(
    store: Store,
    predictor,
    profile: Profile,
    *,
    last_n: int | None = DEFAULT_LAST,
    days: float | None = None,
    batch: int | None = None,
    alpha: float = 0.01,
    permutations: int = 2000,
) -> dict | None:
    """The monitor summary of one window; None when the window has no items."""
    since = datetime.now(timezone.utc) - timedelta(days=days) if days else None
    rows = store.monitor_rows(last_n=None if since else last_n, since=since)
    if not rows:
        return None
    t0 = time.perf_counter()
    texts = [item_text(r["title"], r["description"]) for r in rows]
    embeddings, preds = _encode(predictor, texts)
    drift = drift_tests(profile, texts, embeddings, preds, alpha, permutations)
    timeline = []
    offset = 0
    for k, part in enumerate(batches(rows, batch)):
        idx = slice(offset, offset + len(part))
        offset += len(part)
        entry = {
            "batch": k,
            "source": part[0]["source"],
            "items": len(part),
            "first_id": part[0]["id"],
            "last_id": part[-1]["id"],
            "online": [r for r in online_precision(part) if r["tag"] == "all"],
            "review_ratio": review_ratio(part),
            "out_of_scope_ratio": out_of_scope_ratio(part),
        }
        if len(part) >= 10:  # fewer items say nothing about a distribution
            entry["drift"] = drift_tests(
                profile, texts[idx], embeddings[idx], preds[idx], alpha, permutations
            )
        timeline.append(entry)
    online = online_precision(rows)
    return {
        "window": {
            "items": len(rows),
            "first_id": rows[0]["id"],
            "last_id": rows[-1]["id"],
            "from": rows[0]["created_at"],
            "to": rows[-1]["created_at"],
            "last_n": None if since else last_n,
            "days": days,
        },
        "serving_model": predictor.inference.model_version,
        "reference_model": profile.model_version,
        "online": online,
        "disagreement": disagreement(rows),
        "review_ratio": review_ratio(rows),
        "out_of_scope_ratio": out_of_scope_ratio(rows),
        "secondary": secondary_shares(rows),
        "backlog": store.review_backlog(),
        "drift": drift,
        "timeline": timeline,
        "seconds": time.perf_counter() - t0,
    }


# -- the HTML report ------------------------------------------------------------------------


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plots(summary: dict, target: float = 0.85) -> dict[str, str]:
    """Base64 PNGs: online precision by signal over batches, drift p-values over batches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    timeline = summary["timeline"]
    xs = [t["batch"] for t in timeline]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for signal, color in (("audit", "C0"), ("author", "C1"), ("reports", "C2")):
        pts = [(x, _overall(t["online"], signal)) for x, t in zip(xs, timeline, strict=True)]
        pts = [(x, r) for x, r in pts if r and r["precision"] is not None]
        if pts:
            ax.errorbar(
                [x for x, _ in pts],
                [r["precision"] for _, r in pts],
                yerr=[
                    [r["precision"] - r["ci_low"] for _, r in pts],
                    [r["ci_high"] - r["precision"] for _, r in pts],
                ],
                label=signal,
                color=color,
                marker="o",
                capsize=2,
            )
    ax.axhline(target, color="grey", ls="--", lw=1, label=f"target {target:.0%}")
    ax.set(xlabel="batch", ylabel="online precision", ylim=(0, 1.05))
    ax.legend(loc="lower left", fontsize=8)
    out["precision"] = _png(fig)
    fig, ax = plt.subplots(figsize=(8, 3.2))
    tested = [t for t in timeline if "drift" in t]
    for test in next(iter([t["drift"]["pvalues"] for t in tested]), {}):
        ax.plot(
            [t["batch"] for t in tested],
            [-np.log10(max(t["drift"]["pvalues"][test], 1e-12)) for t in tested],
            marker=".",
            label=test,
        )
    if tested:
        alpha = tested[0]["drift"]["alpha"]
        ax.axhline(-np.log10(alpha), color="red", ls="--", lw=1, label=f"alarm (p < {alpha})")
    ax.set(xlabel="batch", ylabel="-log10 adjusted p")
    ax.legend(loc="upper left", fontsize=7, ncol=2)
    out["drift"] = _png(fig)
    return out


def _cell(r: dict | None) -> str:
    if not r or r["precision"] is None:
        return "—"
    return f"{r['precision']:.1%} [{r['ci_low']:.1%}, {r['ci_high']:.1%}] n={r['n']}"


def render_html(summary: dict) -> str:
    imgs = plots(summary)
    versions = sorted({r["model_version"] for r in summary["online"]})
    rows = "".join(
        f"<tr><td>{html.escape(v)}</td>"
        + "".join(f"<td>{_cell(_overall(summary['online'], s, v))}</td>" for s in
                  ("audit", "author", "reports"))
        + "</tr>"
        for v in versions
    )  # fmt: skip
    tags = sorted({r["tag"] for r in summary["online"] if r["tag"] != "all"})
    tag_rows = "".join(
        f"<tr><td>{html.escape(t)}</td>"
        + "".join(
            f"<td>{_cell(next((r for r in summary['online'] if r['tag'] == t and r['signal'] == s and r['model_version'] == 'all'), None))}</td>"  # noqa: E501
            for s in ("audit", "author", "reports")
        )
        + "</tr>"
        for t in tags
    )
    drift = summary["drift"]
    dis = "".join(
        f"<li>{html.escape(d['shown'])} vs {html.escape(d['other'])}: {d['rate']:.1%} of "
        f"{d['items']} items tagged differently</li>"
        for d in summary["disagreement"]
    )
    w = summary["window"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>mltagger monitor</title>
<style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto}}td,th{{padding:.2rem .6rem;
border-bottom:1px solid #ddd;text-align:left}}.bad{{color:#b00}}.ok{{color:#070}}</style></head>
<body><h1>mltagger monitor</h1>
<p>Window: {w["items"]} model-tagged items, ids {w["first_id"]}–{w["last_id"]}
({html.escape(w["from"])} to {html.escape(w["to"])}). Serving model
<code>{html.escape(summary["serving_model"])}</code>; review ratio {summary["review_ratio"]:.1%};
stopped by the out-of-scope gate {_pct(summary.get("out_of_scope_ratio"))};
review backlog {summary["backlog"]["waiting"]} items, oldest
{summary["backlog"]["oldest_seconds"] / 3600:.1f} h.</p>
<h2>Online auto-tag precision (95% interval)</h2>
<p>audit: random auto-tagged items reviewed (unbiased, small); author: agreement with the tag the
submitter chose (authors err, so a lower bound); reports: auto-tagged items nobody reported
(most errors go unreported, so an upper bound).</p>
<table><tr><th>model</th><th>audit</th><th>author</th><th>reports</th></tr>{rows}</table>
<h3>By tag (all models)</h3>
<table><tr><th>tag</th><th>audit</th><th>author</th><th>reports</th></tr>{tag_rows}</table>
<img src="data:image/png;base64,{imgs["precision"]}" alt="online precision over batches">
<h2>Candidate disagreement</h2><ul>{dis or "<li>no candidate in the window</li>"}</ul>
<h2>Drift against the reference profile</h2>
<p class="{"bad" if drift["alarm"] else "ok"}">{
        "ALARM: " + ", ".join(drift["fired"]) if drift["alarm"] else "no drift alarm"
    } on the whole window (adjusted p &lt; {drift["alpha"]}).</p>
<p>{", ".join(f"{k} p={v:.3g}" for k, v in drift["pvalues"].items())}</p>
<img src="data:image/png;base64,{imgs["drift"]}" alt="drift p-values over batches">
</body></html>
"""


def snapshot(summary: dict) -> dict:
    """What the service exports: the window's figures and the latest batch's drift (so an
    alarm clears once the stream is back to normal)."""
    tested = [t for t in summary["timeline"] if "drift" in t]
    latest = tested[-1]["drift"] if tested else summary["drift"]
    figures = ("precision", "ci_low", "ci_high", "n")
    return {
        "window": summary["window"],
        "serving_model": summary["serving_model"],
        "online": summary["online"],
        "review_ratio": summary["review_ratio"],
        "disagreement": summary["disagreement"],
        "drift": {k: latest[k] for k in ("pvalues", "alarm", "fired", "alpha", "items")},
        # per batch of the window, what the health page plots over time (overall figures only)
        "timeline": [
            {
                "batch": t["batch"],
                "source": t["source"],
                "items": t["items"],
                "signals": {
                    s: {k: r[k] for k in figures}
                    for s in ("audit", "author", "reports")
                    if (r := _overall(t["online"], s)) is not None
                },
                "drift_alarm": t["drift"]["alarm"] if "drift" in t else None,
            }
            for t in summary["timeline"]
        ],
    }


def run(cfg, *, last_n: int | None, days: float | None, batch: int | None, output: str | None,
        save: bool = True, permutations: int = 2000) -> int:  # fmt: skip
    """The job behind `mltagger monitor`."""
    store = Store(str(cfg.store.url))
    try:
        since = datetime.now(timezone.utc) - timedelta(days=days) if days else None
        if not store.monitor_rows(last_n=1, since=since):
            window = f"the last {days:g} days" if days else f"the last {last_n} items"
            print(f"no model-tagged items in {window}: nothing to monitor; ingest some first "
                  "(make ingest FILE=..., or make simulate-stream for a demo)")  # fmt: skip
            return 0
        folder = resolve_path(cfg.model_dir, cfg.paths.root_dir)
        profile = Profile.load(folder)
        predictor = Predictor(folder, threads=cfg.get("threads"))
        summary = monitor(
            store, predictor, profile, last_n=last_n, days=days, batch=batch,
            permutations=permutations,
        )  # fmt: skip
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
        out = Path(output) if output else resolve_path(f"runs/monitor/{stamp}", cfg.paths.root_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "monitor.json").write_text(json.dumps(summary, indent=1) + "\n")
        (out / "monitor.html").write_text(render_html(summary))
        if save:
            store.save_snapshot(snapshot(summary))
    finally:
        store.close()
    print(format_summary(summary))
    print(f"report: {out / 'monitor.html'}")
    return 0


def _pct(value: float | None) -> str:
    """A share as a percentage, or "n/a" (no model-tagged items, or a model without a gate)."""
    return "n/a" if value is None else f"{value:.1%}"


def format_summary(summary: dict) -> str:
    w, d = summary["window"], summary["drift"]
    lines = [f"window: {w['items']} items (ids {w['first_id']}-{w['last_id']})"]
    for signal in ("audit", "author", "reports"):
        r = _overall(summary["online"], signal)
        lines.append(f"  online precision ({signal}): {_cell(r)}")
    lines.append(f"  review ratio: {summary['review_ratio']:.1%}; backlog {summary['backlog']}")
    lines.append(f"  stopped by the out-of-scope gate: {_pct(summary.get('out_of_scope_ratio'))}")
    sec = summary.get("secondary") or {}
    lines.append(
        f"  with a secondary tag: {_pct(sec.get('auto'))} of auto-tagged items (model), "
        f"{_pct(sec.get('reviewed'))} of reviewed items (people)"
    )
    for dis in summary["disagreement"]:
        lines.append(f"  {dis['shown']} vs {dis['other']}: {dis['rate']:.1%} disagree")
    fired = ", ".join(d["fired"]) if d["alarm"] else "none"
    lines.append(f"  drift alarm: {fired} ({summary['seconds']:.1f} s)")
    return "\n".join(lines)
