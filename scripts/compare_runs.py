"""Are two training runs the same result? For refactors that must not change a figure.

Compares two run folders (runs/train/<id>/) file by file: the metrics of every split, the
decision rule, the behaviour suite, the split manifest, the logits (exact arrays) and the model's
weights (sha256). Wall-clock figures (epoch seconds, samples per second) and names that carry the
run's folder or time are left out; everything else must match to the bit.

    python scripts/compare_runs.py runs/train/A runs/train/B     # exit 1 when anything differs

Two `mltagger evaluate` folders (runs/evaluate/<id>/: val, test and fresh reports of one model
folder) compare the same way, on the files they have: e.g. a model folder with and without a
file that must not move the primary tag's figures (issue 35's secondary head).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

JSON_FILES = (
    "metrics.json",
    "decision.json",
    "behavior.json",
    "split.json",
    "val/metrics.json",
    "test/metrics.json",
    "fresh/metrics.json",
)
WEIGHTS = ("model/model.safetensors", "model/labels.json")
TIMING = ("epoch_seconds", "samples_per_second")


def _strip(value):
    """A JSON value without its wall-clock figures."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not k.endswith(TIMING)}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compare(a: Path, b: Path) -> list[tuple[str, str]]:
    """(file, verdict) rows; a verdict is `same`, `DIFFERENT`, or `missing in …`."""
    rows = []
    for name in (*JSON_FILES, *WEIGHTS, "logits.npz"):
        pa, pb = a / name, b / name
        if not pa.exists() and not pb.exists():
            continue
        if not (pa.exists() and pb.exists()):
            rows.append((name, f"missing in {'A' if not pa.exists() else 'B'}"))
            continue
        if name.endswith(".json") and name in JSON_FILES:
            same = _strip(json.loads(pa.read_text())) == _strip(json.loads(pb.read_text()))
        elif name.endswith(".npz"):
            la, lb = np.load(pa), np.load(pb)
            same = sorted(la.files) == sorted(lb.files) and all(
                np.array_equal(la[k], lb[k]) for k in la.files
            )
        else:
            same = _sha(pa) == _sha(pb)
        rows.append((name, "same" if same else "DIFFERENT"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    for run in (args.a, args.b):
        if not ((run / "metrics.json").is_file() or (run / "test" / "metrics.json").is_file()):
            print(
                f"error: {run} is neither a training run folder (no metrics.json) nor an "
                "evaluation folder (no test/metrics.json)",
                file=sys.stderr,
            )
            return 2
    rows = compare(args.a, args.b)
    width = max(len(n) for n, _ in rows)
    for name, verdict in rows:
        print(f"{name:<{width}}  {verdict}")
    differing = [n for n, v in rows if v != "same"]
    print(f"{len(rows) - len(differing)} of {len(rows)} the same")
    return 1 if differing else 0


if __name__ == "__main__":
    raise SystemExit(main())
