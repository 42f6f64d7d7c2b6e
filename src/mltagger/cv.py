"""Cross-validated choices (`make cv`): k folds over train + val, test and fresh untouched.

Why: the test split has 5-10 items for four tags, so a choice read off it is mostly noise, and a
per-tag threshold chosen on ~30 validation items of a tag promises nothing. Cross-validation gives
every train+val item a prediction from a model that never saw it (out-of-fold predictions), which
is several times more held-out items per tag to choose operating points on, and a mean ± std of
every headline figure to compare configs with.

Each fold trains exactly as `make train` does (`mltagger.train.train`, same early stopping and
temperature, fitted on an inner validation part of the fold's training items). The label-issue
layer is rebuilt inside each fold from that fold's training part only, so no fold is scored on
items whose labels were corrected with its own scores in view. Near-duplicate groups stay in one
fold. Repeats (`cv.seeds`) reshuffle the folds.

Writes runs/cv/<time>/: one run folder per fold, `oof_predictions.jsonl`, `operating_points.json`
(per-tag thresholds from the out-of-fold predictions), `calibration.json` (temperature against
vector scaling on held-out folds), `summary.json` and `summary.md` (mean ± std).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from mltagger.data import (
    DataError,
    PreparedData,
    group_units,
    prepare_data,
    stratified_group_split,
)
from mltagger.evaluate import (
    Metric,
    apply_threshold,
    choose_tag_thresholds,
    scope_report,
)

log = logging.getLogger(__name__)

# The headline figures a CV summary reports (keys of the fold runs' flat metrics, without split).
HEADLINE = (
    Metric.F1_WEIGHTED,
    Metric.TOPIC_F1_WEIGHTED,
    Metric.AUTO_PRECISION,
    Metric.COVERAGE,
    Metric.TOPIC_AUTO_PRECISION,
    Metric.TOPIC_COVERAGE,
    Metric.OOS_AUTO_TOPIC,
    Metric.ECE,
)
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
    items: Sequence[dict], folds: int, seed: int, groups: Sequence[Sequence[int]] = ()
) -> list[list[int]]:
    """Ids of each fold: stratified by tag, near-duplicate groups kept whole, deterministic.

    Within each tag the units (groups and single items) are shuffled with (seed, tag) and each
    goes to the fold holding the fewest items of that tag so far.
    """
    by_tag = group_units(items, groups)
    out: list[list[int]] = [[] for _ in range(folds)]
    for tag in sorted(by_tag):
        tag_units = sorted(by_tag[tag], key=lambda u: u[0])
        random.Random(f"{seed}:{tag}").shuffle(tag_units)
        filled = [0] * folds
        for u in sorted(tag_units, key=len, reverse=True):  # big groups first, then balance
            k = min(range(folds), key=lambda f: (filled[f], f))
            filled[k] += len(u)
            out[k].extend(u)
    return [sorted(f) for f in out]


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
        from mltagger.label_issues import apply_layer, build_layer

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
            split_config=split_config,
        )
        data = replace(data, splits=splits, label_noise={**summary, "built_in_fold": True})
    return data


def train_only_sources(data: PreparedData) -> set[str]:
    """Sources that go to train whole (`split: train`): weak rows that no figure is computed on."""
    return {s["name"] for s in data.sources if s.get("split") == "train"}


def _sha_or_none(path, cfg) -> str | None:
    if not path:
        return None
    from mltagger.data import sha256_file
    from mltagger.paths import resolve_path

    full = resolve_path(path, cfg.paths.root_dir)
    return sha256_file(full) if Path(full).is_file() else None


def _without_oof(noise):
    return None if noise is None else {k: v for k, v in noise.items() if k != "oof"}


def config_fingerprint(cfg: DictConfig, data: PreparedData) -> str:
    """What makes two trainings the same model recipe: model, optimiser, loss, epochs, data.

    Out-of-fold predictions (and the thresholds chosen on them) belong to one recipe; training
    compares fingerprints before using them for another run.
    """
    keep = {
        "model": {k: v for k, v in cfg.model.items() if k not in ("eval_batch_size",)},
        "optim": cfg.optim,
        "loss": cfg.loss,
        "trainer": {
            k: cfg.trainer.get(k)
            for k in ("max_epochs", "early_stopping_patience", "monitor", "limit_train_batches")
        },
        "temperature_scaling": cfg.get("temperature_scaling"),
        # label_noise.oof only picks the probabilities `make label-issues` judges with (folds
        # rebuild the layer from TF-IDF); counting it would make the oof.json it names a
        # file of another recipe.
        "label_noise": _without_oof(cfg.data.get("label_noise")),
        "data_sha256": data.data_sha256,
        # Per-source loss weights, caps and train-only roles change what is trained on.
        "sources": [
            {k: s[k] for k in ("name", "split", "weight", "max_per_tag") if k in s}
            for s in data.sources
        ],
        # A shipped teacher's soft labels change the loss (teacher folders are not CV'd).
        "distill": {
            "soft_labels_sha256": _sha_or_none(cfg.distill.get("soft_labels"), cfg)
            if cfg.get("distill")
            else None,
            "alpha": cfg.distill.get("alpha") if cfg.get("distill") else None,
            "temperature": cfg.distill.get("temperature") if cfg.get("distill") else None,
        },
        # Labels a person corrected change what is trained on and what is scored.
        "reviewed_labels_sha256": (data.reviewed_labels or {}).get("sha256"),
    }
    blob = json.dumps(OmegaConf.to_container(OmegaConf.create(keep), resolve=True), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _read_scores(path: Path, labels: Sequence[str]) -> tuple[list, np.ndarray]:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return rows, np.array([[r["scores"][t] for t in labels] for r in rows], dtype=float)


def _mean_std(values: Sequence[float]) -> dict:
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return {"mean": None, "std": None, "n": 0}
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "n": len(v),
    }


def decision_figures(gold: Sequence[str], probs: np.ndarray, labels, threshold, fallback) -> dict:
    """Headline figures of one decision rule on held-out items (no threshold chosen here)."""
    tags, _, review = apply_threshold(probs, labels, threshold, fallback)
    auto = ~review
    right = np.array([t == g for t, g in zip(tags, gold, strict=True)])
    out = {
        Metric.AUTO_PRECISION: float(right[auto].mean()) if auto.any() else None,
        Metric.COVERAGE: float(auto.mean()),
    }
    scope = scope_report(gold, probs, labels, threshold, fallback)
    if scope:
        out[Metric.TOPIC_AUTO_PRECISION] = scope["topics"][Metric.AUTO_PRECISION]
        out[Metric.TOPIC_COVERAGE] = scope["topics"][Metric.COVERAGE]
        out["topic_lost_to_other"] = scope["topics"]["lost_to_other"]
        out[Metric.OOS_AUTO_TOPIC] = scope["out_of_scope"]["auto_topic"]
    return out


def run_cv(cfg: DictConfig) -> dict:
    """Train every fold, gather out-of-fold predictions, choose per-tag thresholds, summarise."""
    from mltagger.run import write_run_info
    from mltagger.train import train

    ccfg = cfg.cv
    out_dir = Path(cfg.paths.output_dir)
    seeds = [int(s) for s in (ccfg.seeds or [0])]
    with open_dict(cfg):
        cfg.cv_overrides = _command_line_overrides()
    base = prepare_data(cfg.data, cfg.paths.root_dir, rejects_dir=out_dir, apply_label_noise=False)
    pool = base.splits["train"] + base.splits["val"]
    check_folds(ccfg.folds, pool)
    labels = base.label_names()
    fingerprint = config_fingerprint(cfg, base)
    write_run_info(out_dir, cfg, base.manifest(), {"cv_fingerprint": fingerprint})
    t_start = time.perf_counter()
    oof: list[dict] = []
    fold_metrics: list[dict] = []
    calib: list[dict] = []
    n_runs = len(seeds) * ccfg.folds
    for s_i, seed in enumerate(seeds):
        folds = make_folds(pool, ccfg.folds, seed, base.near_duplicate_groups)
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
                if fcfg.logger.get("wandb"):
                    fcfg.logger.wandb.group = f"cv-{out_dir.name}"
                    fcfg.logger.wandb.job_type = "cv_fold"
                    fcfg.logger.wandb.log_model = False
            metrics = train(fcfg, data=fdata)
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
                            "gold": gold[r["id"]] if weak else r["gold"],
                            "seed": seed,
                            "fold": k,
                            "scores": dict(zip(labels, map(float, p), strict=True)),
                            **({"weak": True} if weak else {}),
                        }
                    )
            calib.append(calibration_comparison(fold_dir))
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
    _log_to_wandb(cfg, summary, out_dir)
    print(render_summary(summary))
    print(f"CV folder: {out_dir}")
    return summary


def _command_line_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # called outside a Hydra app (tests)
        return []


def _log_to_wandb(cfg: DictConfig, summary: dict, out_dir: Path) -> None:
    """The CV summary as its own W&B run (job type cv) in the folds' group: mean/std per figure,
    the per-tag thresholds table and the out-of-fold file as an artifact."""
    from mltagger.train import wandb_settings

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


def oof_arrays(oof: Sequence[dict], labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    return [r["gold"] for r in oof], np.array(
        [[r["scores"][t] for t in labels] for r in oof], dtype=float
    )


def cross_fitted_rule(
    oof: Sequence[dict], labels, fallback: str, target: float, rule: str, strength: float
) -> list[dict]:
    """Per-tag thresholds judged honestly: chosen on the other folds' OOF, applied to this one."""
    out = []
    keys = sorted({(r["seed"], r["fold"]) for r in oof})
    for seed, fold in keys:
        fit = [r for r in oof if r["seed"] == seed and r["fold"] != fold]
        held = [r for r in oof if r["seed"] == seed and r["fold"] == fold]
        g_fit, p_fit = oof_arrays(fit, labels)
        chosen = choose_tag_thresholds(
            p_fit, g_fit, labels, target, rule=rule, prior_strength=strength
        )
        g, p = oof_arrays(held, labels)
        out.append(decision_figures(g, p, labels, chosen["thresholds"], fallback))
    return out


def summarise(cfg, labels, base, oof, fold_metrics, calib, seconds, fingerprint) -> dict:
    ecfg = cfg.eval
    target = float(ecfg.get("tag_precision_target", ecfg.precision_target))
    rule = str(ecfg.get("tag_rule", "pooled"))
    strength = float(ecfg.get("prior_strength", 20.0))
    gold, probs = oof_arrays(oof, labels)
    chosen = choose_tag_thresholds(probs, gold, labels, target, rule=rule, prior_strength=strength)
    per_fold_global = {
        key: _mean_std([m.get(f"test/{key}") for m in fold_metrics]) for key in HEADLINE
    }
    crossed = cross_fitted_rule(oof, labels, base.fallback_tag, target, rule, strength)
    keys = sorted({k for row in crossed for k in row})
    per_fold_tag = {k: _mean_std([row.get(k) for row in crossed]) for k in keys}
    return {
        "fingerprint": fingerprint,
        "data_sha256": base.data_sha256,
        "labels": labels,
        "folds": int(cfg.cv.folds),
        "seeds": [int(s) for s in cfg.cv.seeds],
        "overrides": list(cfg.get("cv_overrides") or []),
        "seconds": seconds,
        "num_oof": len(oof),
        "oof_counts": dict(sorted(Counter(gold).items())),
        "global_rule": per_fold_global,
        "per_tag_rule": per_fold_tag,
        "epochs": _mean_std([m.get("best_epoch") for m in fold_metrics]),
        "calibration": {
            key: _mean_std([c.get(key) for c in calib])
            for key in sorted({k for c in calib for k in c})
        },
        "operating_points": {
            **chosen,
            "fingerprint": fingerprint,
            "data_sha256": base.data_sha256,
            "labels": labels,
            "fallback_tag": base.fallback_tag,
            "chosen_on": f"{len(oof)} out-of-fold predictions ({cfg.cv.folds} folds, "
            f"seeds {list(cfg.cv.seeds)})",
        },
        "per_fold": [
            {k: v for k, v in m.items() if isinstance(v, int | float)} for m in fold_metrics
        ],
    }


def score_heldout(
    base: PreparedData, labels: Sequence[str], fold_dirs: Sequence[Path], points: dict
) -> dict:
    """Test and fresh figures of every fold model under the out-of-fold per-tag thresholds.

    Computed after every choice is made, so these are reports, not selectors: mean ± std over
    the fold models (each trained on (k-1)/k of train + val, so a little weaker than the final
    model) says how a recipe does on 2020 test items and on 2023-2026 items, with its spread.
    """
    from sklearn.metrics import f1_score

    from mltagger.predict import TorchPredictor

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
        name: {k: _mean_std([f.get(k) for f in figs]) for k in sorted(figs[0])}
        for name, figs in per.items()
    }


def calibration_comparison(fold_dir: Path) -> dict:
    """Held-out NLL and ECE with one temperature and with vector scaling, both fitted on the
    fold's inner val logits (what training saves in logits.npz)."""
    from mltagger.evaluate import calibration
    from mltagger.train import fit_temperature, fit_vector_scaling, softmax

    z = np.load(fold_dir / "logits.npz")
    vl, vy, tl, ty = z["val_logits"], z["val_labels"], z["test_logits"], z["test_labels"]
    out = {}
    temp = fit_temperature(vl, vy)
    w, b = fit_vector_scaling(vl, vy)
    for name, p in (
        ("uncalibrated", softmax(tl)),
        ("temperature", softmax(tl, temp)),
        ("vector", softmax(tl * w + b)),
    ):
        nll = float(-np.mean(np.log(np.clip(p[np.arange(len(ty)), ty], 1e-12, None))))
        correct = (p.argmax(1) == ty).astype(float)
        out[f"{name}_nll"] = nll
        out[f"{name}_ece"] = float(calibration(p.max(1), correct)[Metric.ECE])
    return out


def _ms(d: dict | None, pct: bool = False) -> str:
    if not d or d.get("mean") is None:
        return "—"
    if pct:
        return f"{100 * d['mean']:.1f} ± {100 * d['std']:.1f}%"
    return f"{d['mean']:.3f} ± {d['std']:.3f}"


def render_summary(s: dict) -> str:
    g, t = s["global_rule"], s["per_tag_rule"]
    lines = [
        f"# Cross-validation: {s['folds']} folds × seeds {s['seeds']} "
        f"({s['num_oof']} out-of-fold predictions, {s['seconds'] / 60:.1f} min)",
        "",
        f"Overrides: `{' '.join(s['overrides']) or '(defaults)'}`. Best epoch {_ms(s['epochs'])}.",
        "",
        "| figure (mean ± std over folds) | held-out, global threshold (from inner val) "
        "| held-out, per-tag thresholds (from other folds' OOF) |",
        "|---|---:|---:|",
    ]
    names = {
        Metric.F1_WEIGHTED: "weighted F1",
        Metric.TOPIC_F1_WEIGHTED: "topic weighted F1",
        Metric.AUTO_PRECISION: "auto-tag precision (all tags)",
        Metric.COVERAGE: "coverage (all items)",
        Metric.TOPIC_AUTO_PRECISION: "topic auto-tag precision",
        Metric.TOPIC_COVERAGE: "topic coverage",
        "topic_lost_to_other": "topic items auto-tagged `other`",
        Metric.OOS_AUTO_TOPIC: "out-of-scope auto-tagged with a topic",
        Metric.ECE: "ECE",
    }
    for key, name in names.items():
        pct = key not in (Metric.F1_WEIGHTED, Metric.TOPIC_F1_WEIGHTED, Metric.ECE)
        lines.append(f"| {name} | {_ms(g.get(key), pct)} | {_ms(t.get(key), pct)} |")
    if s.get("heldout"):
        h = s["heldout"]
        sets = list(h)
        lines += [
            "",
            "## Test and fresh, scored by each fold model under the per-tag thresholds above "
            "(reported, never chosen on)",
            "",
            "| figure (mean ± std over fold models) | " + " | ".join(sets) + " |",
            "|---|" + "---:|" * len(sets),
        ]
        for key, name in names.items():
            if any(key in h[x] for x in sets):
                pct = key not in (Metric.F1_WEIGHTED, Metric.TOPIC_F1_WEIGHTED, Metric.ECE)
                cells = " | ".join(_ms(h[x].get(key), pct) for x in sets)
                lines.append(f"| {name} | {cells} |")
    op = s["operating_points"]
    lines += [
        "",
        f"## Per-tag thresholds ({op['rule']} rule, target {op['precision_target']:.2f}; "
        f"prior: all tags at the same threshold, strength {op['prior']['strength']:.0f})",
        "",
        "| tag | OOF predicted | threshold | auto-tagged | precision | own 95% lower "
        "| pooled 95% lower |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for tag, r in op["per_tag"].items():

        def f3(x):
            return "—" if x is None else f"{x:.3f}"

        lines.append(
            f"| {tag} | {r['num_predicted']} | {f3(r['threshold'])} | {r['num_auto']} | "
            f"{f3(r['precision'])} | {f3(r['own_lower'])} | {f3(r['pooled_lower'])} |"
        )
    c = s["calibration"]
    if c:
        lines += [
            "",
            "## Calibration on held-out folds (fitted on each fold's inner val)",
            "",
            "| method | NLL | ECE |",
            "|---|---:|---:|",
        ]
        for m in ("uncalibrated", "temperature", "vector"):
            lines.append(f"| {m} | {_ms(c.get(f'{m}_nll'))} | {_ms(c.get(f'{m}_ece'))} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Entry point (make cv)."""
    from mltagger.cli import hydra_entry

    hydra_entry("cv", run_cv)


if __name__ == "__main__":
    main()
