"""`mltagger simulate-cycle`: the whole loop replayed on the labelled stream pool.

Day by day, the pool's items (in date order) go through the real service code (`Tagger.add`:
the decision rule, the audit draw, shadow and canary answers) into a real SQLite store;
simulated reviewers answer the review queue oldest-first (the order issue 23 kept) up to a
daily budget, plus every audited item; a share of items carry an author tag (right with a
stated probability); and `mltagger cycle` runs at the end of every day, with real training.
The champion is built by the recipe *without* the pool (`data=with_packages`), so its data,
teacher and operating points never saw a pool item, and the cycle's default data is that
recipe's too.

Resumable: the store, the cycles' folders and `state.json` live in `--output`; a rerun with the
same folder goes on at the first day not finished. `--poison` injects a bad day (one
reviewer's labels shuffled, or 30% of a day's labels flipped) for the safety trials.

Writes `<output>/report.json` and `report.md`: per-day coverage and precision of the decision
rule as run, the cycles and their outcomes, promotions, rollbacks, review hours and CPU time.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from mltagger.core.config import compose_config
from mltagger.core.errors import UserError
from mltagger.core.paths import resolve_path
from mltagger.cycle.context import champion_dir, torch_folder
from mltagger.cycle.run import admin, make_context, run_cycle
from mltagger.models.modelio import read_model_metadata, write_model_metadata
from mltagger.models.predict import Predictor
from mltagger.serving.cycles import events, latest_cycles, new_cycle, update_cycle
from mltagger.serving.service import Tagger, prepare
from mltagger.serving.tables import items, reviews

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def split_days(pool: list[dict], days: int) -> list[list[dict]]:
    return [list(c) for c in np.array_split(np.array(pool, dtype=object), days)]


def _set_time(engine: sa.Engine, table: sa.Table, ids: list[int], stamp: datetime) -> None:
    """The simulated clock: rows written on day d carry day d's time."""
    if ids:
        with engine.begin() as conn:
            conn.execute(table.update().where(table.c.id.in_(ids)).values(created_at=stamp))


def poison(answers: list[dict], kind: str, rng: random.Random, tags: list[str]) -> list[dict]:
    """`shuffle`: the first reviewer's tags of the day permuted among their items; `flip`: 30%
    of the day's labels changed to another tag at random."""
    out = [dict(a) for a in answers]
    if kind == "shuffle":
        mine = [a for a in out if a["reviewer"] == "reviewer-0"]
        shuffled = [a["tag"] for a in mine]
        rng.shuffle(shuffled)
        for a, t in zip(mine, shuffled, strict=True):
            a["tag"], a["poisoned"] = t, True
    elif kind == "flip":
        for a in rng.sample(out, k=round(0.3 * len(out))):
            a["tag"] = rng.choice([t for t in tags if t != a["tag"]])
            a["poisoned"] = True
    return out


def run_day(
    tagger: Tagger, day: int, rows: list[dict], args, rng: random.Random, tags: list[str]
) -> dict:
    """Ingest one day, let the reviewers work, return the day's figures."""
    store = tagger.store
    stamp = START + timedelta(days=day)
    batch = []
    for r in rows:
        author = None
        if rng.random() < args.author_share:
            author = r["tag"] if rng.random() >= args.author_error else rng.choice(tags)
        it = prepare(r["title"], r.get("description") or "", author_tag=author)
        batch.append({**it, "gold": r["tag"]})
    tagger.reload_now()
    outcomes = []
    for start in range(0, len(batch), 32):
        outcomes += tagger.add(batch[start : start + 32], source="simulation")
    tagger.wait_for_shadow()
    ids = [o.item_id for o in outcomes if o.item_id is not None]
    _set_time(store.engine, items, ids, stamp)
    gold = {o.item_id: b["gold"] for o, b in zip(outcomes, batch, strict=True) if o.item_id}
    store_gold = tagger.sim_gold  # every stored item's gold tag, for the reviewers
    store_gold.update(gold)
    preds = [o.prediction for o in outcomes]
    auto = np.array([p["reason"] == "classifier" for p in preds])
    right = np.array([p["tag"] == b["gold"] for p, b in zip(preds, batch, strict=True)])
    # reviewers: every audited item, then the queue oldest-first up to the budget
    queue, _ = store.review_queue(limit=args.budget + 200, order="oldest")
    audited = [q for q in queue if q.get("audit")]
    rest = [q for q in queue if not q.get("audit")][: args.budget]
    answers = []
    for k, q in enumerate([*audited, *rest]):
        answers.append(
            {
                "item_id": q["id"],
                "tag": store_gold[q["id"]],
                "reviewer": f"reviewer-{k % args.reviewers}",
                "duplicate": False if q.get("status") == "duplicate" else None,
            }
        )
    if args.poison and int(args.poison.split(":")[1]) == day:
        answers = poison(answers, args.poison.split(":")[0], rng, tags)
    review_ids = []
    for a in answers:
        store.review(a["item_id"], a["tag"], reviewer=a["reviewer"], duplicate=a["duplicate"])
        with store.engine.connect() as conn:
            review_ids.append(int(conn.execute(sa.select(sa.func.max(reviews.c.id))).scalar()))
    _set_time(store.engine, reviews, review_ids, stamp + timedelta(hours=12))
    return {
        "day": day,
        "items": len(batch),
        "coverage": float(auto.mean()) if len(auto) else None,
        "precision": float(right[auto].mean()) if auto.any() else None,
        "auto": int(auto.sum()),
        "right": int(right[auto].sum()),
        "reviews": len(answers),
        "poisoned": sum(bool(a.get("poisoned")) for a in answers),
        "poisoned_items": [a["item_id"] for a in answers if a.get("poisoned")],
        "served_by": sorted({p["model_version"] for p in preds}),
    }


def parser() -> argparse.ArgumentParser:
    """The options of `mltagger simulate-cycle`."""
    p = argparse.ArgumentParser(prog="mltagger simulate-cycle", description=__doc__.splitlines()[0])
    p.add_argument(
        "--champion",
        required=True,
        help="the starting model folder, trained without the pool "
        '(make train ARGS="data=with_packages")',
    )
    p.add_argument("--pool", default="data/pool/stream.json")
    p.add_argument(
        "--output", default=None, help="folder (resumable); default runs/simulate-cycle/<time>"
    )
    p.add_argument("--days", type=int, default=12, help="the pool split into this many days")
    p.add_argument("--budget", type=int, default=60, help="queue reviews a day (besides audits)")
    p.add_argument("--reviewers", type=int, default=3)
    p.add_argument("--author-share", type=float, default=0.8, help="items with an author tag")
    p.add_argument("--author-error", type=float, default=0.1, help="author tags drawn at random")
    p.add_argument("--audit-share", type=float, default=0.15)
    p.add_argument("--seconds-per-review", type=float, default=30.0)
    p.add_argument("--max-cycles", type=int, default=6)
    p.add_argument(
        "--cycle-labels",
        type=int,
        default=120,
        help="a new cycle starts after this many new reviews (mltagger cycle "
        "--if-new-labels); an open cycle moves on every day",
    )
    p.add_argument(
        "--canary-audit-items",
        type=int,
        default=20,
        help="audited canary items the promotion test needs (cycle.canary_audit_items)",
    )
    p.add_argument("--poison", default=None, help="shuffle:DAY or flip:DAY")
    p.add_argument("--stop-after-day", type=int, default=None)
    p.add_argument(
        "--regress-at",
        type=int,
        default=None,
        help="at the start of this day, force-promote a copy of the serving model "
        "that applies every tag above 0.2 (the rollback trial)",
    )
    p.add_argument("--regress-kind", choices=("low", "swap"), default="low")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="serve-config overrides, e.g. cycle.train.passes=1")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    started = time.perf_counter()
    champion = resolve_path(args.champion)
    if not (champion / "inference.json").is_file():
        raise UserError(
            f"--champion {args.champion}: no model folder; build one without the pool: "
            'make train ARGS="data=with_packages update_latest=false"'
        )
    out = Path(args.output or f"runs/simulate-cycle/{datetime.now():%Y-%m-%d_%H-%M-%S}")
    out.mkdir(parents=True, exist_ok=True)
    pool = json.loads(resolve_path(args.pool).read_text())
    pool = sorted(pool, key=lambda r: (r["created_on"], str(r["id"])))
    days = split_days(pool, args.days)
    tags, inference = read_model_metadata(champion)
    tags = list(inference.approved_tags)
    cfg = compose_config(
        "serve",
        [
            f"store.url=sqlite:///{(out / 'store.db').resolve()}",
            f"model_dir={champion}",
            f"cycle.folder={(out / 'cycles').resolve()}",
            f"cycle.datasets={(out / 'datasets').resolve()}",
            "cycle.data=with_packages",
            f"monitor.audit_share={args.audit_share}",
            f"cycle.canary_audit_items={args.canary_audit_items}",
            *args.overrides,
        ],
    )
    ctx = make_context(cfg)
    state_path = out / "state.json"
    state = (
        json.loads(state_path.read_text())
        if state_path.is_file()
        else {"days": [], "cycles": [], "settings": vars(args), "cpu_seconds": 0.0}
    )
    tagger = Tagger(
        Predictor(champion), ctx.store, dedup=False, audit_share=args.audit_share, loader=Predictor
    )
    tagger.sim_gold = {}
    with ctx.engine.connect() as conn:  # gold of what an earlier run stored, for resuming
        stored = conn.execute(sa.select(items.c.id, items.c.title, items.c.description)).all()
    by_text = {(prepare(r["title"], r.get("description") or "")["text"]): r["tag"] for r in pool}
    for r in stored:
        tagger.sim_gold[r.id] = by_text.get(prepare(r.title, r.description or "")["text"])
    rng = random.Random(args.seed)
    last = args.days if args.stop_after_day is None else args.stop_after_day + 1
    for day in tqdm(range(len(state["days"]), last), desc="days", unit="day"):
        rng.seed(args.seed * 1000 + day)
        t0 = time.process_time()
        if args.regress_at == day:
            force_regression(ctx, out, args.regress_kind)
        fig = run_day(tagger, day, days[day], args, rng, tags)
        c0 = time.process_time()
        n_started = len({c["id"] for c in latest_cycles(ctx.engine, 100)})
        if n_started < args.max_cycles or any(
            c["status"] == "open" for c in latest_cycles(ctx.engine, 1)
        ):
            outcome = run_cycle(ctx, if_new_labels=args.cycle_labels)
        else:
            outcome = {"status": "max_cycles"}
        fig["cycle"] = outcome
        fig["cycle_cpu_seconds"] = round(time.process_time() - c0, 1)
        fig["cpu_seconds"] = round(time.process_time() - t0, 1)
        state["days"].append(fig)
        state["cpu_seconds"] += fig["cpu_seconds"]
        state_path.write_text(json.dumps(state, indent=1, default=str))
        print(
            f"day {day}: coverage {fig['coverage']:.3f} precision "
            f"{(fig['precision'] or 0):.3f} reviews {fig['reviews']} cycle {outcome}"
        )
    report = summarise(ctx, state, args, time.perf_counter() - started)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / "report.md").write_text(render(report))
    print(render(report))
    ctx.store.close()
    return 0


def force_regression(ctx, out: Path, kind: str = "low") -> None:
    """The rollback trial: a worse copy of the serving model is promoted by an admin's force,
    as a bad release would be; the cycle's watch must undo it. `low`: every tag applied above
    0.2; `swap`: the classifier rows of NLP and computer vision exchanged (a corrupted head)."""
    serving = champion_dir(ctx)
    bad = out / f"regressed-{kind}"
    if not bad.exists():
        shutil.copytree(torch_folder(serving), bad)
        labels, inference = read_model_metadata(bad)
        thresholds = inference.thresholds
        if kind == "low":
            thresholds = {t: (1.01 if t == inference.fallback_tag else 0.2) for t in labels}
        else:
            weights = load_file(bad / "model.safetensors")
            a, b = labels.index("natural-language-processing"), labels.index("computer-vision")
            for key in ("classifier.weight", "classifier.bias"):
                w = weights[key].clone()
                w[[a, b]] = weights[key][[b, a]]
                weights[key] = w
            save_file(weights, bad / "model.safetensors", metadata={"format": "pt"})
        write_model_metadata(
            bad,
            labels,
            replace(inference, thresholds=thresholds, model_version=f"regressed-{kind}"),
        )
    cyc = new_cycle(ctx.engine, str(out / "regression_cycle"), str(serving))
    (out / "regression_cycle").mkdir(exist_ok=True)
    update_cycle(ctx.engine, cyc["id"], step="canary", challenger_dir=str(bad))
    admin(ctx, "force", "simulation", f"rollback trial: a worse model ({kind})")


def poison_reached(cycles: list[dict], poisoned: set[int]) -> list[dict]:
    """Per cycle: how many poisoned labels its challenger trained on, and whether it was
    promoted (a poisoned promotion is one that trained on any)."""
    out = []
    for c in cycles:
        labels = Path(c["folder"]) / "labels.json"
        rows = json.loads(labels.read_text())["train"] if labels.is_file() else []
        n = sum(r["item_id"] in poisoned for r in rows)
        out.append({"cycle": c["id"], "poisoned_labels_trained": n, "outcome": c["outcome"]})
    return out


def summarise(ctx, state: dict, args, wall: float) -> dict:
    days = state["days"]
    q = max(1, len(days) // 4)

    def pooled(part: list[dict]) -> dict:
        n = sum(d["items"] for d in part)
        auto = sum(d["auto"] for d in part)
        right = sum(d["right"] for d in part)
        return {
            "items": n,
            "coverage": auto / n if n else None,
            "precision": right / auto if auto else None,
        }

    cycles = latest_cycles(ctx.engine, 100)[::-1]
    ev = events(ctx.engine, 2000)[::-1]
    first, last = pooled(days[:q]), pooled(days[-q:])
    reviews_n = sum(d["reviews"] for d in days)
    return {
        "settings": state["settings"],
        "days": days,
        "first_quarter": first,
        "last_quarter": last,
        "coverage_gain": (last["coverage"] - first["coverage"])
        if first["coverage"] is not None and last["coverage"] is not None
        else None,
        "cycles": [
            {k: c[k] for k in ("id", "step", "status", "outcome", "labels_sha256")}
            | {
                "why": (c.get("report") or {}).get("why"),
                "failed_gates": (c.get("report") or {}).get("failed_gates", []),
                "quarantined": sorted(
                    ((c.get("report") or {}).get("labels") or {}).get("quarantined") or {}
                ),
            }
            for c in cycles
        ],
        "poison": poison_reached(cycles, {i for d in days for i in d.get("poisoned_items", [])}),
        "promotions": sum(e["name"] == "promote" for e in ev),
        "rollbacks": sum(e["name"] == "rollback" for e in ev),
        "reviews": reviews_n,
        "review_hours": reviews_n * args.seconds_per_review / 3600,
        "cpu_seconds": round(state["cpu_seconds"], 1),
        "cycle_cpu_seconds": round(sum(d["cycle_cpu_seconds"] for d in days), 1),
        "wall_seconds_this_run": round(wall, 1),
    }


def render(r: dict) -> str:
    f = lambda x: "–" if x is None else f"{x:.3f}"  # noqa: E731
    head = "| day | items | coverage | precision | reviews | served by | cycle |"
    lines = ["# simulate-cycle", "", head, "|---:|---:|---:|---:|---:|---|---|"]
    for d in r["days"]:
        c = d["cycle"]
        what = c.get("outcome") or c.get("step") or c.get("status")
        lines.append(
            f"| {d['day']} | {d['items']} | {f(d['coverage'])} | {f(d['precision'])} | "
            f"{d['reviews']} | {', '.join(d['served_by'])} | {what} |"
        )
    fq, lq = r["first_quarter"], r["last_quarter"]
    lines += [
        "",
        f"- first quarter: coverage {f(fq['coverage'])} at precision {f(fq['precision'])}; "
        f"last quarter: {f(lq['coverage'])} at {f(lq['precision'])} "
        f"(gain {f(r['coverage_gain'])})",
        f"- promotions {r['promotions']}, rollbacks {r['rollbacks']}; reviews {r['reviews']} "
        f"({r['review_hours']:.1f} h at {r['settings']['seconds_per_review']:g} s each)",
        f"- CPU time {r['cpu_seconds']:.0f} s, of which the cycle {r['cycle_cpu_seconds']:.0f} s",
        "",
        "| cycle | outcome | failed gates | quarantined | why |",
        "|---:|---|---|---|---|",
    ]
    for c in r["cycles"]:
        lines.append(
            f"| {c['id']} | {c['outcome'] or c['step']} | {', '.join(c['failed_gates'])} "
            f"| {', '.join(c['quarantined'])} | {c['why'] or ''} |"
        )
    return "\n".join(lines) + "\n"
