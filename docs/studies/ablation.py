"""The ablation table: each row a recipe and decision rule, as CV mean ± std, test and fresh.

    python docs/studies/ablation.py \
        --row "default, global threshold=runs/cv/<id>:global:runs/train/<id>" \
        --row "default, per-tag thresholds=runs/cv/<id>:per_tag:runs/train/<id>"

A row is NAME=CV_DIR:RULE:RUN_DIR; RUN_DIR `folds` takes test and fresh from the CV's own fold
models instead (mean ± std, `cv.score_heldout`, per-tag rule). RULE is `global` (one threshold
chosen on val; in CV on each fold's inner val) or `per_tag` (thresholds from out-of-fold
predictions; in CV chosen on the other folds' out-of-fold predictions and applied to the held-out
fold, so the CV figure is honest).
The test and fresh figures come from the run folder: `test/`/`fresh/` when the run shipped that
rule, `test_global/`/`fresh_global/` for the global rule of a per-tag run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FIGURES = (
    ("topic weighted F1", "topic_f1_weighted", False),
    ("topic auto-tag precision", "topic_auto_precision", True),
    ("topic coverage", "topic_coverage", True),
    ("out-of-scope auto-tagged with a topic", "oos_auto_topic_rate", True),
)


def cell_cv(d: dict | None, pct: bool) -> str:
    if not d or d.get("mean") is None:
        return "—"
    if pct:
        return f"{100 * d['mean']:.1f} ± {100 * d['std']:.1f}"
    return f"{d['mean']:.3f} ± {d['std']:.3f}"


def cell(v: float | None, pct: bool) -> str:
    if v is None:
        return "—"
    return f"{100 * v:.1f}" if pct else f"{v:.3f}"


def per_tag_block(cv_dir: Path, target: float, strength: float) -> dict:
    """The per-tag rule's CV figures recomputed from oof.json with today's settings: thresholds
    chosen on the other folds' out-of-fold predictions, applied to each held-out fold."""
    from mltagger.training.cv_results import cross_fitted_rule, mean_std

    oof = json.loads((cv_dir / "oof.json").read_text())
    rows = cross_fitted_rule(
        [r for r in oof["oof"] if not r.get("weak")],
        oof["labels"],
        oof["fallback_tag"],
        target,
        "pooled",
        strength,
    )
    return {k: mean_std([r.get(k) for r in rows]) for k in {k for r in rows for k in r}}


def row(name: str, spec: str, target: float, strength: float) -> list[str]:
    cv_dir, rule, run_dir = spec.split(":")
    cv = json.loads((Path(cv_dir) / "summary.json").read_text())
    block = dict(cv["global_rule"])
    if rule == "per_tag":
        # The argmax F1 does not depend on the rule; the rest is recomputed.
        block = {
            **per_tag_block(Path(cv_dir), target, strength),
            "topic_f1_weighted": cv["global_rule"]["topic_f1_weighted"],
        }
    if run_dir == "folds":
        # Test and fresh as scored by the CV's own fold models (cv.score_heldout): mean ± std.
        held = cv.get("heldout")
        if not held:
            raise SystemExit(
                f"{cv_dir} has no test/fresh scores: rerun make cv with the default "
                "cv.score_heldout=true"
            )
        if rule != "per_tag":
            raise SystemExit("fold models are scored under the per-tag thresholds only")
        cells = [name]
        for _, key, pct in FIGURES:
            parts = [cell_cv(block.get(key), pct)]
            parts += [cell_cv(held.get(s, {}).get(key), pct) for s in ("test", "fresh")]
            cells.append(" / ".join(parts))
        cells.append(f"{cv['folds']}×{len(cv['seeds'])}")
        return cells
    summary = json.loads((Path(run_dir) / "metrics.json").read_text())["summary"]
    decision_path = Path(run_dir) / "decision.json"
    shipped = (
        json.loads(decision_path.read_text())["rule_used"] if decision_path.is_file() else "global"
    )
    prefix = {"test": "test/", "fresh": "fresh/"}
    if rule == "global" and shipped != "global":
        prefix = {"test": "test_global/", "fresh": "fresh_global/"}
    if rule == "per_tag" and shipped != "per_tag":
        raise SystemExit(f"{run_dir} did not ship per-tag thresholds (decision {shipped})")
    cells = [name]
    for _, key, pct in FIGURES:
        cells.append(
            f"{cell_cv(block.get(key), pct)} / {cell(summary.get(prefix['test'] + key), pct)}"
            f" / {cell(summary.get(prefix['fresh'] + key), pct)}"
        )
    cells.append(f"{cv['folds']}×{len(cv['seeds'])}")
    return cells


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--row", action="append", required=True, metavar="NAME=CV:RULE:RUN")
    ap.add_argument("--target", type=float, default=0.92, help="eval.tag_precision_target")
    ap.add_argument("--prior-strength", type=float, default=20.0)
    args = ap.parse_args()
    head = ["recipe / rule", *[f[0] for f in FIGURES], "CV folds × seeds"]
    print("Each cell: CV mean ± std (held-out folds) / test / fresh; percentages except F1.\n")
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 1))
    for spec in args.row:
        name, _, rest = spec.partition("=")
        print("| " + " | ".join(row(name, rest, args.target, args.prior_strength)) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
