"""Score test and the fresh set with the fold models of a finished `make cv` run.

    python scripts/cv_heldout.py runs/cv/<id> [more cv folders...]

What `cv.score_heldout=true` does at the end of a CV run, for runs made without it: each fold
model scores the test split and the fresh set under the per-tag thresholds the run chose on its
out-of-fold predictions; mean ± std over fold models is added to summary.json ("heldout") and
summary.md is rewritten. Reported, never chosen on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omegaconf import OmegaConf, open_dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mltagger.core.paths import resolve_path
from mltagger.data.prepare import prepare_data
from mltagger.training.cv import score_heldout
from mltagger.training.cv_results import render_summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+")
    args = ap.parse_args()
    root = resolve_path(".", None)
    fresh = OmegaConf.load(root / "conf" / "data" / "projects.yaml").fresh
    for run in args.runs:
        cfg = OmegaConf.load(run / "config.yaml")
        with open_dict(cfg):
            cfg.data.fresh = fresh  # CV runs made before score_heldout left it out
        base = prepare_data(cfg.data, root, apply_label_noise=False)
        summary = json.loads((run / "summary.json").read_text())
        summary["heldout"] = score_heldout(
            base, summary["labels"], sorted(run.glob("seed*_fold*")), summary["operating_points"]
        )
        (run / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        (run / "summary.md").write_text(render_summary(summary))
        print(render_summary(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
