"""Draw the candidates of the labelled stream pool from the PyPI registry list, by a fixed rule.

The rule (written before any item was read, recorded per item as `rule`): every 2023-2026 row of
the registry list (`packages/pypi.tsv` of the environment: name, version, month of that release,
download rank, the author's one-line summary) with a summary of at least 30 characters, whose
name is not already used by a training source (`data/packages.json`, its registry subset) or
cited by the fresh set, falls in one stratum, checked in this order:

- `topic-<tag>`: the summary matches that tag's boost pattern (TOPIC_BOOST, below), for the four
  small tags and computer vision, which a uniform draw would hardly reach (at least 120 each);
- `ml-uniform`: the summary uses ML vocabulary (package_pool._ML_VOCAB): the stream's real mix,
  with its real share of items *near* language models (serving, gateways, kernels, optimisers);
- `non-ml-uniform`: everything else (web frameworks, SDKs, add-ons, placeholders, spam).

From each stratum a seeded uniform sample of the size in SIZES is drawn (all of the graph one).
The stratum only decides which rows are read: every drawn row is labelled by reading it
(data/eval/GUIDE.md), and one that matched `topic-graph-learning` may well be `other`.
Nothing here runs a model.

    python scripts/pool_draw.py --registry /work/.library/env/packages/pypi.tsv

writes `data/pool/drawn.json` (the candidates, in a seeded order, with their rule) and
`data/pool/registry_rows.tsv` (the registry rows behind them, so a clone can check every row).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mltagger.data.package_pool import (  # noqa: E402
    _ML_VOCAB,
    _norm,
    fresh_package_names,
    read_registry,
)

SEED = 31
MIN_SUMMARY = 30
FIRST_ID = 500001
TOPIC_BOOST = {
    "reinforcement-learning": r"reinforcement learning|\bRL\b|gymnasium|\bgym\b|multi-agent|"
    r"\bbandits?\b|\bPPO\b|\bDQN\b|reward",
    "graph-learning": r"graph neural|\bGNNs?\b|graph (?:representation|embedding|learning|"
    r"transformer|convolution|attention|contrastive|pooling|autoencoder|classification|generation|"
    r"diffusion)|node (?:classification|embedding)|link prediction|molecular graph|node2vec|"
    r"\bPyG\b|torch[_-]geometric|\bDGL\b|message[- ]passing|knowledge graph (?:embedding|"
    r"completion)|graph[- ]based (?:learning|machine learning|deep learning)|hypergraph|"
    r"heterogeneous graph|graph (?:machine|deep) learning|graph structure learning|spectral graph|"
    r"equivariant",
    "time-series": r"time[- ]?series|forecasting|temporal anomaly|\bARIMA\b",
    "mlops": r"\bMLOps\b|model serving|inference server|experiment tracking|model registry|"
    r"feature store|model monitoring|\bdrift\b|LLM gateway|observability",
    "computer-vision": r"computer vision|object detection|image segmentation|\bYOLO|"
    r"point clouds?|\bOCR\b|image generation|diffusion model",
}
SIZES = {
    "topic-reinforcement-learning": 160,
    "topic-graph-learning": None,  # all of them: the graph stratum is small (under 300)
    "topic-time-series": 160,
    "topic-mlops": 140,
    "topic-computer-vision": 120,
    "ml-uniform": 450,
    "non-ml-uniform": 200,
}
_BOOST = {t: re.compile(p, re.IGNORECASE) for t, p in TOPIC_BOOST.items()}

# Stage 2, after the first 1,503 were labelled: reinforcement learning (58 labelled items) and
# graph learning (119) were short of 120, time series (121) and computer vision (124) close to it
# (the RL boost pattern's "reward" and "gym" matched loyalty schemes and fitness apps). A top-up
# from the rows stage 1 did not draw, with stricter patterns, checked in this order; the rows
# drawn are labelled by reading, like the others. The counts of stage 1 decided the sizes, never
# a model's answer.
TOP_UP = {
    "reinforcement-learning": r"reinforcement[- ]learning|\bRL (?:agents?|algorithms?|"
    r"environments?|library|framework|training|policies|policy)|gymnasium|multi-agent "
    r"reinforcement|\bPPO\b|\bDQN\b|actor[- ]critic|policy gradient|offline RL|\bMARL\b|"
    r"\bMDPs?\b|markov decision",
    "graph-learning": r"interatomic potential|machine[- ]learn(?:ing|ed) (?:inter)?atomic|"
    r"message[- ]passing neural|graph convolutional|graph attention network|GraphSAGE|\bGCNs?\b|"
    r"\bGAT\b|geometric deep learning|molecular property prediction|graph (?:neural|ML)|"
    r"(?:node|edge|graph)[- ]level (?:prediction|classification)|knowledge graph (?:completion|"
    r"reasoning|embedding)|\bKGE\b",
    "time-series": r"time[- ]series (?:forecasting|classification|anomaly|foundation|models?)|"
    r"forecasting models?|temporal fusion|N-BEATS|N-HiTS|probabilistic forecasting|"
    r"demand forecasting",
    "computer-vision": r"object detection|semantic segmentation|instance segmentation|"
    r"image classification|pose estimation|\bYOLO|vision transformer|image super[- ]resolution|"
    r"depth estimation",
}
TOP_UP_SIZES = {
    "top-up-reinforcement-learning": 150,
    "top-up-graph-learning": None,  # all of them (about 100)
    "top-up-time-series": 40,
    "top-up-computer-vision": 30,
}
_TOP_UP = {t: re.compile(p, re.IGNORECASE) for t, p in TOP_UP.items()}


def stratum(name: str, summary: str) -> str:
    """The stratum of a registry row (the first that matches, in the order above)."""
    text = f"{name}: {summary}"
    for tag, pattern in _BOOST.items():
        if pattern.search(summary):
            return f"topic-{tag}"
    return "ml-uniform" if _ML_VOCAB.search(text) else "non-ml-uniform"


def used_names() -> set[str]:
    """Package names a training source or the fresh set already holds: never drawn."""
    names = {_norm(it["title"]) for it in json.loads((ROOT / "data/packages.json").read_text())}
    with (ROOT / "data/packages/pypi_subset.tsv").open(encoding="utf-8") as fh:
        names |= {_norm(r[0]) for r in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)}
    return names | fresh_package_names(ROOT / "data/eval/fresh.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--registry", type=Path, required=True, help="the registry list (pypi.tsv)")
    ap.add_argument("--out", type=Path, default=ROOT / "data/pool")
    args = ap.parse_args(argv)
    used = used_names()
    by_stratum: dict[str, list[dict]] = {s: [] for s in SIZES}
    seen: set[str] = set()
    for row in read_registry(args.registry):
        key = _norm(row["name"])
        if len(row["summary"]) < MIN_SUMMARY or key in used or key in seen:
            continue
        seen.add(key)
        by_stratum[stratum(row["name"], row["summary"])].append(row)
    rng = random.Random(SEED)
    drawn = []
    for s, wanted in SIZES.items():
        rows = sorted(by_stratum[s], key=lambda r: _norm(r["name"]))
        size = len(rows) if wanted is None else wanted
        for rank, row in enumerate(rng.sample(rows, size)):
            drawn.append(
                {
                    **row,
                    "rule": f"{s} (seed {SEED}, {rank + 1} of {size} drawn "
                    f"uniformly from {len(rows)})",
                }
            )
    rng.shuffle(drawn)  # the labeller reads the strata mixed, not one stratum at a time
    taken = {_norm(r["name"]) for r in drawn}
    top_up: dict[str, list[dict]] = {s: [] for s in TOP_UP_SIZES}
    for s in SIZES:
        for row in by_stratum[s]:
            if _norm(row["name"]) in taken:
                continue
            tag = next((t for t, p in _TOP_UP.items() if p.search(row["summary"])), None)
            if tag is not None:
                top_up[f"top-up-{tag}"].append(row)
    second = []
    for s, wanted in TOP_UP_SIZES.items():
        rows = sorted(top_up[s], key=lambda r: _norm(r["name"]))
        size = len(rows) if wanted is None else wanted
        for rank, row in enumerate(rng.sample(rows, size)):
            second.append({**row, "rule": f"{s} (stage 2, seed {SEED}, {rank + 1} of {size} "
                           f"drawn uniformly from {len(rows)})"})  # fmt: skip
    rng.shuffle(second)
    drawn += second
    args.out.mkdir(parents=True, exist_ok=True)
    items = [
        {
            "id": FIRST_ID + i,
            "name": r["name"],
            "version": r["version"],
            "month": r["month"],
            "summary": r["summary"],
            "rule": r["rule"],
        }
        for i, r in enumerate(drawn)
    ]
    (args.out / "drawn.json").write_text(json.dumps(items, indent=1, ensure_ascii=False) + "\n")
    with (args.out / "registry_rows.tsv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(
            fh, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n"
        )
        w.writerow(["name", "version", "month", "rank", "summary"])
        for r in sorted(drawn, key=lambda r: _norm(r["name"])):
            w.writerow([r["name"], r["version"], r["month"], r["rank"], r["summary"]])
    sizes = Counter(r["rule"].split(" ")[0] for r in items)
    print(f"{len(items)} candidates drawn -> {args.out / 'drawn.json'}")
    for s in SIZES:
        print(f"  {s:30s} {sizes[s]:4d} of {len(by_stratum[s])}")
    for s in TOP_UP_SIZES:
        print(f"  {s:30s} {sizes[s]:4d} of {len(top_up[s])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
