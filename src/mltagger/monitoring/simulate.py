"""`mltagger simulate-stream`: replay an hourly stream through ingest and watch it with the monitor.

Three phases, each a run of hourly drop files ingested into a fresh store by the real
`ingest_file` with the served model:

(a) in distribution: the held-out test split (2020 items like the training data);
(b) a shift: 2023–26 items of the fresh set, then a burst of non-ML package summaries (spam);
(c) a canary: a deliberately worse candidate (`--candidate`, e.g. trained without the newer data)
    tags a share of the remaining fresh items (`canary:<percent>`).

The people in the loop are simulated from the gold tags: authors give the gold tag with
probability `--author-accuracy` and another tag otherwise; audited items are reviewed with their
gold tag; a user reports a wrong auto-applied tag with probability `--report-rate`. After every
hour the monitor tests that hour's batch for drift (the alarm the service would export), and in
phase (c) compares the two models on everything the canary has seen so far.

The targets were written down before the first run (docs/monitoring.md) and are checked here:
drift flagged within 3 hours of the shift, at most 1 false alarm per 1,000 in-distribution items
(also estimated on resampled in-distribution windows, for a tighter figure), and a canary that is
truly 5+ points worse ending below the current model with non-overlapping 95% intervals.

On a fresh clone neither model exists and no model file is in git, so with the default folders
the job first builds what is missing (`models/latest`, `models/export`, the candidate), saying how
long it will take; each step is the real `mltagger` job with its progress bars.

Over 400 lines because the three phases, the simulated people and the checks of the targets
written down beforehand belong to one experiment and are read together; the monitor and ingest
it drives live in their own layers.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np

from mltagger.core.config import compose_config
from mltagger.core.errors import DataError
from mltagger.core.paths import resolve_path
from mltagger.data.duplicates import content_hash
from mltagger.data.package_pool import _ML_VOCAB
from mltagger.data.prepare import prepare_data
from mltagger.evaluation.drift import Profile, drift_tests
from mltagger.evaluation.online import answers, figure, online_precision
from mltagger.models.predict import Predictor
from mltagger.models.rule import AUTO_REASONS
from mltagger.monitoring.monitor import _encode, monitor, render_html
from mltagger.screen.bench_data import load_bench
from mltagger.serving.ingest import ingest_file
from mltagger.serving.rollout import Rollout
from mltagger.serving.service import Tagger
from mltagger.serving.store import Store

# The canary's candidate: the shipped recipe trained without the newer data (docs/monitoring.md).
CANDIDATE = "runs/sim/worse/model"
CANDIDATE_RECIPE = (
    "data=with_other",
    "update_latest=false",
    "logger=none",
    "distill.soft_labels=null",
    "hydra.run.dir=runs/sim/worse",
)
SERVED = "models/export"  # the default model_dir of conf/serve.yaml

TARGETS = {
    "detect_within_batches": 3,
    "false_alarms_per_1000": 1.0,
    "canary_gap_points": 5.0,
}


def _author(gold: str, tags: Sequence[str], accuracy: float, rng: random.Random) -> str:
    if rng.random() < accuracy:
        return gold
    return rng.choice([t for t in tags if t != gold])


def spam_items(n: int, seed: int) -> list[dict]:
    """Non-ML package summaries from the duplicate benchmark's registry (gold tag `other`)."""
    pool = [
        it
        for it in load_bench().stores["all"]
        if not _ML_VOCAB.search(f"{it['title']} {it['description'] or ''}")
        and len(it["description"] or "") > 30
    ]
    rng = random.Random(seed)
    return [{"title": it["title"], "description": it["description"], "tag": "other"}
            for it in rng.sample(pool, n)]  # fmt: skip


def false_alarm_rate(
    profile: Profile, predictor, items: Sequence[dict], size: int, windows: int, seed: int
) -> dict:
    """Alarm rate of the drift tests on resampled in-distribution windows."""
    texts = [it["text"] for it in items]
    embeddings, preds = _encode(predictor, texts)
    rng = np.random.default_rng(seed)
    alarms, fired = 0, {}
    for w in range(windows):
        idx = rng.choice(len(items), size=size, replace=False)
        out = drift_tests(
            profile, [texts[i] for i in idx], embeddings[idx], [preds[i] for i in idx],
            seed=w,
        )  # fmt: skip
        alarms += out["alarm"]
        for name in out["fired"]:
            fired[name] = fired.get(name, 0) + 1
    per_window = alarms / windows
    return {
        "windows": windows,
        "window_items": size,
        "alarms": alarms,
        "fired_by_test": fired,
        "per_window": per_window,
        "per_1000_items": per_window * 1000 / size,
    }


def simulate(
    cfg,
    *,
    candidate: str,
    out_dir: Path,
    batch: int = 50,
    canary: float = 50.0,
    author_accuracy: float = 0.9,
    report_rate: float = 0.1,
    audit_share: float = 0.1,
    resample_windows: int = 100,
    seed: int = 0,
) -> dict:
    rng = random.Random(seed)
    folder = resolve_path(cfg.model_dir, cfg.paths.root_dir)
    profile = Profile.load(folder)
    current = Predictor(folder)
    worse = Predictor(resolve_path(candidate, cfg.paths.root_dir))
    data = prepare_data(cfg_data(cfg), cfg.paths.root_dir)
    tags = list(current.inference.approved_tags)
    in_dist = list(data.splits["test"])
    fresh = list(data.fresh)
    rng.shuffle(in_dist)
    rng.shuffle(fresh)
    shift_fresh, canary_fresh = fresh[: 3 * batch], fresh[3 * batch :]
    spam = spam_items(batch, seed)
    phases = [("a", b) for b in _chunks(in_dist, batch)]
    phases += [("b", b) for b in _chunks(shift_fresh, batch)] + [("b", spam)]
    phases += [("c", b) for b in _chunks(canary_fresh, batch)]

    out_dir.mkdir(parents=True, exist_ok=True)
    drops = out_dir / "drops"
    drops.mkdir(exist_ok=True)
    db = out_dir / "stream.db"
    for stale in (db, db.with_name("stream.db-wal"), db.with_name("stream.db-shm")):
        stale.unlink(missing_ok=True)  # the simulation's store starts empty, every run
    store = Store(f"sqlite:///{db}")
    tagger = Tagger(current, store, audit_share=audit_share)
    gold: dict[str, str] = {}
    hours = []
    t0 = time.perf_counter()
    for hour, (phase, items) in enumerate(phases):
        if phase == "c" and tagger.candidate is None:
            tagger.candidate, tagger.rollout = worse, Rollout.parse(f"canary:{canary:g}")
        drop = drops / f"hour_{hour:02d}.jsonl"
        with drop.open("w") as fh:
            for it in items:
                gold[content_hash(it["title"], it["description"] or "")] = it["tag"]
                row = {"title": it["title"], "description": it["description"] or ""}
                if it["tag"] != "other" or phase != "b":  # spam comes without an author tag
                    row["author_tag"] = _author(it["tag"], tags, author_accuracy, rng)
                fh.write(json.dumps(row) + "\n")
        summary = ingest_file(tagger, drop, progress=False)
        _people_act(store, gold, report_rate, rng, since_id=hours[-1]["last_id"] if hours else 0)
        window = monitor(store, current, profile, last_n=max(summary["stored"], 1))
        if window is None:
            continue
        hours.append(
            {
                "hour": hour,
                "phase": phase,
                "items": len(items),
                "stored": summary["stored"],
                "last_id": window["window"]["last_id"],
                "alarm": window["drift"]["alarm"],
                "fired": window["drift"]["fired"],
                "pvalues": window["drift"]["pvalues"],
            }
        )
    rows = store.monitor_rows(last_n=None, since=None)
    result = {
        "hours": hours,
        "canary": canary_comparison(rows, gold, current.inference.model_version, batch),
        "resampled_in_distribution": false_alarm_rate(
            profile, current, data.splits["test"], batch, resample_windows, seed
        ),
        "seconds": time.perf_counter() - t0,
    }
    result["targets"] = check_targets(result)
    final = monitor(store, current, profile, last_n=None, batch=None)
    (out_dir / "monitor.html").write_text(render_html(final))
    (out_dir / "simulation.json").write_text(json.dumps(result, indent=1) + "\n")
    store.close()
    return result


def cfg_data(cfg):
    return compose_config("train", []).data


def _chunks(items: Sequence[dict], size: int) -> list[list[dict]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _people_act(store: Store, gold: dict, report_rate: float, rng: random.Random, since_id: int):
    """Reviewers answer the audited items of the new hour with the gold tag; users report some
    wrong auto-applied tags."""
    for r in store.monitor_rows(last_n=None):
        if r["id"] <= since_id:
            continue
        truth = gold[content_hash(r["title"], r["description"])]
        if r["audit"]:
            store.review(r["id"], truth, reviewer="simulated-audit")
        elif r["reason"] in AUTO_REASONS and r["model_tag"] != truth and rng.random() < report_rate:
            store.add_feedback(r["id"], truth, "simulated report")


def canary_comparison(rows: Sequence[dict], gold: dict, current: str, step: int) -> dict:
    """Phase (c): each model's true precision (gold) and online precision (author, audit)
    on the canary's items, and after how many canary items the intervals separated."""
    canary_rows = [r for r in rows if r.get("shadow")]
    if not canary_rows:
        return {}
    candidate = next(r["model_version"] for r in canary_rows if r["model_version"] != current)

    def truth(rs, version):
        """Gold precision of a model's auto-applied answers, shown or not, on the canary items:
        both models answered every one of them, so they are scored on the same items."""
        ok = n = 0
        for r in rs:
            for a in answers([r]):
                if a["model_version"] == version and a["auto"]:
                    n += 1
                    ok += a["tag"] == gold[content_hash(r["title"], r["description"])]
        return figure(ok, n)

    separated_at = None
    for n in range(step, len(canary_rows) + step, step):
        part = canary_rows[:n]
        online = _by_version(online_precision(part, signals=("author",)))
        a, b = online.get(current), online.get(candidate)
        if a and b and a["n"] and b["n"] and b["ci_high"] < a["ci_low"]:
            separated_at = min(n, len(canary_rows))
            break
    online = online_precision(canary_rows, signals=("author", "audit"))
    author = _by_version([r for r in online if r["signal"] == "author"])
    return {
        "paired_author": paired(canary_rows, current, candidate),
        "projected_items_to_separate": projected_items(
            author.get(current), author.get(candidate), len(canary_rows)
        ),
        "current": current,
        "candidate": candidate,
        "items": len(canary_rows),
        "true": {current: truth(canary_rows, current), candidate: truth(canary_rows, candidate)},
        "author": _by_version([r for r in online if r["signal"] == "author"]),
        "audit": _by_version([r for r in online if r["signal"] == "audit"]),
        "separated_after_items": separated_at,
    }


def paired(rows: Sequence[dict], current: str, candidate: str) -> dict:
    """Both models answered every canary item: on the items both auto-tagged and the author
    tagged, how often only one of them agreed with the author (an exact McNemar test). Paired,
    so it needs far fewer items than two separate intervals."""
    from scipy.stats import binomtest

    only_current = only_candidate = both = 0
    for r in rows:
        by = {a["model_version"]: a for a in answers([r])}
        a, b = by.get(current), by.get(candidate)
        if not (a and b and a["auto"] and b["auto"] and r.get("author_tag")):
            continue
        both += 1
        ok_a, ok_b = a["tag"] == r["author_tag"], b["tag"] == r["author_tag"]
        only_current += ok_a and not ok_b
        only_candidate += ok_b and not ok_a
    n = only_current + only_candidate
    p = float(binomtest(only_current, n, 0.5).pvalue) if n else None
    return {"items": both, "only_current_agrees": only_current,
            "only_candidate_agrees": only_candidate, "mcnemar_p": p}  # fmt: skip


def projected_items(a: dict | None, b: dict | None, canary_items: int) -> int | None:
    """Canary items it would take, at the observed precisions and auto-tag rates, for the two
    models' 95% intervals to stop overlapping (None if the candidate is not below)."""
    if not (a and b and a["n"] and b["n"]) or b["precision"] >= a["precision"]:
        return None
    for scale in np.arange(1.0, 200.0, 0.05):
        fa = figure(round(a["precision"] * a["n"] * scale), round(a["n"] * scale))
        fb = figure(round(b["precision"] * b["n"] * scale), round(b["n"] * scale))
        if fb["ci_high"] < fa["ci_low"]:
            return int(canary_items * scale + 0.5)
    return None


def _by_version(online: list[dict]) -> dict:
    return {
        r["model_version"]: r for r in online if r["tag"] == "all" and r["model_version"] != "all"
    }


def check_targets(result: dict) -> dict:
    hours = result["hours"]
    a = [h for h in hours if h["phase"] == "a"]
    shift = [h for h in hours if h["phase"] != "a"]
    first = next((k for k, h in enumerate(shift) if h["alarm"]), None)
    a_items = sum(h["stored"] for h in a)
    a_alarms = sum(h["alarm"] for h in a)
    resampled = result["resampled_in_distribution"]["per_1000_items"]
    out = {
        "detection": {
            "alarm_at_shift_hour": None if first is None else first + 1,
            "delay_items": None if first is None else sum(h["stored"] for h in shift[: first + 1]),
            "met": first is not None and first + 1 <= TARGETS["detect_within_batches"],
        },
        "false_alarms": {
            "stream_alarms": a_alarms,
            "stream_items": a_items,
            "resampled_per_1000": resampled,
            "met": resampled <= TARGETS["false_alarms_per_1000"] and a_alarms == 0,
        },
    }
    c = result["canary"]
    if c:
        cur, cand = c["true"][c["current"]], c["true"][c["candidate"]]
        gap = (
            None
            if cur["precision"] is None or cand["precision"] is None
            else ((cur["precision"] - cand["precision"]) * 100)
        )
        out["canary"] = {
            "true_gap_points": gap,
            "premise": gap is not None and gap >= TARGETS["canary_gap_points"],
            "separated_after_items": c["separated_after_items"],
            "met": c["separated_after_items"] is not None,
        }
    return out


def format_result(result: dict) -> str:
    t = result["targets"]
    lines = ["hour phase stored alarm fired"]
    for h in result["hours"]:
        lines.append(
            f"{h['hour']:>4} {h['phase']:>5} {h['stored']:>6} {'ALARM' if h['alarm'] else '-':>5} "
            f"{','.join(h['fired'])}"
        )
    d, f = t["detection"], t["false_alarms"]
    lines.append(
        f"drift after the shift: alarm in shift hour {d['alarm_at_shift_hour']} "
        f"({d['delay_items']} items) -> {'met' if d['met'] else 'missed'}"
    )
    lines.append(
        f"false alarms: {f['stream_alarms']} in {f['stream_items']} in-distribution stream items; "
        f"{f['resampled_per_1000']:.2f} per 1,000 items on resampled windows -> "
        f"{'met' if f['met'] else 'missed'}"
    )
    if "canary" in t:
        c, r = t["canary"], result["canary"]
        cur, cand = r["true"][r["current"]], r["true"][r["candidate"]]
        lines.append(
            f"canary: true auto-tag precision current {cur['precision']:.1%} (n={cur['n']}) vs "
            f"candidate {cand['precision']:.1%} (n={cand['n']}), gap {c['true_gap_points']:.1f} pts"
        )
        for signal in ("author", "audit"):
            a, b = r[signal].get(r["current"]), r[signal].get(r["candidate"])
            if a and b:
                lines.append(
                    f"  {signal}: current {a['precision']:.1%} [{a['ci_low']:.1%}, "
                    f"{a['ci_high']:.1%}] n={a['n']}; candidate {b['precision']:.1%} "
                    f"[{b['ci_low']:.1%}, {b['ci_high']:.1%}] n={b['n']}"
                )
        lines.append(
            f"  intervals separated after {c['separated_after_items']} canary items -> "
            f"{'met' if c['met'] else 'missed'}"
        )
        pa = r["paired_author"]
        lines.append(
            f"  paired (author): on {pa['items']} items both auto-tagged, only the current model "
            f"agreed {pa['only_current_agrees']}x, only the candidate "
            f"{pa['only_candidate_agrees']}x (McNemar p={pa['mcnemar_p']:.3g}); two separate "
            f"intervals would need about "
            f"{r['projected_items_to_separate']} canary items"
        )
    return "\n".join(lines)


def missing_models(cfg, candidate: str) -> list[tuple[str, list[str], int]]:
    """What must be built before the stream can run: (folder, `mltagger` arguments, minutes on 2
    cores), in order. Only the default folders are built; another missing folder is a user error
    naming the command that makes one."""
    root = cfg.paths.root_dir
    steps: list[tuple[str, list[str], int]] = []
    if not resolve_path(cfg.model_dir, root).exists():
        if str(cfg.model_dir) != SERVED:
            raise DataError(
                f"model_dir={cfg.model_dir}: no such model folder; make one with `make train` "
                "(and `make export`), or leave model_dir at its default to have it built"
            )
        if not resolve_path("models/latest", root).exists():
            steps.append(("models/latest", ["train"], 10))
        steps.append((SERVED, ["export"], 3))
    if not resolve_path(candidate, root).exists():
        if candidate != CANDIDATE:
            raise DataError(
                f"--candidate {candidate}: no such model folder; train one (`make train "
                'ARGS="update_latest=false ..."`), or leave --candidate out to have one built'
            )
        steps.append((CANDIDATE, ["train", *CANDIDATE_RECIPE], 5))
    return steps


def build_models(steps: list[tuple[str, list[str], int]], root) -> None:
    """Run each missing step as its real job (its own progress bars), after saying how long."""
    minutes = sum(m for _, _, m in steps)
    print(
        f"simulate-stream: {', '.join(f for f, _, _ in steps)} missing; building them first, "
        f"about {minutes} minutes on 2 cores:",
        flush=True,
    )
    for k, (folder, args, mins) in enumerate(steps, 1):
        print(f"[{k}/{len(steps)}] {folder} (~{mins} min): mltagger {' '.join(args)}", flush=True)
        done = subprocess.run([sys.executable, "-m", "mltagger", *args], cwd=root, check=False)
        if done.returncode != 0:
            raise DataError(f"`mltagger {' '.join(args)}` failed (exit {done.returncode})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mltagger simulate-stream", description=__doc__.split("\n")[0])
    p.add_argument(
        "--candidate",
        default=CANDIDATE,
        help=f"the worse model folder for the canary (default {CANDIDATE}, built when missing)",
    )
    p.add_argument("--batch", type=int, default=50, help="items per hourly drop")
    p.add_argument("--canary", type=float, default=50.0, help="canary percent")
    p.add_argument("--author-accuracy", type=float, default=0.9)
    p.add_argument("--report-rate", type=float, default=0.1)
    p.add_argument("--audit-share", type=float, default=0.1)
    p.add_argument("--resample-windows", type=int, default=100)
    p.add_argument("--output", help="default runs/simulate/<time>")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="serve config overrides, e.g. model_dir=...")
    args = p.parse_args(argv)
    cfg = compose_config("serve", args.overrides)
    steps = missing_models(cfg, args.candidate)
    if steps:
        build_models(steps, cfg.paths.root_dir)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out = Path(args.output) if args.output else resolve_path(f"runs/simulate/{stamp}")
    result = simulate(
        cfg, candidate=args.candidate, out_dir=out, batch=args.batch, canary=args.canary,
        author_accuracy=args.author_accuracy, report_rate=args.report_rate,
        audit_share=args.audit_share, resample_windows=args.resample_windows, seed=args.seed,
    )  # fmt: skip
    print(format_result(result))
    print(f"report: {out / 'monitor.html'}, figures: {out / 'simulation.json'}")
    return 0
