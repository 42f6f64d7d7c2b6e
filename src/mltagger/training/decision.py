"""The decision rule a training run ships: the global threshold, or per-tag thresholds read from
cross-validation out-of-fold predictions when a matching CV run exists; plus the evaluation on
the fresh set and the behaviour suite, which judge the shipped rule rather than choose it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from mltagger.core.errors import ConfigError, DataError
from mltagger.core.paths import resolve_path
from mltagger.data.prepare import PreparedData
from mltagger.evaluation.behavior import format_suite, run_suite, write_suite
from mltagger.evaluation.markdown import write_report
from mltagger.evaluation.metrics import evaluate_predictions, predictions_records
from mltagger.evaluation.protocol import eval_kwargs
from mltagger.evaluation.thresholds import choose_gated_rule, choose_tag_thresholds
from mltagger.models.predict import TorchPredictor
from mltagger.training.fingerprint import config_fingerprint

log = logging.getLogger(__name__)


def decision_rule(cfg, data: PreparedData, labels) -> dict:
    """The thresholds to ship: per-tag from this recipe's out-of-fold predictions, or global.

    Returns {rule_used, why, thresholds (dict or None = choose one on val), ...}.
    """

    ecfg = cfg.eval
    mode = ecfg.get("decision", "global")
    if mode not in ("auto", "per_tag", "global"):
        raise ConfigError(f"eval.decision={mode!r}: use auto, per_tag or global")
    gate = check_gate_config(cfg)
    if mode == "global":
        return {
            "rule_used": "global",
            "why": "eval.decision=global",
            "thresholds": None,
            **_fixed_gate(gate),
        }
    path = resolve_path(ecfg.oof, cfg.paths.root_dir) if ecfg.get("oof") else None
    fingerprint = config_fingerprint(cfg, data)
    problem = None
    if path is None or not path.is_file():
        problem = f"no out-of-fold predictions at eval.oof={ecfg.get('oof')}"
    else:
        oof = json.loads(path.read_text())
        if oof.get("data_sha256") != data.data_sha256:
            raise DataError(
                f"eval.oof={ecfg.oof} holds out-of-fold predictions of other data (sha256 "
                f"{str(oof.get('data_sha256'))[:12]}…, this run's {data.data_sha256[:12]}…): "
                "rebuild them with `make cv` for this data, or ship one val threshold: "
                "eval.decision=global"
            )
        if oof.get("fingerprint") != fingerprint:
            problem = (
                f"{path.name} holds out-of-fold predictions of another recipe (fingerprint "
                f"{oof.get('fingerprint')}, this run {fingerprint})"
            )
        elif list(oof.get("labels", [])) != list(labels):
            problem = f"{path.name} has classes {oof.get('labels')}, this run {labels}"
    if problem:
        hint = "run `make cv` with the same overrides and point eval.oof at its oof.json"
        if mode == "per_tag":
            raise ConfigError(f"eval.decision=per_tag: {problem}; {hint}")
        log.warning(
            "per-tag thresholds not used: %s; falling back to one val threshold (%s)", problem, hint
        )
        return {
            "rule_used": "global",
            "why": f"auto: {problem}",
            "thresholds": None,
            **_fixed_gate(gate),
        }
    # Rows of weak train-only sources (`weak`) are there for the label-issue search only.
    rows = [r for r in oof["oof"] if not r.get("weak")]
    probs = np.array([[r["scores"][t] for t in labels] for r in rows], dtype=float)
    gold = [r["gold"] for r in rows]
    target = float(ecfg.get("tag_precision_target", ecfg.precision_target))
    rule, strength = str(ecfg.get("tag_rule", "pooled")), float(ecfg.get("prior_strength", 20.0))
    gated = {}
    if gate == "auto":
        gated = _choose_gate(rows, probs, gold, labels, data.fallback_tag, target, rule, strength,
                             float(ecfg.get("gate_max_harm", 0.02)), path)  # fmt: skip
        keep = [r.get("in_scope", 1.0) >= (gated["gate_threshold"] or 0.0) for r in rows]
        probs = probs[np.array(keep, dtype=bool)]
        gold = [g for g, k in zip(gold, keep, strict=True) if k]
    else:
        gated = _fixed_gate(gate)
        if gate is not None:  # a fixed gate: the topic thresholds see the rows it lets through
            _needs_gate_scores(rows, path)
            keep = np.array([r["in_scope"] >= gate for r in rows], dtype=bool)
            probs, gold = probs[keep], [g for g, k in zip(gold, keep, strict=True) if k]
    chosen = choose_tag_thresholds(probs, gold, labels, target, rule=rule, prior_strength=strength)
    return {
        "rule_used": "per_tag",
        "why": f"{len(rows)} out-of-fold predictions of this recipe ({path.name})",
        "thresholds": chosen["thresholds"],
        "tag_rule": chosen["rule"],
        "precision_target": chosen["precision_target"],
        "prior": chosen["prior"],
        "oof_file": str(ecfg.oof),
        "fingerprint": fingerprint,
        "per_tag_detail": chosen["per_tag"],
        **gated,
    }


def check_gate_config(cfg) -> float | str | None:
    """eval.gate_threshold as the rule uses it: None (no gate), "auto" or a probability.

    A threshold outside [0, 1] (the gate gives a calibrated probability) or a gate without its
    model (the data config names no negatives to fit it on) is a ConfigError: one line, exit 2.
    `auto` with no negatives means no gate, by configuration (data configs without a gate).
    """
    value = cfg.eval.get("gate_threshold")
    has_gate = bool(cfg.data.get("gate_negatives"))
    if value is None:
        return None
    if value == "auto":
        return "auto" if has_gate else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(
            f"eval.gate_threshold={value!r}: expected auto, null or a probability in [0, 1]"
        )
    if not has_gate:
        raise ConfigError(
            f"eval.gate_threshold={value}: the gate has no model - data.gate_negatives is not "
            "set in this data config, so no gate is fitted; set eval.gate_threshold=null"
        )
    return float(value)


def _fixed_gate(gate: float | str | None) -> dict:
    """The gate part of a rule whose gate threshold is not chosen on out-of-fold rows. `auto`
    without out-of-fold gate scores ships no gate, and says so (decision.json, the card)."""
    if gate == "auto":
        log.warning("eval.gate_threshold=auto: no out-of-fold gate scores under this rule, no gate")
        return {
            "gate_threshold": None,
            "gate_why": "auto: the rule uses no out-of-fold predictions to choose the gate on",
        }
    return {"gate_threshold": gate}


def _needs_gate_scores(rows, path) -> None:
    """Out-of-fold rows without the gate's cross-fitted scores cannot place a gate: DataError."""
    if not rows or any("in_scope" not in r for r in rows):
        raise DataError(
            f"{path.name} has no cross-fitted gate scores (`in_scope`): rebuild it with "
            "`make cv` (it scores them when the data config names gate negatives; or "
            "scripts/add_gate_scores.py), or set eval.gate_threshold=null"
        )


def _choose_gate(rows, probs, gold, labels, fallback, target, rule, strength, max_harm, path):
    """The gate threshold chosen on the out-of-fold rows' cross-fitted gate scores."""
    _needs_gate_scores(rows, path)
    chosen = choose_gated_rule(
        probs,
        gold,
        np.array([r["in_scope"] for r in rows], dtype=float),
        [f"{r['seed']}:{r['fold']}" for r in rows],
        labels,
        fallback,
        target,
        rule=rule,
        prior_strength=strength,
        max_harm=max_harm,
    )
    log.info("gate threshold %s (cross-fitted: %s)", chosen["gate_threshold"],
             chosen["cross_fitted"])  # fmt: skip
    return {
        "gate_threshold": chosen["gate_threshold"],
        "gate_choice": {k: chosen[k] for k in ("max_harm", "met", "cross_fitted", "table")},
    }


def evaluate_fresh(
    data, labels, probs, eval_cfg, threshold, out_dir, title, out_of_scope=None
) -> dict:
    """The fresh set's report under the shipped rule (written to <run>/fresh/ with out_dir);
    `out_of_scope`: the fresh items the rule's gate stops."""

    kw = eval_kwargs(data, eval_cfg, labels)
    report = evaluate_predictions(
        data.fresh, probs, labels, threshold=threshold, out_of_scope=out_of_scope, **kw
    )
    report["fresh"] = data.fresh_manifest
    if out_dir is not None:
        write_report(
            report,
            Path(out_dir) / "fresh",
            f"{title} — fresh 2023–2026 set",
            predictions_records(
                data.fresh, probs, labels, threshold, data.fallback_tag, out_of_scope
            ),
        )
    return report


def run_behaviour_suite(model_dir: Path, out_dir: Path) -> dict[str, float]:
    """The behavioural suite on the saved model: behavior.json, a section of test/report.md, and
    `behavior/<family>` pass rates for the run's metrics."""

    suite = run_suite(TorchPredictor(model_dir))
    write_suite(suite, out_dir / "behavior.json")
    report = out_dir / "test" / "report.md"
    if report.is_file():
        with report.open("a") as fh:
            fh.write(
                "\n## Behavioural tests (mltagger.evaluation.behavior)\n\n"
                + format_suite(suite)
                + "\n"
            )
    log.info("behavioural tests:\n%s", format_suite(suite))
    return {f"behavior/{name}": fam["pass_rate"] for name, fam in suite.items()}
