"""`mltagger simulate-labels`: which review-queue order teaches the model fastest, per label.

Replays the labelled stream pool (data/pool/stream.json) prequentially for every strategy and
seed (mltagger.evaluation.replay): a simulated day of `--day-size` items is scored and decided,
simulated reviewers answer `--budget` queued items in the strategy's order, and the model (a
logistic head on frozen embeddings of the shipped encoder, `--model`) learns from the answers.

The pool is split in two by date. The default order is chosen on the first half (the strategy
with the highest mean auto-tag coverage whose every window kept precision >= 0.90, in every
seed); the targets, written down before the first run (docs/review.md), are read on the second
half, which nothing was chosen on. Each half's replay starts from the shipped recipe, without any
pool item.

Writes one folder (default runs/simulate-labels/<time>): settings, per-window figures of every
run, the learning curves (mean +- std over seeds, a plot), the labels each strategy needs to
reach oldest-first's final coverage, the stopping signal, and the targets met or missed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mltagger.core.config import load_data_config
from mltagger.core.errors import UserError
from mltagger.core.paths import project_root, resolve_path
from mltagger.data.pool import load_pool, pool_report
from mltagger.data.prepare import prepare_data
from mltagger.data.validation import sha256_file, verify_checksum
from mltagger.evaluation.replay import GATES, ReplaySettings, Reviewer, replay, windows
from mltagger.models.modelio import read_model_metadata
from mltagger.models.predict import Predictor
from mltagger.models.queue import STRATEGIES, stopping_point

# data/pool/stream.json as shipped (data/SOURCE.md); another pool file is checked by --pool-sha256.
POOL_SHA256 = "2cbd3d16efcf311cf1330a29da27dca7a9044c8c17a13c49dabe4096dab0d79b"
TARGETS = {
    "labels_share_max": 0.60,  # of oldest-first's labels, to reach its final coverage
    "quarter_gain_min": 0.15,  # coverage, last quarter minus first quarter, best strategy
    "precision_min": 0.92,  # of the windows the gains are read on
    "window_precision_min": 0.90,  # every window
}


def embed_all(model: str, texts: list[str], cache: Path) -> np.ndarray:
    """Sentence embeddings of the shipped encoder, cached by model and texts."""
    weights = [f for f in ("model.safetensors", "model.onnx") if (Path(model) / f).exists()]
    key = json.dumps(
        [sha256_file(Path(model) / f) for f in ("inference.json", *weights)] + [texts]
    ).encode()
    path = cache / f"embeddings_{hashlib.sha256(key).hexdigest()[:16]}.npy"
    if path.exists():
        return np.load(path)
    predictor = Predictor(model)
    out = []
    for start in tqdm(range(0, len(texts), 64), desc="embedding", unit="batch"):
        out.append(predictor.encode(texts[start : start + 64])[1])
    emb = np.vstack(out)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, emb)
    return emb


def load_negatives(path: Path, *, pool: list[dict], data_cfg) -> list[dict]:
    """The gate's negatives (placeholder until data.negatives lands)."""
    from mltagger.data.text import item_text

    rows = json.loads(Path(path).read_text())
    return [{**r, "text": item_text(r["title"], r["description"])} for r in rows]


def labels_to_reach(rows: list[dict], coverage: float, precision: float) -> int | None:
    """Labels spent by the first window at or above `coverage` with precision >= `precision`."""
    for r in rows:
        if r["coverage"] >= coverage and r["precision"] >= precision:
            return int(r["labels"])
    return None


def quarters(rows: list[dict]) -> tuple[dict, dict]:
    """Coverage and precision over the first and the last quarter of the windows' items."""
    q = max(1, len(rows) // 4)

    def pooled(part: list[dict]) -> dict:
        n = sum(r["items"] for r in part)
        auto = sum(r["auto"] for r in part)
        right = sum(r["precision"] * r["auto"] for r in part if r["auto"])
        return {"coverage": auto / n, "precision": right / auto if auto else float("nan")}

    return pooled(rows[:q]), pooled(rows[-q:])


def make_learner(name: str, strategy: str, seed: int, settings, data: dict, args, out: Path):
    """None (the replay's cheap head) or the warm-start fine-tune, its state kept under `out`
    so that a rerun with the same --output resumes it."""
    if args.learner == "head":
        return None
    from mltagger.training.warm_start import WarmStartLearner

    frozen = None
    if args.gate == "logistic":
        frozen = {"pool": data["pool_x"], "val": data["val"][0], "base": data["base"][0],
                  "negatives": data["negatives"], "other": data["other"]}  # fmt: skip
    texts = {**data["texts"], "base_y": data["base"][1]}
    folder = out / "warm_start" / f"{name}_{strategy}_seed{seed}"
    return WarmStartLearner(
        args.model, texts, settings, folder, frozen=frozen, threads=args.threads
    )


def run_half(
    name: str, pool_ix: np.ndarray, data: dict, args: argparse.Namespace, folder: Path
) -> dict[str, list[list[dict]]]:
    """Every strategy x seed on one half of the pool: {strategy: [windows of each seed]}."""
    out: dict[str, list[list[dict]]] = {}
    runs = [(s, seed) for s in args.strategies for seed in args.seeds]
    for strategy, seed in tqdm(runs, desc=f"replays ({name} half)", unit="run"):
        rng = np.random.default_rng(seed)
        # created_on order; ties (the same month) in a seeded shuffle
        arrival = pool_ix[np.lexsort((rng.permutation(len(pool_ix)), data["dates"][pool_ix]))]
        arrival = arrival.astype(int)
        settings = ReplaySettings(
            strategy,
            day_size=args.day_size,
            budget=args.budget,
            error_rate=args.error_rate,
            max_age_days=args.max_age_days,
            random_share=args.random_share,
            audit_per_day=args.audit_per_day,
            thresholds=args.thresholds,
            gate=args.gate,
            seed=seed,
        )
        reviewer = Reviewer(data["gold"], data["n_classes"], args.error_rate, seed)
        learner = make_learner(name, strategy, seed, settings, data, args, folder)
        log = replay(
            data["pool_x"], reviewer, data["base"], data["val"], settings, data["n_classes"],
            arrival=arrival, negatives=data.get("negatives"), other=data["other"],
            learner=learner,
        )  # fmt: skip
        rows = windows(log, data["gold"], args.window)
        for r in rows:  # the run's totals, on every row
            r["overdue_labels"], r["audit_labels"] = log.overdue_labels, log.audited
            if learner is not None:  # fine-tune passes this process ran (0: all resumed)
                r["passes_run"] = learner.trained_days
        out.setdefault(strategy, []).append(rows)
    return out


def choose_default(first: dict[str, list[list[dict]]]) -> tuple[str, bool]:
    """The first half's best strategy: the highest mean coverage over all windows and seeds
    among those whose every window in every seed kept precision >= 0.90 (True); when none did,
    the one whose worst window was best (False: no strategy met the floor)."""
    floor = TARGETS["window_precision_min"]

    def worst(runs: list[list[dict]]) -> float:
        return min((r["precision"] for rows in runs for r in rows if r["auto"]), default=1.0)

    ok = {
        s: float(np.mean([r["coverage"] for rows in runs for r in rows]))
        for s, runs in first.items()
        if worst(runs) >= floor
    }
    if ok:
        return max(sorted(ok), key=ok.__getitem__), True
    return max(sorted(first), key=lambda s: worst(first[s])), False


def read_targets(second: dict[str, list[list[dict]]], best: str) -> dict[str, Any]:
    """The targets on the second half (mean over seeds where a figure is per seed)."""
    old_final = [rows[-1] for rows in second["oldest"]]
    need, share = [], []
    for rows, base in zip(second[best], old_final, strict=True):
        n = labels_to_reach(rows, base["coverage"], TARGETS["precision_min"])
        need.append(n)
        share.append(None if n is None or not base["labels"] else n / base["labels"])
    every = {
        s: [
            labels_to_reach(rows, base["coverage"], TARGETS["precision_min"])
            for rows, base in zip(runs, old_final, strict=True)
        ]
        for s, runs in second.items()
    }
    gains, precs = [], []
    for rows in second[best]:
        first_q, last_q = quarters(rows)
        gains.append(last_q["coverage"] - first_q["coverage"])
        precs.append(last_q["precision"])
    worst = min(
        (r["precision"] for rows in second[best] for r in rows if r["auto"]), default=float("nan")
    )
    shares = [s for s in share if s is not None]
    return {
        "best": best,
        "oldest_final_coverage": [r["coverage"] for r in old_final],
        "oldest_labels": [r["labels"] for r in old_final],
        "best_labels_to_reach": need,
        "labels_to_reach_by_strategy": every,
        "labels_share": share,
        "labels_share_met": len(shares) == len(share)
        and max(shares) <= TARGETS["labels_share_max"],
        "quarter_gain": gains,
        "last_quarter_precision": precs,
        "quarter_gain_met": min(gains) >= TARGETS["quarter_gain_min"]
        and min(precs) >= TARGETS["precision_min"],
        "worst_window_precision": worst,
        "window_precision_met": worst >= TARGETS["window_precision_min"],
    }


def curves_plot(half: dict[str, list[list[dict]]], path: Path, title: str) -> None:
    """Coverage per window against labels spent, mean +- std over seeds, one line a strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for strategy, runs in half.items():
        n = min(len(rows) for rows in runs)
        cov = np.array([[r["coverage"] for r in rows[:n]] for rows in runs])
        labels = np.array([[r["labels"] for r in rows[:n]] for rows in runs]).mean(axis=0)
        ax.plot(labels, cov.mean(axis=0), label=strategy)
        ax.fill_between(labels, cov.mean(0) - cov.std(0), cov.mean(0) + cov.std(0), alpha=0.15)
    ax.set_xlabel("labels spent")
    ax.set_ylabel("auto-tag coverage per window of 100 items")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def check_args(args: argparse.Namespace) -> None:
    """Every bad option as one line before anything slow runs (the embedding, a replay)."""
    args.strategies = list(dict.fromkeys(args.strategies))  # a name given twice runs once
    for name in args.strategies:
        ReplaySettings(name, budget=args.budget, day_size=args.day_size,
                       error_rate=args.error_rate, audit_per_day=args.audit_per_day,
                       thresholds=args.thresholds, gate=args.gate)  # fmt: skip
    if "oldest" not in args.strategies:
        raise UserError("--strategies must include oldest: the targets are read against it")
    if args.window < 1:
        raise UserError(f"--window must be at least 1 item, not {args.window}")
    if not 0.0 <= args.random_share < 1.0:
        raise UserError(f"--random-share must be in [0, 1), not {args.random_share}")
    if args.max_age_days is not None and args.max_age_days <= 0:
        raise UserError(f"--max-age-days must be above 0, not {args.max_age_days}")
    if not args.seeds:
        raise UserError("--seeds needs at least one seed")
    args.halves = sorted(set(args.halves))
    if "first" not in args.halves and args.best not in args.strategies:
        raise UserError(
            "with --halves second, --best must name the order chosen on the first half, "
            f"one of --strategies ({', '.join(args.strategies)})"
        )
    if args.learner == "finetune" and args.gate == "as_other":
        raise UserError("--learner finetune takes --gate none or logistic, not as_other")
    pool = resolve_path(args.pool, project_root())
    if not pool.exists():
        raise UserError(f"pool file {args.pool} not found")
    verify_checksum(pool, args.pool_sha256)


def load_data(args: argparse.Namespace) -> dict:
    """The pool (checked against every training source and the fresh set), the shipped
    recipe's train and val splits, and their embeddings under the shipped encoder."""
    labels, _ = read_model_metadata(args.model)  # one line naming `make train` when missing
    data_cfg = load_data_config(args.data_config)
    tags = list(data_cfg.tags)
    root = project_root()
    prepared = prepare_data(data_cfg, root)
    pool_path = resolve_path(args.pool, root)
    pool = load_pool(pool_path, tags, report=pool_report(pool_path, data_cfg, root))
    col = {t: i for i, t in enumerate(labels)}
    used = {it["tag"] for k in ("train", "val") for it in prepared.splits[k]}
    used |= {it["tag"] for it in pool}
    if used - set(col):
        raise UserError(
            f"{args.model} has no class for {sorted(used - set(col))} (its tags: {labels}): "
            "give the model trained on this data config"
        )
    cache = resolve_path("runs/simulate-labels/cache", root)
    texts = {k: [it["text"] for it in prepared.splits[k]] for k in ("train", "val")}
    emb = embed_all(args.model, texts["train"] + texts["val"] + [it["text"] for it in pool], cache)
    n_train, n_val = len(texts["train"]), len(texts["val"])
    negatives = None
    if args.gate != "none":
        rows = load_negatives(resolve_path(args.negatives, root), pool=pool, data_cfg=data_cfg)
        negatives = embed_all(args.model, [it["text"] for it in rows], cache)
    return {
        "texts": {"pool": [it["text"] for it in pool], "val": texts["val"], "base": texts["train"]},
        "negatives": negatives,
        "other": col.get("other"),
        "n_classes": len(labels),
        "labels": labels,
        "base": (emb[:n_train], np.array([col[it["tag"]] for it in prepared.splits["train"]])),
        "val": (
            emb[n_train : n_train + n_val],
            np.array([col[it["tag"]] for it in prepared.splits["val"]]),
        ),
        "pool_x": emb[n_train + n_val :],
        "gold": np.array([col[it["tag"]] for it in pool]),
        "dates": np.array([str(it["created_on"])[:10] for it in pool]),
        "pool_sha256": verify_checksum(resolve_path(args.pool, root), args.pool_sha256),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mltagger simulate-labels", description=__doc__.split("\n")[0])
    p.add_argument("--pool", default="data/pool/stream.json")
    p.add_argument("--pool-sha256", default=POOL_SHA256, help="the pool file's expected sha256")
    p.add_argument("--model", default="models/latest", help="the shipped model (its encoder)")
    p.add_argument("--data-config", default="with_packages", help="the shipped recipe's data")
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), metavar="NAME")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--budget", type=int, default=8, help="labels a day")
    p.add_argument("--day-size", type=int, default=30, help="items a day")
    p.add_argument("--error-rate", type=float, default=0.0, help="reviewers' error rate")
    p.add_argument(
        "--max-age-days",
        type=float,
        default=None,
        help="overdue items first (default off: with more queued a day than the budget, it "
        "turns every strategy into oldest-first)",
    )
    p.add_argument("--random-share", type=float, default=0.1)
    p.add_argument("--window", type=int, default=100, help="items per reported window")
    p.add_argument(
        "--audit-per-day", type=int, default=0,
        help="labels a day on random auto-tagged items (the audit sample), out of the budget",
    )  # fmt: skip
    p.add_argument(
        "--thresholds", choices=("val", "stream"), default="val",
        help="val: on the val split and the reviewed items; stream: on the pool's own labels, "
        "weighted by their chance of being asked (val until a tag has enough)",
    )  # fmt: skip
    p.add_argument(
        "--gate", default="none", metavar="|".join(GATES),
        help="how out-of-scope items are told apart: none (the head's other class), as_other "
        "(the negatives join it), logistic (a separate in-scope head; models.rule.with_gate)",
    )  # fmt: skip
    p.add_argument(
        "--negatives", default="data/negatives/registry.json",
        help="real texts of no topic that train the gate (data/SOURCE.md)",
    )  # fmt: skip
    p.add_argument(
        "--halves", nargs="+", choices=("first", "second"), default=["first", "second"],
        help="first: where the default order is chosen; second: where the targets are read "
        "(read once); `first` alone to make choices",
    )  # fmt: skip
    p.add_argument(
        "--best", metavar="NAME",
        help="the order chosen on the first half, when only the second half runs",
    )  # fmt: skip
    p.add_argument(
        "--learner", choices=("head", "finetune"), default="head",
        help="head: a logistic head on frozen embeddings (every strategy x seed in minutes); "
        "finetune: the shipped model keeps training each day (one seed, the chosen order and "
        "oldest; resumes from --output)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="torch threads (finetune)")
    p.add_argument("--output", help="default runs/simulate-labels/<time>")
    args = p.parse_args(argv)
    check_args(args)
    data = load_data(args)
    # by date; items of the same month in a fixed seeded order, so the boundary month is split
    # at random, never by id (the second stage of the pool's draw has the higher ids)
    shuffle = np.random.default_rng(2026).permutation(len(data["dates"]))
    order = np.lexsort((shuffle, data["dates"]))
    halves = {"first": order[: len(order) // 2], "second": order[len(order) // 2 :]}
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out = Path(args.output) if args.output else resolve_path(f"runs/simulate-labels/{stamp}")
    out.mkdir(parents=True, exist_ok=True)
    if "first" in args.halves:
        first = run_half("first", halves["first"], data, args, out)
        best, meets_floor = choose_default(first)
    else:
        first, best, meets_floor = {}, args.best, None
    if args.halves == ["first"]:
        curves_plot(first, out / "curves_first.png", "first half of the pool by date")
        result = {"settings": vars(args), "pool_sha256": data["pool_sha256"],
                  "chosen_on_first_half": best, "chosen_meets_precision_floor": meets_floor,
                  "first": first}  # fmt: skip
        (out / "simulation.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
        print(format_half(first, best, meets_floor))
        return 0
    second = run_half("second", halves["second"], data, args, out)
    targets = read_targets(second, best)
    stops = {s: [stopping_point(rows) for rows in runs] for s, runs in second.items()}
    for name, half in (("first", first), ("second", second)):
        if not half:
            continue
        curves_plot(half, out / f"curves_{name}.png", f"{name} half of the pool by date")
    result = {
        "settings": {k: v for k, v in vars(args).items()},
        "pool_sha256": data["pool_sha256"],
        "halves": {
            k: [min(data["dates"][v].tolist()), max(data["dates"][v].tolist()), len(v)]
            for k, v in halves.items()
        },
        "chosen_on_first_half": best,
        "chosen_meets_precision_floor": meets_floor,
        "targets": targets,
        "stopping_point_labels": stops,
        "first": first,
        "second": second,
    }
    (out / "simulation.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(format_result(result))
    print(f"figures: {out / 'simulation.json'}, curves: {out / 'curves_second.png'}")
    return 0


def format_half(half: dict[str, list[list[dict]]], best: str, meets_floor: bool) -> str:
    """One half's per-strategy figures: mean coverage, precision of all auto-tags, worst
    window (means over seeds)."""
    lines = [f"chosen: {best} (every window >= 0.90: {'yes' if meets_floor else 'no'})"]
    for strategy, runs in half.items():
        cov = np.mean([r["coverage"] for rows in runs for r in rows])
        auto = sum(r["auto"] for rows in runs for r in rows)
        right = sum(r["precision"] * r["auto"] for rows in runs for r in rows if r["auto"])
        worst = min((r["precision"] for rows in runs for r in rows if r["auto"]), default=np.nan)
        lines.append(
            f"{strategy:16s} coverage {cov:.3f}  precision {right / max(auto, 1):.3f}  "
            f"worst window {worst:.3f}  last window cov "
            f"{np.mean([rows[-1]['coverage'] for rows in runs]):.3f}"
        )
    return "\n".join(lines)


def format_result(result: dict) -> str:
    """The per-strategy table on the second half and the targets, for the terminal."""
    t = result["targets"]
    lines = [f"default order chosen on the first half: {result['chosen_on_first_half']}", ""]
    lines.append(
        f"{'strategy':16s} {'final cov':>10s} {'labels':>7s} {'cov/100 labels':>15s} "
        f"{'labels to oldest-first final cov (per seed)':>44s}"
    )
    for strategy, runs in result["second"].items():
        final = np.mean([rows[-1]["coverage"] for rows in runs])
        start = np.mean([rows[0]["coverage"] for rows in runs])
        spent = np.mean([rows[-1]["labels"] for rows in runs])
        per100 = 100 * (final - start) / spent if spent else float("nan")
        reach = t["labels_to_reach_by_strategy"][strategy]
        lines.append(
            f"{strategy:16s} {final:10.3f} {spent:7.0f} {100 * per100:14.2f}pt {reach!s:>44s}"
        )
    lines += [
        "",
        f"labels to reach oldest-first's final coverage: {t['best_labels_to_reach']} "
        f"(share {t['labels_share']}; target <= 0.60: "
        f"{'met' if t['labels_share_met'] else 'missed'})",
        f"coverage gain, last quarter vs first: {[round(g, 3) for g in t['quarter_gain']]} at "
        f"precision {[round(p, 3) for p in t['last_quarter_precision']]} (target >= 0.15 at "
        f">= 0.92: {'met' if t['quarter_gain_met'] else 'missed'})",
        f"worst window precision: {t['worst_window_precision']:.3f} (target >= 0.90: "
        f"{'met' if t['window_precision_met'] else 'missed'})",
    ]
    return "\n".join(lines)
