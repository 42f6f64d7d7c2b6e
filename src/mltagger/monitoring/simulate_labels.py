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

import numpy as np
from tqdm.auto import tqdm

from mltagger.core.config import load_data_config
from mltagger.core.errors import UserError
from mltagger.core.paths import project_root, resolve_path
from mltagger.data.negatives import load_checked_negatives
from mltagger.data.pool import load_pool, pool_report
from mltagger.data.prepare import prepare_data
from mltagger.data.validation import sha256_file, verify_checksum
from mltagger.evaluation.replay import GATES, ReplaySettings, Reviewer, replay, windows
from mltagger.models.modelio import read_model_metadata
from mltagger.models.predict import Predictor
from mltagger.models.queue import STRATEGIES, stopping_point
from mltagger.monitoring.label_figures import (
    choose_default,
    curves_plot,
    format_half,
    format_result,
    read_targets,
)
from mltagger.training.warm_start import WarmStartLearner

# data/pool/stream.json as shipped (data/SOURCE.md); another pool file is checked by --pool-sha256.
POOL_SHA256 = "2cbd3d16efcf311cf1330a29da27dca7a9044c8c17a13c49dabe4096dab0d79b"


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


def make_learner(name: str, strategy: str, seed: int, settings, data: dict, args, out: Path):
    """None (the replay's cheap head) or the warm-start fine-tune, its state kept under `out`
    so that a rerun with the same --output resumes it."""
    if args.learner == "head":
        return None
    frozen = None
    if args.gate == "logistic":
        frozen = {"pool": data["pool_x"], "val": data["val"][0], "base": data["base"][0],
                  "negatives": data["negatives"], "other": data["other"]}  # fmt: skip
    texts = {**data["texts"], "base_y": data["base"][1]}
    if args.gate == "as_other":  # the negatives join the rehearsal rows, as `other`
        texts["base"] = texts["base"] + data["negative_texts"]
        texts["base_y"] = np.concatenate(
            [texts["base_y"], np.full(len(data["negative_texts"]), data["other"])]
        )
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
            precision_target=args.precision_target,
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
        rows = windows(log, data["gold"], args.window, also=data["also"])
        for r in rows:  # the run's totals, on every row
            r["overdue_labels"], r["audit_labels"] = log.overdue_labels, log.audited
            if learner is not None:  # fine-tune passes this process ran (0: all resumed)
                r["passes_run"] = learner.trained_days
        out.setdefault(strategy, []).append(rows)
    return out


def check_args(args: argparse.Namespace) -> None:
    """Every bad option as one line before anything slow runs (the embedding, a replay)."""
    args.strategies = list(dict.fromkeys(args.strategies))  # a name given twice runs once
    for name in args.strategies:
        ReplaySettings(name, budget=args.budget, day_size=args.day_size,
                       error_rate=args.error_rate, audit_per_day=args.audit_per_day,
                       precision_target=args.precision_target,
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
    pool = resolve_path(args.pool, project_root())
    if not pool.exists():
        raise UserError(f"pool file {args.pool} not found")
    verify_checksum(pool, args.pool_sha256)


def load_data(args: argparse.Namespace) -> dict:
    """The pool (checked against every training source and the fresh set), the shipped
    recipe's train and val splits, and their embeddings under the shipped encoder."""
    labels, inference = read_model_metadata(args.model)  # one line naming `make train`
    data_cfg = load_data_config(args.data_config)
    tags = list(data_cfg.tags)
    root = project_root()
    pool_path = resolve_path(args.pool, root)
    trains_on_pool = [
        s.name
        for s in data_cfg.sources
        if resolve_path(s.path, root).resolve() == pool_path.resolve()
    ]
    if trains_on_pool:
        raise UserError(
            f"--data-config {args.data_config} trains on the pool it would replay (source "
            f"{trains_on_pool[0]!r}): replay from a recipe without it, e.g. --data-config "
            'with_packages and a model trained with `make train ARGS="data=with_packages"`'
        )
    prepared = prepare_data(data_cfg, root)
    model_data = inference.extra.get("data_sha256")
    if model_data is not None and model_data != prepared.data_sha256:
        raise UserError(
            f"{args.model} was trained on other data (sha256 {model_data[:12]}…) than "
            f"--data-config {args.data_config} ({prepared.data_sha256[:12]}…): give the model "
            f'trained on it (`make train ARGS="data={args.data_config}"`)'
        )
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
    negatives, negative_texts = None, []
    if args.gate != "none":
        rows = load_checked_negatives(resolve_path(args.negatives, root), data_cfg, root, pool_path)
        negative_texts = [it["text"] for it in rows]
        negatives = embed_all(args.model, negative_texts, cache)
    return {
        "texts": {"pool": [it["text"] for it in pool], "val": texts["val"], "base": texts["train"]},
        "negatives": negatives,
        "negative_texts": negative_texts,
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
        "also": np.array([col.get(it.get("also") or "", -1) for it in pool]),
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
        "--precision-target", type=float, default=0.92,
        help="the precision a tag's threshold must keep on the labelled items it is chosen on",
    )  # fmt: skip
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
