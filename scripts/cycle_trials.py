"""The cycle's safety trials (docs/cycle.md, outcomes stated there before the runs).

From one shared start (the first `--base-days` days of the pool replayed clean, no cycle yet),
each trial copies the start and goes on with `mltagger simulate-cycle`:

- poison (5: seeds 0-2 one reviewer's labels of the day shuffled, seeds 3-4 30% of the day's
  labels flipped): the day after the start is poisoned, the cycle runs on it, one more day
  follows; a cycle that trained on poisoned labels and is still open at the end is reported
  as undecided (followed further by hand, said in docs/cycle.md);
- clean (5): different seeds of the authors, reviewers' order and the warm start; the first
  challenger after the start (one cycle) is followed for 6 days: time for shadow, a canary of
  200 authored items and two watch windows;
- regression (2): a worse model is force-promoted: one that applies every tag above 0.2, and
  one whose NLP and computer-vision head rows are swapped.

    python scripts/cycle_trials.py --champion runs/simulate-cycle/champion/model \\
        --output runs/cycle-trials

Writes <output>/trials.json and trials.md; resumable (finished trials are read back).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from mltagger.cycle.simulate import main as simulate

BASE_ARGS = ["--days", "12", "--cycle-labels", "120"]


def run(folder: Path, champion: str, *extra: str) -> dict:
    simulate(["--champion", champion, "--output", str(folder), *BASE_ARGS, *extra])
    return json.loads((folder / "report.json").read_text())


def trial(out: Path, base: Path, name: str, champion: str, *extra: str) -> dict:
    folder = out / name
    done = folder / "trial.json"
    if done.is_file():
        return json.loads(done.read_text())
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(base, folder)
    started = time.perf_counter()
    report = run(folder, champion, *extra)
    result = {
        "trial": name,
        "args": list(extra),
        "cycles": report["cycles"],
        "poison": report["poison"],
        "promotions": report["promotions"],
        "rollbacks": report["rollbacks"],
        "days": [
            {k: d[k] for k in ("day", "coverage", "precision", "reviews", "cycle")}
            for d in report["days"]
        ],
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    done.write_text(json.dumps(result, indent=1, default=str))
    return result


def verdict(r: dict) -> str:
    name = r["trial"]
    if name.startswith("poison"):
        trained = [p for p in r["poison"] if p["poisoned_labels_trained"]]
        bad = [p for p in trained if p["outcome"] == "promoted"]
        if any(p["outcome"] is None for p in trained):
            return "UNDECIDED: a cycle trained on poisoned labels is still open"
        stopped = sorted({q for c in r["cycles"] for q in c["quarantined"]})
        gates = sorted({g for c in r["cycles"] for g in c["failed_gates"]})
        return ("POISON PROMOTED" if bad else "stopped") + (
            f" (quarantined {stopped}; gates tripped {gates})"
        )
    if name.startswith("clean"):
        promoted = [c for c in r["cycles"] if c["outcome"] == "promoted"]
        why = "; ".join(
            f"cycle {c['id']}: {c['outcome'] or c['step']} {c['failed_gates']}" for c in r["cycles"]
        )
        return ("promoted" if promoted else "not promoted") + f" ({why})"
    windows = [c for c in r["cycles"] if c["outcome"] == "rolled_back"]
    return ("rolled back" if windows else "NOT rolled back") + f" ({r['cycles'][-1]['why']})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--champion", required=True)
    p.add_argument("--output", default="runs/cycle-trials")
    p.add_argument("--base-days", type=int, default=3)
    p.add_argument("--only", nargs="*", help="trial kinds: poison regression clean")
    args = p.parse_args()
    out = Path(args.output)
    base = out / "base"
    if not (base / "report.json").is_file():
        run(
            base,
            args.champion,
            "--stop-after-day",
            str(args.base_days - 1),
            "--cycle-labels",
            "100000",
        )
    poison_day = args.base_days
    kinds = args.only or ["poison", "regression", "clean"]
    results = []
    for kind in kinds:
        seeds = [0, 1] if kind == "regression" else range(5)
        for seed in seeds:
            days = {"poison": 2, "regression": 3, "clean": 6}[kind]
            extra = [
                "--seed",
                str(seed),
                "--stop-after-day",
                str(poison_day + days - 1),
                f"cycle.train.seed={seed}",
            ]
            if kind == "poison":
                extra += ["--poison", f"{'shuffle' if seed < 3 else 'flip'}:{poison_day}"]
            if kind == "clean":  # the first challenger after the start, followed to its end
                extra += ["--max-cycles", "1"]
            if kind == "regression":
                # 0: every tag above 0.2 (stated before the runs); 1: two tags' head rows
                # swapped, added after the first showed no paired regression (docs/cycle.md)
                extra += [
                    "--regress-at",
                    str(poison_day),
                    "--cycle-labels",
                    "100000",
                    "--regress-kind",
                    "low" if seed == 0 else "swap",
                ]
            r = trial(out, base, f"{kind}-{seed}", args.champion, *extra)
            r["verdict"] = verdict(r)
            print(f"{r['trial']}: {r['verdict']}", flush=True)
            results.append(r)
            (out / "trials.json").write_text(json.dumps(results, indent=1, default=str))
    lines = ["| trial | verdict | wall s |", "|---|---|---:|"]
    lines += [f"| {r['trial']} | {r['verdict']} | {r['wall_seconds']:.0f} |" for r in results]
    (out / "trials.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
