"""Per-tag precision targets compared on out-of-fold predictions, honestly (cross-fitted).

    python docs/studies/tag_targets.py data/cv/minilm_default.json --targets 0.85 0.88 0.9 0.92 0.93

For each target: thresholds chosen on the other folds' out-of-fold predictions (pooled rule)
and applied to each held-out fold; mean ± std over folds of topic precision and coverage, the
out-of-scope harm and the share of all items auto-tagged. How eval.tag_precision_target was set.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mltagger.training.cv_results import cross_fitted_rule, mean_std


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("oof", type=Path)
    ap.add_argument("--targets", type=float, nargs="+", default=[0.85, 0.88, 0.9, 0.92, 0.93])
    ap.add_argument("--rule", default="pooled")
    ap.add_argument("--prior-strength", type=float, default=20.0)
    args = ap.parse_args()
    data = json.loads(args.oof.read_text())
    keys = (
        ("topic_auto_precision", "topic auto-tag precision"),
        ("topic_coverage", "topic coverage"),
        ("oos_auto_topic_rate", "out-of-scope auto-tagged with a topic"),
        ("coverage", "all items auto-tagged"),
    )
    print("| per-tag target | " + " | ".join(k[1] for k in keys) + " |")
    print("|---:|" + "---:|" * len(keys))
    for target in args.targets:
        rows = cross_fitted_rule(
            data["oof"],
            data["labels"],
            data["fallback_tag"],
            target,
            args.rule,
            args.prior_strength,
        )
        cells = []
        for key, _ in keys:
            m = mean_std([r.get(key) for r in rows])
            cells.append(
                "—" if m["mean"] is None else f"{100 * m['mean']:.1f} ± {100 * m['std']:.1f}%"
            )
        print(f"| {target:.2f} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
