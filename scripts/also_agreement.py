"""How far two readers agree on the stream pool's secondary tag (`also`).

The pool's `also` is one reader's judgement of a second defensible tag; before a secondary-tag
model is scored against it, we need to know how reproducible that judgement is, or a model's
"misses" cannot be told from readers' disagreement. The blind second labelling of the pool
(`data/pool/second_labels.json`) recorded a `second_also` for each sampled item; this compares it
with the first reader's `also` in `data/pool/stream.json` over the sampled items still in the
pool (the rest were left out as copies and have no `also`).

Printed: raw agreement (both empty counts as agreement), agreement on the items where either
reader gave a secondary tag, and Cohen's kappa over the eight categories (seven tags + none).
Standard library only, so the figure can be checked without the project's environment:

    python scripts/also_agreement.py
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STREAM = ROOT / "data" / "pool" / "stream.json"
SECOND = ROOT / "data" / "pool" / "second_labels.json"
NONE = "(none)"


def paired_also(stream: list[dict], second: list[dict]) -> list[tuple[str, str]]:
    """(first reader's also, second reader's also) for every sampled item in the pool; an empty
    or missing also becomes NONE so that "no second tag" is a category of its own."""
    first = {item["id"]: item.get("also") or NONE for item in stream}
    return [(first[s["id"]], s.get("second_also") or NONE) for s in second if s["id"] in first]


def cohen_kappa(pairs: list[tuple[str, str]]) -> float:
    """Cohen's kappa: observed agreement corrected for the agreement the two readers' marginal
    frequencies would give by chance."""
    n = len(pairs)
    observed = sum(a == b for a, b in pairs) / n
    left = Counter(a for a, _ in pairs)
    right = Counter(b for _, b in pairs)
    expected = sum(left[c] * right[c] for c in left.keys() | right.keys()) / (n * n)
    return (observed - expected) / (1 - expected)


def main() -> None:
    """Print the agreement figures for data/SOURCE.md."""
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    pairs = paired_also(json.loads(STREAM.read_text()), json.loads(SECOND.read_text()))
    agree = sum(a == b for a, b in pairs)
    either = [(a, b) for a, b in pairs if (a, b) != (NONE, NONE)]
    either_agree = sum(a == b for a, b in either)
    print(f"sampled items in the pool: {len(pairs)}")
    print(f"also agreement (both none counts): {agree}/{len(pairs)} = {agree / len(pairs):.3f}")
    print(
        f"agreement where either reader gave one: {either_agree}/{len(either)}"
        f" = {either_agree / len(either):.3f}"
    )
    print(f"Cohen's kappa over 8 categories (7 tags + none): {cohen_kappa(pairs):.3f}")
    print(
        f"first reader gave one: {sum(a != NONE for a, _ in pairs)}, second reader: "
        f"{sum(b != NONE for _, b in pairs)}, both: {sum(NONE not in p for p in pairs)}"
    )


if __name__ == "__main__":
    main()
