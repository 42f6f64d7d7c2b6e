"""Draw the in-scope gate's negatives from the registry package lists, by a fixed rule.

The gate (issue 32) decides whether an item belongs to any of the six topics at all; it learns
from real negatives only: the package authors' own one-line summaries, word for word (nothing
generated, nothing chosen by a model). The rule, written before any row was read and recorded
per row as `stratum` (and in `rule`):

A registry row is a candidate when its summary (npm: without the list's `[tested here: ...]`
prefix; NuGet: without the trailing `[tags]`) has at least MIN_SUMMARY characters, reads as an
English sentence (ENGLISH: at least 90% ASCII characters, at least 60% ASCII letters and at
least 4 words), is not a placeholder (PLACEHOLDER), and its normalised name is not a package
that a training source (`data/packages.json` and its registry subset), the stream pool
(`data/pool/stream.json`, `data/pool/registry_rows.tsv`) or the fresh set already names. It falls
in the first stratum that matches, in this order:

- `oos-<kind>` (PyPI only, any month): the summary matches the OUT_OF_SCOPE pattern of that
  kind of out-of-scope ML (tabular and AutoML, recommenders, optimisers, kernels and frameworks,
  classical ML and statistics, non-speech audio and music) and ML_CUE (a word about learning),
  and gets no keyword vote for one of the six topics (package_pool.LABELLING_FUNCTIONS) and no
  match of the kind's UNLESS pattern (speech stays NLP);
- `not-ml-<source>` (PyPI, npm, NuGet): the name and summary match neither the package pool's ML
  vocabulary (package_pool._ML_VOCAB) nor MORE_ML (LLM, AI and model words it misses);
- any other row is not drawn.

From each stratum a seeded uniform sample of the size in SIZES is drawn. A drawn row is then left
out (each counted in build_report.json) when it is an exact or near copy (mltagger.data.fresh.
overlaps: TF-IDF cosine >= 0.7 or the same title) of a training, fresh-set or pool item, or of an
earlier drawn row. Every drawn out-of-scope-ML row, and a seeded sample of SPOT_READ not-ML rows,
was then read against data/eval/GUIDE.md: a row that is a topic item by the guide is dropped, with
its reason, in `data/negatives/reading.json` (id -> keep/drop, reason), which this script applies.

    python scripts/negatives_draw.py --registry /work/.library/env/packages

writes `data/negatives/registry.json` and `data/negatives/build_report.json`; with
`--unread FILE` it writes the rows that still need a reading decision there.
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

from mltagger.core.config import load_data_config  # noqa: E402
from mltagger.data.duplicates import near_duplicate_groups  # noqa: E402
from mltagger.data.fresh import overlaps  # noqa: E402
from mltagger.data.package_pool import _ML_VOCAB, _norm, fresh_package_names, votes  # noqa: E402
from mltagger.data.pool import references  # noqa: E402
from mltagger.data.text import clean_text, join_text  # noqa: E402
from mltagger.data.validation import load_items, sha256_file  # noqa: E402

SEED = 32
MIN_SUMMARY = 30
FIRST_ID = 700001
SPOT_READ = 100
OUT = ROOT / "data" / "negatives"
SIZES = {
    "oos-tabular": 80,
    "oos-recommender": 80,
    "oos-optimiser": 80,
    "oos-kernels-frameworks": 80,
    "oos-classical": 80,
    "oos-audio-music": 80,
    "not-ml-pypi": 1000,
    "not-ml-npm": 600,
    "not-ml-nuget": 400,
}
MORE_ML = re.compile(
    r"\bML\b|\bLLM|\bGPT|\bA\.?I\.?\b|\bAI[- ]|openai|anthropic|claude|gemini|ollama|mistral|"
    r"llama|hugging\s?face|langchain|copilot|prompt|\bRAG\b|\bMCP\b|\bagents?\b|agentic|"
    r"\bmodels?\b|neural|intelligen|cognitive|generative|diffusion|\bOCR\b|recogni|detect|"
    r"sentiment|tokeni|cluster|autonomous|\bbots?\b|semantic|embedding|vector",
    re.IGNORECASE,
)
PLACEHOLDER = re.compile(
    r"placeholder|reserved|security holding|holding package|name squat|test package|"
    r"testing package|hello world|\bdummy\b|\bdo not use\b|coming soon|my first|"
    r"^(?:a |just a )?test\b|lorem ipsum",
    re.IGNORECASE,
)
# A cue that the row is about learning at all: an out-of-scope stratum also needs this match.
ML_CUE = re.compile(
    r"machine learning|deep learning|neural|\bmodels?\b|learning|torch|tensorflow|"
    r"\bjax\b|keras|\bAI\b|\bGPUs?\b|cuda|train|inference|predict|classif|scikit|sklearn|"
    r"regression|statistic|bayes",
    re.IGNORECASE,
)
OUT_OF_SCOPE = {
    "tabular": r"gradient[- ]boost|\bXGBoost|\bLightGBM|\bCatBoost|tabular (?:data|learning|"
    r"machine learning|deep learning|models?|foundation|classification|regression)|\bAutoML\b|"
    r"automated machine learning",
    "recommender": r"recommend(?:er|ation)s? (?:systems?|engines?|models?|algorithms?|library|"
    r"framework)|recommender|collaborative filtering|matrix factori[sz]ation|click[- ]through "
    r"rate|\bCTR prediction",
    "optimiser": r"\boptimi[sz]ers?\b|learning[- ]rate|\bAdamW?\b|\bSGD\b|second[- ]order "
    r"optimi|gradient descent|convex optimi|(?:stochastic|black[- ]box|derivative[- ]free|"
    r"evolutionary|multi[- ]objective|zeroth[- ]order) optimi[sz]ation|loss landscape",
    "kernels-frameworks": r"CUDA kernels?|\bTriton\b|flash[- ]?attention|attention kernels?|"
    r"\bGEMM\b|fused (?:kernels?|operators?)|tensor (?:library|computations?|operations|"
    r"compiler)|deep[- ]learning (?:framework|library|compiler)|autograd|automatic "
    r"differentiation|neural network (?:library|framework)|quantization|mixed[- ]precision|"
    r"distributed training|model parallel",
    "classical": r"scikit-learn|\bsklearn\b|\bclustering\b|\bk-means\b|support vector|\bSVMs?\b|"
    r"random forests?|decision trees?|(?:linear|logistic) regression|statistical (?:tests?|"
    r"models?|modell?ing|inference|learning)|bayesian (?:inference|statistics|modell?ing)|"
    r"\bMCMC\b|causal inference|dimensionality reduction|\bPCA\b|gaussian process",
    "audio-music": r"\bmusic|\bMIDI\b|sound[- ]event|audio (?:effects?|tagging|classification|"
    r"processing|features?|analysis|augmentation|generation|separation|embeddings?)|"
    r"beat tracking|\bchords?\b|source separation|\bsongs?\b|\binstruments?\b",
}
UNLESS = {"audio-music": r"speech|voice|spoken|speaker|\bTTS\b|\bASR\b|transcri"}
_OOS = {k: re.compile(p, re.IGNORECASE) for k, p in OUT_OF_SCOPE.items()}
_UNLESS = {k: re.compile(p, re.IGNORECASE) for k, p in UNLESS.items()}
TOPICS = {t for t in load_data_config("with_packages").tags if t != "other"}


def english(summary: str) -> bool:
    s = summary.strip()
    if not s:
        return False
    ascii_share = sum(c.isascii() for c in s) / len(s)
    letters = sum(c.isascii() and c.isalpha() for c in s) / len(s)
    return ascii_share >= 0.9 and letters >= 0.6 and len(s.split()) >= 4


def candidate(summary: str) -> bool:
    return len(summary) >= MIN_SUMMARY and english(summary) and not PLACEHOLDER.search(summary)


def stratum(source: str, name: str, summary: str) -> str | None:
    """The stratum of a registry row (the first that matches, in the order above), else None."""
    text = f"{name}: {summary}"
    if source == "pypi" and ML_CUE.search(summary) and not (set(votes(text)) & TOPICS):
        for kind, pattern in _OOS.items():
            unless = _UNLESS.get(kind)
            if pattern.search(summary) and not (unless and unless.search(text)):
                return f"oos-{kind}"
    if _ML_VOCAB.search(text) or MORE_ML.search(text):
        return None
    return f"not-ml-{source}"


def _tsv(path: Path):
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader, None)
        yield from reader


def registry_rows(folder: Path):
    """(source, name, version, month or None, summary) of the three lists."""
    for r in _tsv(folder / "pypi.tsv"):
        if len(r) >= 5:
            yield "pypi", r[0], r[1], r[2], r[4]
    for r in _tsv(folder / "npm.tsv"):
        if len(r) >= 4:
            yield "npm", r[0], r[1], None, re.sub(r"^\[tested here:[^\]]*\]\s*", "", r[3])
    for r in _tsv(folder / "nuget.tsv"):
        if len(r) < 5:
            continue
        versions = [v for v in [r[1], *reversed(r[4].split())] if re.match(r"\d", v)]
        if versions:
            summary = re.sub(r"\s*\[[^\]]*\]?\s*$", "", r[3])
            yield "nuget", r[0], versions[0], None, summary


def reference(source: str, name: str, version: str) -> str:
    return {"pypi": f"pypi:{name}=={version}", "npm": f"npm:{name}@{version}"}.get(
        source, f"nuget:{name}/{version}"
    )


def used_names() -> set[str]:
    """Package names a training source, the stream pool or the fresh set already holds."""
    names = {_norm(it["title"]) for it in json.loads((ROOT / "data/packages.json").read_text())}
    names |= {_norm(it["title"]) for it in json.loads((ROOT / "data/pool/stream.json").read_text())}
    for tsv in ("data/packages/pypi_subset.tsv", "data/pool/registry_rows.tsv"):
        names |= {_norm(r[0]) for r in _tsv(ROOT / tsv) if r}
    return names | fresh_package_names(ROOT / "data/eval/fresh.json")


def draw(folder: Path) -> tuple[list[dict], dict]:
    """The seeded draw, before copies are left out: rows with their stratum and rule."""
    used = used_names()
    by_stratum: dict[str, list[dict]] = {s: [] for s in SIZES}
    seen: set[tuple[str, str]] = set()
    counts = Counter()
    for source, name, version, month, summary in registry_rows(folder):
        key = (source, _norm(name))
        if key in seen or not candidate(summary):
            continue
        seen.add(key)
        s = stratum(source, name, summary)
        if s is None:
            continue
        if key[1] in used:
            counts[f"same package name as a training, pool or fresh row ({s})"] += 1
            continue
        by_stratum[s].append(
            {"source": source, "name": name, "version": version, "month": month, "summary": summary}
        )
    rng = random.Random(SEED)
    drawn = []
    for s, wanted in SIZES.items():
        rows = sorted(by_stratum[s], key=lambda r: _norm(r["name"]))
        size = min(wanted, len(rows))
        for rank, row in enumerate(rng.sample(rows, size)):
            rule = f"{s} (seed {SEED}, {rank + 1} of {size} drawn uniformly from {len(rows)})"
            drawn.append({**row, "stratum": s, "rule": rule})
    for i, row in enumerate(drawn):
        row["id"] = FIRST_ID + i
    available = {s: len(v) for s, v in by_stratum.items()}
    return drawn, {"available": available, "name_exclusions": dict(counts)}


def as_item(row: dict) -> dict:
    title, desc = clean_text(row["name"]), clean_text(row["summary"])
    return {"id": row["id"], "title": title, "text": join_text(title, desc)}


def leave_out_copies(drawn: list[dict]) -> tuple[list[dict], list[dict]]:
    """Rows that copy a training, fresh or pool item, or an earlier drawn row, left out."""
    cfg = load_data_config("with_packages")
    refs = references(cfg, ROOT)
    pool = load_items(ROOT / "data/pool/stream.json", list(cfg.tags), labeled=True).items
    near = cfg.near_duplicates
    th, title_min = float(near.threshold), int(near.same_title_min_chars)
    items = [as_item(r) for r in drawn]
    left_out: dict[int, str] = {}
    for what, others in (("training", refs["training"]), ("fresh", refs["fresh"]), ("pool", pool)):
        for rid, m in overlaps(items, others, th, title_min).items():
            left_out.setdefault(rid, f"{m['how']} of {what} item {m['training_id']}")
    for group in near_duplicate_groups(items, th, title_min):
        for rid in group[1:]:
            left_out.setdefault(rid, f"near copy of drawn row {group[0]}")
    out = [
        {
            "id": r["id"],
            "reference": reference(r["source"], r["name"], r["version"]),
            "why": left_out[r["id"]],
        }
        for r in drawn
        if r["id"] in left_out
    ]
    return [r for r in drawn if r["id"] not in left_out], out


def near_copies_within(rows: list[dict]) -> list[dict]:
    """After the reading drops: the kept rows' own near copies, left out until none is left (the
    TF-IDF weights change with the rows, so the validator's check is repeated on the final set)."""
    near = load_data_config("with_packages").near_duplicates
    out = []
    while True:
        items = [as_item(r) for r in rows]
        groups = near_duplicate_groups(items, float(near.threshold), int(near.same_title_min_chars))
        later = {rid: g[0] for g in groups for rid in g[1:]}
        if not later:
            return out
        out += [
            {
                "id": r["id"],
                "reference": reference(r["source"], r["name"], r["version"]),
                "why": f"near copy of drawn row {later[r['id']]} (after reading)",
            }
            for r in rows
            if r["id"] in later
        ]
        rows = [r for r in rows if r["id"] not in later]


def to_read(rows: list[dict]) -> list[dict]:
    """Every out-of-scope-ML row and a seeded sample of SPOT_READ not-ML rows."""
    oos = [r for r in rows if r["stratum"].startswith("oos-")]
    not_ml = [r for r in rows if r["stratum"].startswith("not-ml-")]
    spot = random.Random(SEED + 1).sample(not_ml, min(SPOT_READ, len(not_ml)))
    return oos + sorted(spot, key=lambda r: r["id"])


def final_row(r: dict) -> dict:
    return {
        "id": r["id"],
        "title": r["name"],
        "description": r["summary"],
        "tag": "other",
        "created_on": f"{r['month']}-01 00:00:00" if r["month"] else None,
        "source": r["source"],
        "stratum": r["stratum"],
        "rule": r["rule"],
        "reference": reference(r["source"], r["name"], r["version"]),
        "text_origin": "author-summary",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--registry", type=Path, required=True, help="folder of pypi/npm/nuget.tsv")
    ap.add_argument("--unread", type=Path, help="write the rows still to be read here")
    args = ap.parse_args(argv)
    drawn, counts = draw(args.registry)
    kept, copies = leave_out_copies(drawn)
    read = to_read(kept)
    path = OUT / "reading.json"
    reading = {x["id"]: x for x in json.loads(path.read_text())} if path.exists() else {}
    unread = [r for r in read if r["id"] not in reading]
    stale = [
        r["id"]
        for r in read
        if r["id"] in reading
        and reading[r["id"]]["reference"] != reference(r["source"], r["name"], r["version"])
    ]
    if stale:
        print(f"reading.json decisions for other rows than drawn: {stale[:5]}")
        return 1
    if unread:
        if args.unread:
            args.unread.write_text(json.dumps([final_row(r) for r in unread], indent=1) + "\n")
        print(f"{len(unread)} rows have no reading decision yet (--unread writes them)")
        return 1
    dropped = [
        {
            "id": i,
            "reference": reading[i]["reference"],
            "stratum": reading[i]["stratum"],
            "reason": reading[i]["reason"],
        }
        for i in sorted(reading)
        if reading[i]["decision"] == "drop"
    ]
    drop_ids = {d["id"] for d in dropped}
    final = [r for r in kept if r["id"] not in drop_ids]
    copies += near_copies_within(final)
    rows = [final_row(r) for r in final if r["id"] not in {c["id"] for c in copies}]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "registry.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    spot = [r for r in read if r["stratum"].startswith("not-ml-")]
    report = {
        "items": len(rows),
        "per_source": dict(sorted(Counter(r["source"] for r in rows).items())),
        "per_stratum": dict(sorted(Counter(r["stratum"] for r in rows).items())),
        "available_per_stratum": counts["available"],
        "rule": "scripts/negatives_draw.py (its docstring); reading: data/negatives/reading.json",
        "drawn_per_stratum": dict(sorted(Counter(r["stratum"] for r in drawn).items())),
        "excluded_same_package_name": counts["name_exclusions"],
        "excluded_copies": {
            "count": len(copies),
            "by_kind": {
                k: sum(f" of {k} " in c["why"] for c in copies)
                for k in ("training", "fresh", "pool", "drawn")
            },
            "rows": copies,
        },
        "read": {
            "out_of_scope_ml": sum(r["stratum"].startswith("oos-") for r in read),
            "not_ml_spot_sample": len(spot),
            "not_ml_spot_sample_topic_items": sum(r["id"] in drop_ids for r in spot),
        },
        "dropped_on_reading": dropped,
        "sha256": sha256_file(OUT / "registry.json"),
    }
    (OUT / "build_report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(
        json.dumps(
            {k: v for k, v in report.items() if k not in ("dropped_on_reading", "excluded_copies")},
            indent=1,
        )
    )
    print(f"copies left out: {len(copies)}; dropped on reading: {len(dropped)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
