"""Where the challenger's operating points and calibration come from: its own out-of-sample
scores (cross-fitted warm starts on the stream labels, the val split), never in-sample ones."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from mltagger.cycle.context import Context, read_json, write_json
from mltagger.cycle.evaluate import with_text
from mltagger.evaluation.thresholds import choose_tag_thresholds
from mltagger.models.modelio import read_model_metadata, write_model_metadata
from mltagger.models.predict import Predictor, TorchPredictor
from mltagger.training.calibrate import fit_temperature
from mltagger.training.continual import warm_start

log = logging.getLogger(__name__)


def _chosen(probs: list, gold: list, labels: list[str], decision: dict) -> dict:
    return choose_tag_thresholds(
        np.asarray(probs, dtype=float).reshape(len(probs), len(labels)),
        gold,
        labels,
        float(decision.get("precision_target") or 0.92),
        rule=decision.get("tag_rule", "pooled"),
        prior_strength=float((decision.get("prior") or {}).get("strength", 20)),
    )


def cross_fitted_scores(
    ctx: Context,
    folder: Path,
    champion: Path,
    rows: list[dict],
    base: list[dict],
    soft,
    trainer: Callable,
) -> dict:
    """Each gold stream label scored by a warm start that did not see it (`cycle.cross_fit`
    folds, each trained like the challenger on the other folds' labels), temperature refitted
    on val like the challenger's. Saved in xfit.json, so a rerun after a kill reuses it."""
    saved = read_json(folder / "xfit.json")
    if saved is not None:
        return saved
    k = int(ctx.cfg.cycle.get("cross_fit", 2))
    gold_ix = [i for i, r in enumerate(rows) if r.get("source") != "author"]
    val = with_text(ctx.data().splits["val"])
    scores: dict[str, list[float]] = {}
    for f in range(k):
        held = set(gold_ix[f::k])
        sub = folder / f"xfit_{f}"
        (trainer or warm_start)(
            champion,
            sub,
            [r for i, r in enumerate(rows) if i not in held],
            base,
            soft,
            replace(ctx.train_s, seed=ctx.train_s.seed + 1 + f),
            version=f"xfit{f}",
            thresholds=None,
            extra={},
        )
        recalibrate(sub, val)
        pred = Predictor(sub)
        texts = [rows[i]["text"] for i in sorted(held)]
        probs = pred.predict_proba(texts) if texts else np.zeros((0, len(pred.labels)))
        scope = pred.in_scope([{"text": t} for t in texts]) if texts else None
        for j, i in enumerate(sorted(held)):
            scores[str(i)] = {
                "probs": [float(v) for v in probs[j]],
                "in_scope": None if scope is None else float(scope[j]),
            }
        shutil.rmtree(sub, ignore_errors=True)
    out = {"folds": k, "scores": scores}
    write_json(folder / "xfit.json", out)
    return out


def operating_points(
    challenger: Path, rows: list[dict], xfit: dict, val: list[dict]
) -> tuple[dict | None, dict]:
    """Per-tag thresholds for the challenger, chosen on its own out-of-sample scores: the gold
    stream labels scored by the cross-fitted warm starts, and the default data's val split
    (which no model of the cycle trained on) scored by the challenger. Items its gate stops
    take no part. The rule and target are the champion recipe's."""
    labels, inference = read_model_metadata(challenger)
    decision = inference.extra.get("decision") or {}
    info: dict = {
        "rule": decision.get("tag_rule", "pooled"),
        "target": decision.get("precision_target"),
        "folds": xfit.get("folds"),
    }
    if not decision.get("precision_target"):
        return None, {**info, "why": "the champion's recipe names no per-tag precision target"}
    gate = inference.gate_threshold or 0.0
    probs, gold = [], []
    for i, r in enumerate(rows):
        got = xfit["scores"].get(str(i))
        if got and (got["in_scope"] is None or got["in_scope"] >= gate):
            probs.append(got["probs"])
            gold.append(r["tag"])
    n_stream = len(gold)
    val = [r for r in val if r["tag"] in labels]
    pred = Predictor(challenger)
    keep = pred.stopped(val)
    keep = np.ones(len(val), dtype=bool) if keep is None else ~keep
    val = [r for r, k in zip(val, keep, strict=True) if k]
    if val:
        probs += pred.predict_proba([r["text"] for r in val]).tolist()
        gold += [r["tag"] for r in val]
    if not gold:
        return None, {**info, "why": "no out-of-sample scores to choose on"}
    chosen = _chosen(probs, gold, labels, decision)
    return chosen["thresholds"], {**info, "stream_rows": n_stream, "val_rows": len(val)}


def set_thresholds(folder: Path, thresholds: dict, info: dict) -> None:

    labels, inference = read_model_metadata(folder)
    decision = {
        **(inference.extra.get("decision") or {}),
        "thresholds": thresholds,
        "source": "cycle: cross-fitted stream labels + val",
        **info,
    }
    write_model_metadata(
        folder,
        labels,
        replace(inference, thresholds=thresholds, extra={**inference.extra, "decision": decision}),
    )


def recalibrate(folder: Path, val: list[dict]) -> dict:
    """The challenger's temperature fitted again on the default data's val split, which neither
    model trained on: its per-tag thresholds were chosen on calibrated probabilities of the
    champion's recipe, and a warm start changes how sharp the scores are."""

    labels, inference = read_model_metadata(folder)
    index = {t: i for i, t in enumerate(labels)}
    rows = [r for r in val if r["tag"] in index]
    if not rows:
        return {"temperature": inference.temperature, "fitted": False, "why": "no val items"}
    logits = TorchPredictor(folder).logits([r["text"] for r in rows])
    t = float(fit_temperature(logits, np.array([index[r["tag"]] for r in rows])))
    write_model_metadata(folder, labels, replace(inference, temperature=t))
    return {"temperature": t, "before": inference.temperature, "fitted": True, "val": len(rows)}
