"""Cross-validated choices (`make cv`): k folds over train + val, test and fresh untouched.

Why: the test split has 5-10 items for four tags, so a choice read off it is mostly noise, and a
per-tag threshold chosen on ~30 validation items of a tag promises nothing. Cross-validation gives
every train+val item a prediction from a model that never saw it (out-of-fold predictions), which
is several times more held-out items per tag to choose operating points on, and a mean ± std of
every headline figure to compare configs with.

Each fold trains exactly as `make train` does (`mltagger.training.loop.train`, same early stopping
and temperature, fitted on an inner validation part of the fold's training items). The label-issue
layer is rebuilt inside each fold from that fold's training part only, so no fold is scored on
items whose labels were corrected with its own scores in view. Near-duplicate groups stay in one
fold. Repeats (`cv.seeds`) reshuffle the folds.

Writes runs/cv/<time>/: one run folder per fold, `oof_predictions.jsonl`, `operating_points.json`
(per-tag thresholds from the out-of-fold predictions), `calibration.json` (temperature against
vector scaling on held-out folds), `summary.json` and `summary.md` (mean ± std).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from mltagger.core.errors import DataError
from mltagger.core.runinfo import write_run_info
from mltagger.core.tracking import wandb_settings
from mltagger.data.corrections import apply_layer
from mltagger.data.prepare import PreparedData, prepare_data
from mltagger.data.split import group_units, stratified_group_split
from mltagger.evaluation.metrics import Metric
from mltagger.models.predict import TorchPredictor
from mltagger.training.build import gate_negatives
from mltagger.training.config_rules import check_cv_config
from mltagger.training.cv_results import (
    calibration_comparison,
    decision_figures,
    mean_std,
    render_summary,
    summarise,
)
from mltagger.training.fingerprint import config_fingerprint
from mltagger.training.gate import cross_fitted_in_scope
from mltagger.training.label_issues import build_layer
from mltagger.training.loop import train

log = logging.getLogger(__name__)

OOF_FILE = "oof.json"  # fingerprint, labels and the out-of-fold predictions
OPERATING_POINTS_FILE = "operating_points.json"


def check_folds(folds: int, items: Sequence[dict]) -> None:
    """A fold count that can work on these items, else DataError (one line, exit 2)."""
    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 2:
        raise DataError(f"cv.folds={folds!r}: cross-validation needs at least 2 folds")
    counts = Counter(it["tag"] for it in items)
    tag, smallest = min(counts.items(), key=lambda kv: (kv[1], kv[0]))
    if folds > smallest:
        raise DataError(
            f"cv.folds={folds}: more folds than the smallest tag has items "
            f"({tag}: {smallest}); use cv.folds<={smallest}"
        )


def make_folds(
    items: Sequence[dict],
    folds: int,
    seed: int,
    groups: Sequence[Sequence[int]] = (),
    date_sources: Collection[str] = (),
) -> list[list[int]]:
    """Ids of each fold: stratified by tag, near-duplicate groups kept whole, deterministic.

    Within each tag the units (groups and single items) are shuffled with (seed, tag) and each
    goes to the fold holding the fewest items of that tag so far. Units whose rows all come from
    `date_sources` (a source with `folds: date`, the stream pool) are not shuffled: per tag they
    are cut, in date order, into `folds` contiguous blocks of equal size, so a held-out fold is
    one period scored by models trained on the others - the seed does not move them.
    """
    date_sources = set(date_sources)
    by_id = {it["id"]: it for it in items}
    by_tag = group_units(items, groups)
    out: list[list[int]] = [[] for _ in range(folds)]
    for tag in sorted(by_tag):
        tag_units = sorted(by_tag[tag], key=lambda u: u[0])
        dated = [u for u in tag_units if all(by_id[i].get("source") in date_sources for i in u)]
        dated_ids = {u[0] for u in dated}
        tag_units = [u for u in tag_units if u[0] not in dated_ids]
        filled = [0] * folds
        dated.sort(key=lambda u: (min(str(by_id[i].get("created_on", "")) for i in u), u[0]))
        total, before = sum(len(u) for u in dated), 0
        for u in dated:
            k = min(folds - 1, before * folds // total)
            before += len(u)
            filled[k] += len(u)
            out[k].extend(u)
        random.Random(f"{seed}:{tag}").shuffle(tag_units)
        for u in sorted(tag_units, key=len, reverse=True):  # big groups first, then balance
            k = min(range(folds), key=lambda f: (filled[f], f))
            filled[k] += len(u)
            out[k].extend(u)
    return [sorted(f) for f in out]


def date_fold_sources(data: PreparedData) -> set[str]:
    """Sources whose rows `make cv` folds by date (`folds: date` in the data config)."""
    return {s["name"] for s in data.sources if s.get("folds") == "date"}


def fold_data(
    base: PreparedData, held_ids: set, *, inner_val_size: float, seed: int, fold: int, cfg
) -> PreparedData:
    """The fold as a PreparedData: train/val from the other folds, test = the held-out fold.

    The label-issue layer (if the data config uses one) is built from this fold's train part and
    applied to it; val and the held-out fold keep their labels.
    """
    pool = base.splits["train"] + base.splits["val"]
    rest = [it for it in pool if it["id"] not in held_ids]
    weak = train_only_sources(base)
    held = [it for it in pool if it["id"] in held_ids and it.get("source") not in weak]
    # Held-out rows of train-only (weak) sources are scored in the fresh slot: their
    # out-of-fold probabilities feed the label-issue search, never a figure or a threshold.
    held_weak = [it for it in pool if it["id"] in held_ids and it.get("source") in weak]
    rest_ids = {it["id"] for it in rest}
    inner = stratified_group_split(
        rest,
        val_size=inner_val_size,
        test_size=0.0,
        seed=seed,
        groups=[
            [i for i in g if i in rest_ids]
            for g in base.near_duplicate_groups
            if sum(i in rest_ids for i in g) > 1
        ],
    )
    split_config = {"cv_fold": fold, "cv_seed": seed, "inner_val_size": inner_val_size}
    data = replace(
        base,
        splits={"train": inner["train"], "val": inner["val"], "test": held},
        split_config=split_config,
        label_noise={},
        fresh=held_weak,
        fresh_manifest={"held_out_weak_rows": len(held_weak)} if held_weak else {},
    )
    noise = cfg.data.get("label_noise")
    if noise and noise.get("action", "keep") != "keep":
        # TF-IDF probabilities, never label_noise.oof: the `make cv` predictions of this fold's
        # train rows come from models that were trained on this fold's held-out rows.
        layer = build_layer(data, noise, use_oof=False)
        splits, summary = apply_layer(
            data.splits,
            layer,
            action=noise.action,
            sources=list(noise.sources),
            weight=float(noise.get("weight", 1.0)),
            data_sources=data.sources,
            data_sha256=data.data_sha256,
            split_config=split_config,
        )
        data = replace(data, splits=splits, label_noise={**summary, "built_in_fold": True})
    return data


def train_only_sources(data: PreparedData) -> set[str]:
    """Sources that go to train whole (`split: train`): weak rows that no figure is computed on."""
    return {s["name"] for s in data.sources if s.get("split") == "train"}


def _read_scores(path: Path, labels: Sequence[str]) -> tuple[list, np.ndarray]:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return rows, np.array([[r["scores"][t] for t in labels] for r in rows], dtype=float)


def run_cv(cfg: DictConfig) -> dict:
    """Train every fold, gather out-of-fold predictions, choose per-tag thresholds, summarise."""

    check_cv_config(cfg)
    ccfg = cfg.cv
    out_dir = Path(cfg.paths.output_dir)
    seeds = [int(s) for s in (ccfg.seeds or [0])]
    with open_dict(cfg):
        cfg.cv_overrides = _command_line_overrides()
    base = prepare_data(cfg.data, cfg.paths.root_dir, rejects_dir=out_dir, apply_label_noise=False)
    pool = base.splits["train"] + base.splits["val"]
    check_folds(ccfg.folds, pool)
    source_of = {it["id"]: it.get("source") for it in pool}
    labels = base.label_names()
    fingerprint = config_fingerprint(cfg, base)
    write_run_info(out_dir, cfg, base.manifest(), {"cv_fingerprint": fingerprint})
    t_start = time.perf_counter()
    oof: list[dict] = []
    fold_metrics: list[dict] = []
    calib: list[dict] = []
    n_runs = len(seeds) * ccfg.folds
    for s_i, seed in enumerate(seeds):
        folds = make_folds(
            pool, ccfg.folds, seed, base.near_duplicate_groups, date_fold_sources(base)
        )
        for k, held in enumerate(folds):
            run_no = s_i * ccfg.folds + k + 1
            log.info(
                "cv run %d/%d: seed %d, fold %d (%d held out)", run_no, n_runs, seed, k, len(held)
            )
            fold_dir = out_dir / f"seed{seed}_fold{k}"
            fdata = fold_data(
                base,
                set(held),
                inner_val_size=float(ccfg.inner_val_size),
                seed=seed,
                fold=k,
                cfg=cfg,
            )
            fcfg = cfg.copy()
            with open_dict(fcfg):
                fcfg.paths.output_dir = str(fold_dir)
                fcfg.update_latest = False
                fcfg.eval.behavior = False
                fcfg.eval.decision = "global"  # the fold's own rule; thresholds come from OOF
                fcfg.eval.gate_threshold = None  # chosen on the out-of-fold rows too
                if fcfg.logger.get("wandb"):
                    fcfg.logger.wandb.group = f"cv-{out_dir.name}"
                    fcfg.logger.wandb.job_type = "cv_fold"
                    fcfg.logger.wandb.log_model = False
            metrics = train(fcfg, data=fdata, checked=True)  # check_cv_config ran above
            fold_metrics.append({"seed": seed, "fold": k, **metrics})
            for part, weak in (("test", False), ("fresh", True)):
                path = fold_dir / part / "predictions.jsonl"
                if weak and not fdata.fresh:
                    continue
                rows, probs = _read_scores(path, labels)
                gold = {it["id"]: it["tag"] for it in fdata.fresh} if weak else None
                for r, p in zip(rows, probs, strict=True):
                    oof.append(
                        {
                            "id": r["id"],
                            "source": source_of.get(r["id"]),
                            "gold": gold[r["id"]] if weak else r["gold"],
                            "seed": seed,
                            "fold": k,
                            "scores": dict(zip(labels, map(float, p), strict=True)),
                            **({"weak": True} if weak else {}),
                        }
                    )
            calib.append(calibration_comparison(fold_dir))
    negatives = gate_negatives(cfg)
    if negatives is not None:  # the gate's cross-fitted scores: the gate threshold's evidence
        for r, p in zip(
            oof,
            cross_fitted_in_scope(oof, pool, negatives, base.fallback_tag, int(cfg.seed)),
            strict=True,
        ):
            r["in_scope"] = p
    seconds = time.perf_counter() - t_start
    scored = [r for r in oof if not r.get("weak")]
    summary = summarise(cfg, labels, base, scored, fold_metrics, calib, seconds, fingerprint)
    summary["num_oof_weak"] = len(oof) - len(scored)
    if ccfg.get("score_heldout", False):
        summary["heldout"] = score_heldout(
            base, labels, sorted(out_dir.glob("seed*_fold*")), summary["operating_points"]
        )
    (out_dir / OOF_FILE).write_text(
        json.dumps(
            {
                "fingerprint": fingerprint,
                "data_sha256": base.data_sha256,
                "labels": labels,
                "fallback_tag": base.fallback_tag,
                "folds": int(ccfg.folds),
                "seeds": seeds,
                "overrides": summary["overrides"],
                "oof": oof,
            }
        )
        + "\n"
    )
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out_dir / OPERATING_POINTS_FILE).write_text(
        json.dumps(summary["operating_points"], indent=1) + "\n"
    )
    (out_dir / "summary.md").write_text(render_summary(summary))
    log_cv_to_wandb(cfg, summary, out_dir)
    print(render_summary(summary))
    print(f"CV folder: {out_dir}")
    return summary


def _command_line_overrides() -> list[str]:

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # called outside a Hydra app (tests)
        return []


def log_cv_to_wandb(cfg: DictConfig, summary: dict, out_dir: Path) -> None:
    """The CV summary as its own W&B run (job type cv) in the folds' group: mean/std per figure,
    the per-tag thresholds table and the out-of-fold file as an artifact."""

    settings = wandb_settings(cfg)
    if settings is None:
        return
    import wandb

    settings.update(group=f"cv-{out_dir.name}", job_type="cv", name=f"cv-{out_dir.name}")
    run = wandb.init(project=cfg.logger.wandb.project, config={"cv": dict(cfg.cv)}, **settings)
    try:
        flat = {}
        for block in ("global_rule", "per_tag_rule"):
            for key, v in summary[block].items():
                if v.get("mean") is not None:
                    flat[f"cv/{block}/{key}/mean"] = v["mean"]
                    flat[f"cv/{block}/{key}/std"] = v["std"]
        run.summary.update({**flat, "cv/seconds": summary["seconds"]})
        op = summary["operating_points"]["per_tag"]
        run.log(
            {
                "cv/operating_points": wandb.Table(
                    columns=[
                        "tag",
                        "num_predicted",
                        "threshold",
                        "num_auto",
                        "precision",
                        "own_lower",
                        "pooled_lower",
                    ],
                    data=[
                        [
                            t,
                            r["num_predicted"],
                            r["threshold"],
                            r["num_auto"],
                            r["precision"],
                            r["own_lower"],
                            r["pooled_lower"],
                        ]
                        for t, r in op.items()
                    ],
                )
            }
        )
        art = wandb.Artifact(f"oof-{out_dir.name}", type="evaluation")
        art.add_file(str(out_dir / OOF_FILE))
        art.add_file(str(out_dir / "summary.json"))
        run.log_artifact(art)
    finally:
        run.finish()


def score_heldout(
    base: PreparedData, labels: Sequence[str], fold_dirs: Sequence[Path], points: dict
) -> dict:
    """Test and fresh figures of every fold model under the out-of-fold per-tag thresholds.

    Computed after every choice is made, so these are reports, not selectors: mean ± std over
    the fold models (each trained on (k-1)/k of train + val, so a little weaker than the final
    model) says how a recipe does on 2020 test items and on 2023-2026 items, with its spread.
    """
    from sklearn.metrics import f1_score

    sets = {"test": base.splits["test"], "fresh": base.fresh}
    per: dict[str, list[dict]] = {name: [] for name, items in sets.items() if items}
    for fold_dir in fold_dirs:
        predictor = TorchPredictor(fold_dir / "model")
        for name in per:
            items = sets[name]
            probs = predictor.predict_proba([it["text"] for it in items])
            gold = [it["tag"] for it in items]
            fig = decision_figures(gold, probs, labels, points["thresholds"], base.fallback_tag)
            topics = [i for i, g in enumerate(gold) if g != base.fallback_tag]
            fig[Metric.TOPIC_F1_WEIGHTED] = float(
                f1_score(
                    [gold[i] for i in topics],
                    [labels[int(probs[i].argmax())] for i in topics],
                    labels=[t for t in labels if t != base.fallback_tag],
                    average="weighted",
                    zero_division=0,
                )
            )
            per[name].append(fig)
    return {
        name: {k: mean_std([f.get(k) for f in figs]) for k in sorted(figs[0])}
        for name, figs in per.items()
    }
