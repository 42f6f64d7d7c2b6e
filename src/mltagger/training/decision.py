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
from mltagger.evaluation.thresholds import choose_tag_thresholds
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
    if mode == "global":
        return {"rule_used": "global", "why": "eval.decision=global", "thresholds": None}
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
        return {"rule_used": "global", "why": f"auto: {problem}", "thresholds": None}
    # Rows of weak train-only sources (`weak`) are there for the label-issue search only.
    rows = [r for r in oof["oof"] if not r.get("weak")]
    probs = np.array([[r["scores"][t] for t in labels] for r in rows], dtype=float)
    chosen = choose_tag_thresholds(
        probs,
        [r["gold"] for r in rows],
        labels,
        float(ecfg.get("tag_precision_target", ecfg.precision_target)),
        rule=str(ecfg.get("tag_rule", "pooled")),
        prior_strength=float(ecfg.get("prior_strength", 20.0)),
    )
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
    }


def evaluate_fresh(data, labels, probs, eval_cfg, threshold, out_dir, title) -> dict:
    """The fresh set's report under the shipped rule (written to <run>/fresh/ with out_dir)."""

    kw = eval_kwargs(data, eval_cfg, labels)
    report = evaluate_predictions(data.fresh, probs, labels, threshold=threshold, **kw)
    report["fresh"] = data.fresh_manifest
    if out_dir is not None:
        write_report(
            report,
            Path(out_dir) / "fresh",
            f"{title} — fresh 2023–2026 set",
            predictions_records(data.fresh, probs, labels, threshold, data.fallback_tag),
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
