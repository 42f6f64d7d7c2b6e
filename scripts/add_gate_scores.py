"""Add the out-of-scope gate's cross-fitted scores to an out-of-fold file made before `make cv`
scored them (issue 32), so its recipe can choose a gate threshold (`eval.gate_threshold=auto`).

The scores are what `make cv` now computes itself (`mltagger.training.gate.cross_fitted_in_scope`):
for each fold the file records, a gate fitted on the data's train + val items outside that fold
and the data config's negatives scores the fold's rows. The gate learns from texts alone, so no
encoder is retrained and nothing else in the file changes (fingerprint, data sha256, scores).

    python scripts/add_gate_scores.py --oof data/cv/minilm_default.json --data with_packages
"""

from __future__ import annotations

import argparse
import json

from mltagger.core.config import compose_config
from mltagger.core.errors import DataError, user_errors
from mltagger.core.paths import resolve_path
from mltagger.data.prepare import prepare_data
from mltagger.training.build import gate_negatives
from mltagger.training.gate import cross_fitted_in_scope


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--oof", required=True, help="an out-of-fold file (make cv's oof.json)")
    ap.add_argument("--data", required=True, help="the data config it was made from")
    ap.add_argument("--seed", type=int, default=42, help="the gate's seed (the recipe's seed)")
    args = ap.parse_args(argv)
    cfg = compose_config("train", [f"data={args.data}", f"seed={args.seed}"])
    path = resolve_path(args.oof, cfg.paths.root_dir)
    if not path.is_file():
        raise DataError(f"--oof {args.oof}: no such file")
    try:
        blob = json.loads(path.read_text())
        rows = blob["oof"]
    except (ValueError, KeyError, TypeError):
        raise DataError(
            f"--oof {args.oof} is not an out-of-fold file (make cv's oof.json)"
        ) from None
    data = prepare_data(cfg.data, cfg.paths.root_dir, apply_label_noise=False)
    if blob.get("data_sha256") != data.data_sha256:
        raise DataError(f"--oof {args.oof} was made from other data than data={args.data}")
    negatives = gate_negatives(cfg)
    if negatives is None:
        raise DataError(f"data={args.data} names no gate negatives (data.gate_negatives)")
    pool = data.splits["train"] + data.splits["val"]
    try:
        scores = cross_fitted_in_scope(rows, pool, negatives, data.fallback_tag, args.seed)
    except ValueError as err:
        raise DataError(f"--oof {args.oof}: {err}") from None
    for row, p in zip(rows, scores, strict=True):
        row["in_scope"] = round(p, 6)
    path.write_text(json.dumps(blob) + "\n")
    print(f"{path}: {len(scores)} rows scored by the gate of the other folds")
    return 0


if __name__ == "__main__":
    with user_errors():
        raise SystemExit(main())
