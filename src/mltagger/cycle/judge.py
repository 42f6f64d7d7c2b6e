"""The evaluate step: champion and challenger on the same items (test split, recent window, audit
sample, fresh set), and every gate before a challenger may run beside the champion."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from mltagger.cycle import gates as G
from mltagger.cycle.context import (
    Context,
    judge_gates,
    max_item_id,
    read_json,
    torch_folder,
    write_json,
)
from mltagger.cycle.evaluate import answers, figures, with_text
from mltagger.evaluation.behavior import run_suite, write_suite
from mltagger.export.onnx import copy_folder_files, export_onnx, parity
from mltagger.models.predict import OnnxPredictor, Predictor, TorchPredictor
from mltagger.serving.cycles import (
    record_event,
    set_rollout,
    update_cycle,
)
from mltagger.serving.tables import items, reviews

log = logging.getLogger(__name__)


def _audit_rows(engine: sa.Engine) -> list[dict]:
    """Every audited item a person has decided: the unbiased sample of what is auto-applied."""
    latest = (
        sa.select(reviews.c.item_id, sa.func.max(reviews.c.id).label("rid"))
        .group_by(reviews.c.item_id)
        .subquery()
    )
    q = (
        sa.select(items.c.id, items.c.title, items.c.description, reviews.c.tag)
        .join(latest, latest.c.item_id == items.c.id)
        .join(reviews, reviews.c.id == latest.c.rid)
        .where(items.c.audit.is_(True))
    )
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def step_evaluate(ctx: Context, cyc: dict) -> str | dict:
    folder = Path(cyc["folder"])
    champion_folder, challenger = Path(cyc["champion_dir"]), folder / "challenger"
    data = ctx.data()
    recent = read_json(folder / "labels.json")["recent"]
    sets = {
        "test": with_text(data.splits["test"]),
        "recent": recent,
        "audit": with_text(_audit_rows(ctx.engine)),
        "fresh": with_text(data.fresh),
    }
    models = {"champion": Predictor(champion_folder), "challenger": Predictor(challenger)}
    tags = [
        t for t in models["challenger"].labels if t != models["challenger"].inference.fallback_tag
    ]
    ans, figs = {}, {}
    for name, rows in sets.items():
        gold = [r["tag"] for r in rows]
        for who, pred in models.items():
            ans[(name, who)] = answers(pred, rows)
            figs.setdefault(name, {})[who] = figures(gold, ans[(name, who)])
    gs = ctx.gates_s
    out_gates, per_tag = [], {}
    # The promise per tag, judged on every unbiased sample of auto-applied tags at once: the
    # test split and the audit sample (each alone is too small to prove 0.85 for most tags);
    # each one's own figures are in the evaluation file.
    pooled: dict = {w: {"tag": [], "auto": [], "gold": []} for w in ("champion", "challenger")}
    for name in ("test", "audit"):
        gold = [r["tag"] for r in sets[name]]
        for who in ("champion", "challenger"):
            a = ans[(name, who)]
            _, per_tag[f"{name}/{who}"] = G.tag_precision(name, a["tag"], a["auto"], gold, tags, gs)
            pooled[who]["tag"] += list(a["tag"])
            pooled[who]["auto"] += list(a["auto"])
            pooled[who]["gold"] += gold
    for who in ("champion", "challenger"):
        p = pooled[who]
        g, per_tag[f"test+audit/{who}"] = G.tag_precision(
            "tag_precision",
            np.array(p["tag"], dtype=object),
            np.array(p["auto"]),
            p["gold"],
            tags,
            gs,
        )
        pooled[who]["gate"] = g
    g = pooled["challenger"]["gate"]
    champ = pooled["champion"]["gate"]
    out_gates.append(
        {**g, "why": f"{g['why']} (the champion, same rule: {champ['status']}; {champ['why']})"}
    )
    gold_recent = [r["tag"] for r in recent]
    g, paired = G.paired_recent(
        gold_recent,
        (ans[("recent", "champion")]["tag"], ans[("recent", "champion")]["auto"]),
        (ans[("recent", "challenger")]["tag"], ans[("recent", "challenger")]["auto"]),
        gs,
        tops=(ans[("recent", "champion")]["top"], ans[("recent", "challenger")]["top"]),
    )
    out_gates.append(g)
    harm_n = figs["test"]["challenger"]["oos_items"] + figs["recent"]["challenger"]["oos_items"]

    def harm(who: str) -> float | None:
        parts = [(figs[n][who]["oos_harm"], figs[n][who]["oos_items"]) for n in ("test", "recent")]
        n = sum(k for _, k in parts)
        return sum((h or 0.0) * k for h, k in parts) / n if n else None

    out_gates.append(G.oos_harm(harm("champion"), harm("challenger"), harm_n, gs))
    if ctx.s.export_parity:
        par, why = _export_parity(challenger, folder / "challenger_onnx", sets["test"])
        out_gates.append(G.export_parity(par, gs, why))
    if ctx.s.behaviour:
        out_gates.append(
            G.behaviour(
                _behaviour(champion_folder, folder / "behaviour_champion"),
                _behaviour(challenger, folder / "behaviour_challenger"),
                gs,
            )
        )
    evaluation = {
        "figures": figs,
        "per_tag": per_tag,
        "paired_recent": paired,
        "sizes": {k: len(v) for k, v in sets.items()},
    }
    write_json(folder / "evaluation.json", evaluation)
    report = {
        **(cyc.get("report") or {}),
        "evaluation": {"figures": figs, "sizes": evaluation["sizes"]},
        "gates": [*(cyc.get("report") or {}).get("gates", []), *out_gates],
    }
    update_cycle(ctx.engine, cyc["id"], report=report, challenger_dir=str(challenger))
    stop = judge_gates(ctx, cyc, report, out_gates, "gate(s) tripped")
    if stop is not None:
        return stop
    row = set_rollout(ctx.engine, str(challenger), "shadow", cycle_id=cyc["id"])
    update_cycle(
        ctx.engine,
        cyc["id"],
        report={**report, "shadow_row": row["id"], "shadow_from_item": max_item_id(ctx.engine)},
    )
    record_event(ctx.engine, "decision", "shadow", "started", cycle_id=cyc["id"])
    ctx.say(f"cycle {cyc['id']}: every gate passed; the challenger runs in shadow")
    return "shadow"


def _export_parity(model: Path, out: Path, rows: list[dict]) -> tuple[dict | None, str]:
    """fp32 ONNX of the challenger against its torch answers on the test texts."""
    try:
        if not (out / "model.onnx").is_file():
            copy_folder_files(model, out)
            export_onnx(model, out)
        texts = [r["text"] for r in rows][:256] or ["an example"]
        ref = TorchPredictor(model).predict_proba(texts)
        got = OnnxPredictor(out).predict_proba(texts)
        return parity(ref, got), ""
    except Exception as err:
        return None, f"{type(err).__name__}: {err}"


def _behaviour(model: Path, out: Path) -> dict:

    if (out / "behavior.json").is_file():
        suite = json.loads((out / "behavior.json").read_text())
    else:
        out.mkdir(parents=True, exist_ok=True)
        suite = run_suite(TorchPredictor(torch_folder(model)))
        write_suite(suite, out / "behavior.json")
        suite = json.loads((out / "behavior.json").read_text())
    return {f"behavior/{k}": v["pass_rate"] for k, v in suite.items() if "pass_rate" in v}
