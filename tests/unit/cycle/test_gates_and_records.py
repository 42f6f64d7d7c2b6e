"""The cycle's gates and rules (pure), and its records in a real SQLite store: lock, pause,
rollout rows, events and the alert state."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest

from mltagger.cycle import gates as G
from mltagger.cycle.context import CycleSettings
from mltagger.cycle.release import canary_tests, watch_window
from mltagger.serving.cycles import (
    LOCK_KEY,
    CycleBusy,
    acquire_lock,
    alert_state,
    current_rollout,
    new_cycle,
    open_cycle,
    paused,
    record_event,
    release_lock,
    set_paused,
    set_rollout,
    update_cycle,
)
from mltagger.serving.store import Store
from mltagger.serving.tables import settings

TAGS = ["natural-language-processing", "computer-vision"]


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'store.db'}")
    yield s
    s.close()


def test_tag_precision_judges_only_tags_with_evidence():
    s = G.GateSettings(min_tag_items=22)
    answers = ["natural-language-processing"] * 60 + ["computer-vision"] * 5
    gold = ["natural-language-processing"] * 59 + ["mlops"] + ["mlops"] * 5
    auto = np.ones(65, dtype=bool)
    gate, rows = G.tag_precision("t", answers, auto, gold, TAGS, s)
    assert gate["status"] == "pass"  # 59/60: lower bound 0.91; CV has 5 auto-tags only
    assert "not enough evidence" in gate["why"] and "computer-vision" in gate["why"]
    assert [r["evidence"] for r in rows] == [True, False]
    gold = ["natural-language-processing"] * 50 + ["mlops"] * 15
    gate, _ = G.tag_precision("t", answers, auto, gold, TAGS, s)
    assert gate["status"] == "fail" and "natural-language-processing" in gate["why"]
    gate, _ = G.tag_precision("t", answers[:5], auto[:5], gold[:5], TAGS, s)
    assert gate["status"] == "not_enough_evidence"


def test_paired_recent_needs_a_measurable_gain_and_no_loss():
    s = G.GateSettings(n_boot=500)
    n = 300
    gold = np.array(["a"] * n, dtype=object)
    champ = (gold.copy(), np.arange(n) < 100)
    better = (gold.copy(), np.arange(n) < 180)  # covers 80 more, all right
    gate, figures = G.paired_recent(gold, champ, better, s)
    assert gate["status"] == "pass" and figures["bootstrap"]["coverage"]["low"] > 0
    gate, _ = G.paired_recent(gold, champ, champ, s)
    assert gate["status"] == "fail"  # identical: nothing measurably better
    worse_tags = gold.copy()
    worse_tags[:60] = "b"
    gate, _ = G.paired_recent(gold, champ, (worse_tags, better[1]), s)
    assert gate["status"] == "fail"  # more coverage bought with wrong answers


def test_oos_parity_and_behaviour_gates():
    s = G.GateSettings()
    assert G.oos_harm(0.02, 0.029, 100, s)["status"] == "pass"
    assert G.oos_harm(0.02, 0.031, 100, s)["status"] == "fail"
    assert G.oos_harm(None, None, 0, s)["status"] == "not_enough_evidence"
    par = {"label_agreement": 1.0, "max_prob_diff": 1e-6, "num_samples": 10}
    assert G.export_parity(par, s)["status"] == "pass"
    assert G.export_parity({**par, "label_agreement": 0.9}, s)["status"] == "fail"
    assert G.export_parity(None, s, "no onnx")["status"] == "fail"
    champ = {"behavior/invariance": 1.0, "behavior/directional": 0.9}
    assert (
        G.behaviour(champ, {"behavior/invariance": 0.97, "behavior/directional": 0.9}, s)["status"]
        == "pass"
    )
    assert (
        G.behaviour(champ, {"behavior/invariance": 0.8, "behavior/directional": 0.9}, s)["status"]
        == "fail"
    )


def _pair(champ: str, chall: str, author=None, audit=False, review=None, auto=True) -> dict:
    return {
        "champion": {"tag": champ, "auto": auto},
        "challenger": {"tag": chall, "auto": auto},
        "author_tag": author,
        "audit": audit,
        "review_tag": review,
    }


def test_canary_waits_for_evidence_then_tests_non_inferiority():
    s = CycleSettings(canary_author_items=200, canary_audit_items=20, canary_margin=0.03)
    few = [_pair("a", "a", author="a") for _ in range(50)]
    rows, enough = canary_tests(few, s)
    assert not enough and rows[0]["status"] == "not_enough_evidence"
    same = [_pair("a", "a", author="a", audit=i < 30, review="a") for i in range(250)]
    rows, enough = canary_tests(same, s)
    assert enough and {r["status"] for r in rows} == {"pass"}
    worse = [
        _pair("a", "b" if i < 40 else "a", author="a", audit=i < 30, review="a") for i in range(250)
    ]
    rows, enough = canary_tests(worse, s)
    assert enough and {r["name"]: r["status"] for r in rows} == {
        "canary.author_agreement": "fail",
        "canary.audit_precision": "fail",
    }


def test_audit_precision_counts_only_wrong_automatic_tags():
    s = CycleSettings(canary_author_items=1, canary_audit_items=20)
    # the challenger sends the audited items to review instead of tagging them: not an error
    rows = [_pair("a", "other", author="a", audit=True, review="a") for _ in range(40)]
    for r in rows:
        r["challenger"]["auto"] = False
    out, _ = canary_tests(rows, s)
    assert {r["name"]: r["status"] for r in out}["canary.audit_precision"] == "pass"


def test_watch_window_alarms():
    s = CycleSettings(watch_max_disagreement=0.25, watch_floor=0.85, watch_min_audit=10)
    calm = [_pair("a", "a", audit=i < 20, review="a") for i in range(100)]
    assert watch_window(calm, s)["alarms"] == []
    drifting = [_pair("a", "b" if i < 40 else "a") for i in range(100)]
    assert watch_window(drifting, s)["alarms"] == ["watch.disagreement"]
    wrong = [_pair("a", "a", audit=i < 20, review="b" if i < 12 else "a") for i in range(100)]
    assert watch_window(wrong, s)["alarms"] == ["watch.precision"]


def test_lock_refuses_a_second_cycle_and_takes_over_a_dead_one(store):
    me = acquire_lock(store.engine)
    with pytest.raises(CycleBusy, match="another cycle is running"):
        acquire_lock(store.engine)
    release_lock(store.engine, me)
    acquire_lock(store.engine)  # free again
    with store.engine.begin() as conn:  # a killed cycle's lock: same host, dead pid
        conn.execute(
            settings.update()
            .where(settings.c.name == LOCK_KEY)
            .values(
                value=json.dumps(
                    {
                        "pid": 2**22 + 12345,
                        "host": socket.gethostname(),
                        "since": "2026-01-01T00:00:00+00:00",
                    }
                )
            )
        )
    holder = acquire_lock(store.engine)
    assert holder["pid"] == os.getpid()


def test_rollout_rows_pause_events_and_alert_state(store):
    assert current_rollout(store.engine) is None
    set_rollout(store.engine, "/models/x", "shadow", cycle_id=1)
    set_rollout(store.engine, "/models/x", "canary", 20, cycle_id=1)
    row = current_rollout(store.engine)
    assert row["mode"] == "canary" and row["percent"] == 20
    set_rollout(store.engine, "/models/x", "off")
    assert current_rollout(store.engine)["candidate_dir"] is None
    with pytest.raises(Exception, match="rollout mode"):
        set_rollout(store.engine, "/m", "blue-green")
    assert paused(store.engine) is None
    set_paused(store.engine, True, "ana", "holiday freeze")
    assert paused(store.engine)["by"] == "ana"
    assert alert_state(store.engine)["paused"]["why"] == "holiday freeze"
    set_paused(store.engine, False, "ana", "back")
    assert paused(store.engine) is None
    cyc = new_cycle(store.engine, "/tmp/c1", "/models/champ")
    assert open_cycle(store.engine)["id"] == cyc["id"]
    assert alert_state(store.engine)["tripped"] is None
    update_cycle(
        store.engine,
        cyc["id"],
        status="closed",
        outcome="rejected",
        report={"why": "gate", "failed_gates": ["recent.paired"]},
    )
    assert open_cycle(store.engine) is None
    assert alert_state(store.engine)["tripped"]["gates"] == ["recent.paired"]
    record_event(store.engine, "admin", "veto", "done", by="ana", why="x", cycle_id=cyc["id"])
    later = new_cycle(store.engine, "/tmp/c2", "/models/champ")
    update_cycle(store.engine, later["id"], status="closed", outcome="promoted", report={})
    assert alert_state(store.engine)["tripped"] is None  # a later good cycle clears it


def test_mcnemar_reads_the_top_answers_not_the_decisions():
    """A challenger whose best answer is right far more often passes on McNemar even when it
    applies no more tags (the items it sends to review still count by their top answer)."""
    s = G.GateSettings(n_boot=300)
    n = 150
    gold = np.array(["a"] * n, dtype=object)
    decided = (np.array(["other"] * n, dtype=object), np.zeros(n, dtype=bool))
    champ_top = np.array(["a"] * 90 + ["b"] * 60, dtype=object)
    chall_top = np.array(["a"] * 120 + ["b"] * 30, dtype=object)
    gate, figures = G.paired_recent(gold, decided, decided, s, tops=(champ_top, chall_top))
    assert figures["mcnemar"]["b_only"] == 30 and figures["mcnemar"]["a_only"] == 0
    assert gate["status"] == "pass"
    gate, _ = G.paired_recent(gold, decided, decided, s)  # the decisions alone: no gain seen
    assert gate["status"] == "fail"
    # better top answers bought by sending many more items to review: not better
    applied = (np.array(["a"] * n, dtype=object), np.arange(n) < 60)
    fewer = (np.array(["a"] * n, dtype=object), np.arange(n) < 20)
    gate, _ = G.paired_recent(gold, applied, fewer, s, tops=(champ_top, chall_top))
    assert gate["status"] == "fail"


def test_the_webhook_gets_the_alert_and_a_failure_is_recorded(store):
    """A real HTTP server on 127.0.0.1 receives the JSON; an unreachable one is an event."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from types import SimpleNamespace

    from mltagger.cycle.context import notify
    from mltagger.serving.cycles import events

    got = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/hook"
    ctx = SimpleNamespace(s=SimpleNamespace(webhook=url), engine=store.engine)
    notify(ctx, 7, {"outcome": "rejected", "failed_gates": ["tag_precision"]})
    server.shutdown()
    server.server_close()
    assert got == [
        {
            "source": "mltagger cycle",
            "cycle": 7,
            "outcome": "rejected",
            "failed_gates": ["tag_precision"],
        }
    ]
    ctx = SimpleNamespace(s=SimpleNamespace(webhook=url), engine=store.engine)  # now closed
    notify(ctx, 8, {"outcome": "rolled_back"})
    outcomes = [
        (e["cycle_id"], e["outcome"]) for e in events(store.engine) if e["name"] == "webhook"
    ]
    assert (7, "sent") in outcomes and (8, "failed") in outcomes


def test_watch_rolls_back_a_model_whose_tags_disagree_with_authors_more_than_the_old_one():
    from mltagger.cycle.release import author_precision_gap

    s = CycleSettings(watch_max_disagreement=0.5, watch_min_audit=1000, canary_margin=0.03)
    # the old model applies 40 tags, 36 as the authors; the new one applies 70, 42 as the authors
    rows = []
    for i in range(100):
        old_auto, new_auto = i < 40, i < 70
        old_right, new_right = i < 36, i < 42 or (40 <= i < 42)
        rows.append(
            {
                "champion": {"tag": "a" if old_right else "b", "auto": old_auto},
                "challenger": {"tag": "a" if new_right else "b", "auto": new_auto},
                "author_tag": "a",
                "audit": False,
                "review_tag": None,
            }
        )
    gap = author_precision_gap(rows, 0.03)
    assert gap["challenger"] == (42, 70) and gap["champion"] == (36, 40)
    assert watch_window(rows, s)["alarms"] == ["watch.author_precision"]
    same = [{**r, "challenger": r["champion"]} for r in rows]
    assert watch_window(same, s)["alarms"] == []
