"""The monitor job on a store filled through the real service: online precision per signal and
model version, drift against the model's own profile, the HTML report and the snapshot."""

from __future__ import annotations

import json

from mltagger.core.config import compose_config
from mltagger.evaluation.drift import build_profile
from mltagger.monitoring.monitor import batches, monitor, render_html, run, snapshot
from mltagger.serving.service import Tagger, prepare
from mltagger.serving.store import Store
from tests.fakes import FakePredictor, make_model_folder

WORDS = ["image", "text", "deploy", "agent", "graph", "forecast"]


def stream(n, offset=0, odd=False):
    out = []
    for i in range(n):
        w = WORDS[i % len(WORDS)]
        title = f"{w} study {i + offset}" if not odd else f"crypto casino bonus {i + offset}"
        out.append(prepare(title, f"A {w} method, variant {i + offset}, with code."))
    return out


def test_monitor_reports_signals_drift_and_a_timeline(tmp_path):
    pred = FakePredictor(make_model_folder(tmp_path / "m"))
    profile = build_profile(pred, stream(120, 10_000), [it["text"] for it in stream(60, 20_000)])
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    tagger = Tagger(pred, store, dedup=False, audit_share=0.5)
    for k in range(3):
        tagger.add(stream(40, 30_000 + 100 * k), source=f"hour-{k}")  # 5-digit ids, as above
    tagger.add(stream(40, 39_000, odd=True), source="hour-3")
    for r in store.monitor_rows():
        if r["audit"]:
            store.review(r["id"], r["model_tag"], reviewer="t")
    summary = monitor(store, pred, profile, last_n=None, permutations=500)
    assert summary["window"]["items"] == 160
    assert [t["source"] for t in summary["timeline"]] == ["hour-0", "hour-1", "hour-2", "hour-3"]
    key = ("audit", "all", "all")
    audit = next(r for r in summary["online"] if (r["signal"], r["model_version"], r["tag"]) == key)
    assert audit["n"] > 0 and audit["precision"] == 1.0
    alarms = [t["drift"]["alarm"] for t in summary["timeline"]]
    fired = [t["drift"]["fired"] for t in summary["timeline"]]
    assert alarms == [False, False, False, True], fired  # only the spam hour
    assert "<img" in render_html(summary)
    snap = snapshot(summary)
    assert snap["drift"]["alarm"] is True and json.dumps(snap)
    store.close()


def test_batches_follow_the_ingest_files_or_a_size():
    rows = [{"source": s} for s in "aabbbc"]
    assert [len(b) for b in batches(rows, None)] == [2, 3, 1]
    assert [len(b) for b in batches(rows, 4)] == [4, 2]


def test_an_empty_window_says_so_and_exits_0(tmp_path, capsys):
    cfg = compose_config(
        "serve", [f"store.url=sqlite:///{tmp_path / 's.db'}", f"model_dir={tmp_path / 'none'}"]
    )
    assert run(cfg, last_n=100, days=None, batch=None, output=None) == 0
    assert "no model-tagged items in the last 100 items" in capsys.readouterr().out


def test_the_monitor_runs_with_a_gated_model_and_reports_what_the_gate_stopped(tmp_path):
    from mltagger.monitoring.monitor import format_summary

    pred = FakePredictor(make_model_folder(tmp_path / "m", threshold=0.0, gate_threshold=0.5))
    profile = build_profile(pred, stream(60, 10_000), [it["text"] for it in stream(30, 20_000)])
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    tagger = Tagger(pred, store, dedup=False)
    tagger.add(stream(30, 30_000), source="hour-0")
    spam = [prepare(f"Claim free crypto airdrop tokens {i}", "Cheap flights and hotel deals.")
            for i in range(10)]  # fmt: skip
    tagger.add(spam, source="hour-1")
    summary = monitor(store, pred, profile, last_n=None, permutations=100)
    share = summary["out_of_scope_ratio"]
    assert 10 / 40 <= share < 1.0  # the spam hour at least, never every item
    hour1 = summary["timeline"][-1]
    assert hour1["source"] == "hour-1" and hour1["out_of_scope_ratio"] == 1.0
    assert "stopped by the out-of-scope gate" in format_summary(summary)
    assert "stopped by the out-of-scope gate" in render_html(summary)
    store.close()
