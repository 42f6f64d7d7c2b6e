"""Top-class agreement of quantised exports with the fp32 export on content the export's rule did
not choose on: the training split minus the calibration texts (the same seed and count as
`mltagger.export.candidates`), and the fresh set. No labels needed. docs/export.md,
"Quantisation that keeps quality".

    python scripts/export_agreement.py runs/export/<id>/models [EXPORT ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mltagger.core.config import compose_config
from mltagger.data.prepare import prepare_data
from mltagger.models.predict import OnnxPredictor

DEFAULT = ("teacher-int8-static-keep2", "teacher-int8", "teacher-int8-static")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, help="an export run's models/ folder")
    parser.add_argument("exports", nargs="*", default=list(DEFAULT))
    args = parser.parse_args()
    cfg = compose_config("export", [])
    if not (args.models / "teacher-fp32").is_dir():
        parser.error(f"{args.models} has no teacher-fp32 folder: give an export run's models/")
    data = prepare_data(cfg.data, cfg.paths.root_dir)
    train = [it["text"] for it in data.splits["train"]]
    count = min(len(train), int(cfg.quantization.calibration_items))
    calibration = set(np.random.default_rng(0).choice(len(train), count, replace=False))
    sets = {
        "train minus calibration": [t for i, t in enumerate(train) if i not in calibration],
        "fresh": [it["text"] for it in data.fresh],
    }
    fp32 = OnnxPredictor(args.models / "teacher-fp32", batch_size=64)
    reference = {name: fp32.predict_proba(texts) for name, texts in sets.items()}
    for export in args.exports:
        predictor = OnnxPredictor(args.models / export, batch_size=64)
        for name, texts in sets.items():
            a, b = reference[name], predictor.predict_proba(texts)
            agree = float(np.mean(a.argmax(1) == b.argmax(1)))
            print(
                f"{export:28s} {name:24s} n={len(texts):5d} top-class agreement {agree:.4f} "
                f"mean |dp| {np.abs(a - b).mean():.2e}",
                flush=True,
            )


if __name__ == "__main__":
    main()
