"""A weakly labelled pool of 2023-2026 Python packages, labelled by keyword votes that abstain.

The registry's package list (`packages/pypi.tsv` of the environment: name, version, month of the
latest release, download rank, one-line summary) describes what ML libraries look like today,
which is what the 2020 training data lacks. No person labelled it, so each summary is put to
labelling functions: for every tag a set of keyword patterns that vote for it. A package gets a
tag only when exactly one tag votes for it; no vote, or votes for two tags, abstains (the package
is left out). Precision of the votes is measured on a hand-checked sample (docs/data.md).

Kept disjoint from the fresh evaluation set by construction: every package the fresh set cites
(`reference: pypi:<name>==...`) is excluded by name, and every exact or near copy of a fresh,
projects or other item is removed (mltagger.data.fresh.overlaps), before anything is written.

`make data-packages` reads the registry file (`--registry`, default the shipped subset
`data/packages/pypi_subset.tsv`) and writes `data/packages.json`; with the full registry it also
rewrites the subset (the registry rows behind the kept items), so a clone rebuilds the same pool
without the 76 MB registry.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from mltagger.core.errors import DataError
from mltagger.core.paths import resolve_path
from mltagger.data.fresh import overlaps
from mltagger.data.text import clean_text, join_text
from mltagger.data.validation import load_items, sha256_file

FIRST_ID = 300001
FIRST_MONTH, LAST_MONTH = "2023-01", "2026-12"
MIN_SUMMARY = 25
# Packages kept per tag: the most downloaded first (real, maintained libraries), then a seeded
# sample. The NLP vote alone finds ~18,000 LLM packages; a cap keeps the pool balanced and small.
PER_TAG = 250

# Keyword votes per tag (case-insensitive regexes on the summary and the name). Written for
# precision, not recall: a vague word ("model", "AI", "data") votes for nothing. The `other`
# patterns are the guide's `other` topics (tabular, boosting, AutoML, recommenders, statistics,
# interpretability, generic frameworks), so the pool also teaches what is out of scope.
LABELLING_FUNCTIONS: dict[str, list[str]] = {
    "natural-language-processing": [
        r"\bnatural language processing\b",
        r"\bNLP\b",
        r"\blarge language models?\b",
        r"\bLLMs?\b",
        r"\btokeni[sz]ers?\b",
        r"\bnamed entity\b",
        r"\bsentiment analysis\b",
        r"\btext classification\b",
        r"\bmachine translation\b",
        r"\bsummari[sz]ation\b",
        r"\bspeech[- ]to[- ]text\b",
        r"\btext[- ]to[- ]speech\b",
        r"\bspeech recognition\b",
        r"\bretrieval[- ]augmented\b",
        r"\bRAG\b",
        r"\bprompt engineering\b",
        r"\bchatbots?\b",
        r"\bword embeddings?\b",
        r"\bsentence embeddings?\b",
    ],
    "computer-vision": [
        r"\bcomputer vision\b",
        r"\bobject detection\b",
        r"\bimage segmentation\b",
        r"\bsemantic segmentation\b",
        r"\binstance segmentation\b",
        r"\bimage classification\b",
        r"\bpose estimation\b",
        r"\bYOLO\w*\b",
        r"\bOCR\b",
        r"\boptical character recognition\b",
        r"\bface (?:detection|recognition)\b",
        r"\bimage generation\b",
        r"\bdiffusion models?\b",
        r"\bstable diffusion\b",
        r"\bpoint clouds?\b",
        r"\bgaussian splatting\b",
        r"\bNeRF\b",
        r"\bvideo understanding\b",
        r"\bimage augmentation\b",
        r"\bvisual tracking\b",
    ],
    "mlops": [
        r"\bMLOps\b",
        r"\bLLMOps\b",
        r"\bmodel serving\b",
        r"\binference server\b",
        r"\bserve (?:ML |machine learning |LLMs? )?models?\b",
        r"\bmodel (?:registry|deployment|monitoring)\b",
        r"\bdeploy(?:ing|ment of)? (?:ML |machine learning )?models?\b",
        r"\bexperiment tracking\b",
        r"\bfeature store\b",
        r"\bdata drift\b",
        r"\bdrift detection\b",
        r"\bML (?:pipelines?|platform|observability)\b",
        r"\bLLM observability\b",
        r"\bmachine learning (?:pipelines?|platform|operations)\b",
        r"\bdata versioning\b",
    ],
    "reinforcement-learning": [
        r"\breinforcement learning\b",
        r"\bdeep RL\b",
        r"\bRL (?:agents?|environments?|algorithms?|library|framework)\b",
        r"\bmulti[- ]agent RL\b",
        r"\bgymnasium\b",
        r"\bOpenAI gym\b",
        r"\bpolicy gradient\b",
        r"\bQ-learning\b",
        r"\bPPO\b",
        r"\bmulti-armed bandits?\b",
        r"\boffline RL\b",
    ],
    "graph-learning": [
        r"\bgraph neural networks?\b",
        r"\bGNNs?\b",
        r"\bgraph (?:representation|machine) learning\b",
        r"\bgraph embeddings?\b",
        r"\bnode embeddings?\b",
        r"\bknowledge graph embeddings?\b",
        r"\blink prediction\b",
        r"\bgraph transformers?\b",
        r"\bnode classification\b",
        r"\bgraph convolutional\b",
    ],
    "time-series": [
        r"\btime[- ]series\b",
        r"\bforecasting\b",
        r"\btemporal anomaly\b",
        r"\bsensor streams?\b",
    ],
    "other": [
        r"\bgradient boost\w*\b",
        r"\bXGBoost\b",
        r"\bLightGBM\b",
        r"\bCatBoost\b",
        r"\btabular (?:data|learning|machine learning|models?)\b",
        r"\bAutoML\b",
        r"\bhyperparameter (?:optimi[sz]ation|tuning|search)\b",
        r"\brecommend(?:er|ation) systems?\b",
        r"\bscikit-learn\b",
        r"\bsklearn\b",
        r"\bfeature engineering\b",
        r"\bexplainab\w+\b",
        r"\binterpretab\w+\b",
        r"\bSHAP\b",
        r"\bcausal inference\b",
        r"\bbayesian (?:inference|statistics|optimi[sz]ation)\b",
        r"\bstatistical (?:tests?|models?|analysis)\b",
    ],
}
# A blind check of 140 pool items (20 per tag, data/packages/sample_check.json) agreed with 126
# (90%); the bare word "forecast(s)" caught weather apps and ERP add-ons and was removed after it.
# Not ML at all: a popular package (in the registry's top-15000 by downloads, so a real,
# maintained project rather than a placeholder) whose name and summary use none of this
# vocabulary is `other` - what the stream's web frameworks, cloud SDKs and developer tools look
# like. Kept apart from the ML `other` votes and capped on its own (NON_ML_CAP).
_ML_VOCAB = re.compile(
    r"machine learning|deep learning|neural|\bAI\b|artificial intelligence|\bmodels?\b|\bLLM|"
    r"\bGPT|language model|learning|data science|dataset|tensor|torch|vision|\bNLP\b|embedding|"
    r"inference|training|predict|classif|regression|statistic|forecast|agent|transformer|cuda|"
    r"\bgpu|numpy|pandas|scipy|jupyter|notebook|mlflow|onnx|keras|scikit|sklearn|bayes|"
    r"optimi[sz]|analytics|analysis|kalman|signal|time.?series|graph|image|video|audio|speech|"
    r"text|chat|semantic|vector|recommend|reinforcement|robot",
    re.IGNORECASE,
)
NON_ML_VOTE = "non-ML: top-15000 package, no ML vocabulary"
NON_ML_CAP = 150
# Any of these makes a summary a candidate at all (kept in the shipped subset).
_ANY = re.compile("|".join(p for ps in LABELLING_FUNCTIONS.values() for p in ps), re.IGNORECASE)
_COMPILED = {t: [re.compile(p, re.IGNORECASE) for p in ps] for t, ps in LABELLING_FUNCTIONS.items()}


def votes(text: str) -> dict[str, list[str]]:
    """Tag -> the patterns that voted for it (only tags with at least one vote)."""
    out = {}
    for tag, patterns in _COMPILED.items():
        hits = [p.pattern for p in patterns if p.search(text)]
        if hits:
            out[tag] = hits
    return out


def label(text: str) -> str | None:
    """The tag when exactly one tag votes, else None (abstain)."""
    v = votes(text)
    return next(iter(v)) if len(v) == 1 else None


def read_registry(
    path: Path, months: tuple[str, str] | None = (FIRST_MONTH, LAST_MONTH)
) -> Iterable[dict]:
    """Rows of a registry TSV (name, version, month, rank, summary) with a summary of at least
    MIN_SUMMARY characters, inside the `months` range (None: any month)."""
    if not path.is_file():
        raise DataError(f"package registry {path} not found")
    first, last = months or ("", "~")
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or header[:3] != ["name", "version", "month"]:
            raise DataError(f"{path}: expected a header `name version month ... summary`")
        for row in reader:
            if len(row) < 5:
                continue
            name, version, month, rank, summary = row[:5]
            if not (first <= month <= last) or len(summary) < MIN_SUMMARY:
                continue
            yield {
                "name": name,
                "version": version,
                "month": month,
                "rank": rank,
                "summary": summary,
            }


def fresh_package_names(fresh_path: Path) -> set[str]:
    """Packages the fresh set cites: left out by name, whatever their summary says."""
    names = set()
    for it in json.loads(fresh_path.read_text()):
        m = re.match(r"pypi:([A-Za-z0-9_.\-]+)==", str(it.get("reference", "")))
        if m:
            names.add(_norm(m.group(1)))
    return names


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def build(
    registry: Path, root: Path, fresh: str = "data/eval/fresh.json"
) -> tuple[list[dict], list[dict], dict]:
    """(pool items, candidate rows, report)."""

    excluded = fresh_package_names(resolve_path(fresh, root))
    candidates, items, abstained, by_name = [], [], Counter(), 0
    for row in read_registry(registry):
        text = f"{row['name']}: {row['summary']}"
        non_ml = bool(row["rank"]) and not _ML_VOCAB.search(text)
        if not _ANY.search(text) and not non_ml:
            continue
        candidates.append(row)
        if _norm(row["name"]) in excluded:
            by_name += 1
            continue
        v = {"other": [NON_ML_VOTE]} if non_ml and not _ANY.search(text) else votes(text)
        if len(v) != 1:
            abstained["no vote" if not v else "conflicting votes"] += 1
            continue
        tag = next(iter(v))
        items.append(
            {
                "title": clean_text(row["name"]),
                "description": clean_text(row["summary"]),
                "tag": tag,
                "created_on": f"{row['month']}-01 00:00:00",
                "version": row["version"],
                "rank": row["rank"],
                "votes": v[tag],
                "source_file": "pypi.tsv (registry package list)",
            }
        )
    refs = []
    for path in ("data/projects.json", fresh, "data/other.json"):
        refs += [
            {**it, "text": join_text(it["title"], it["description"])}
            for it in load_items(resolve_path(path, root), _tags()).items
        ]
    for i, it in enumerate(items):
        it["id"] = i
        it["text"] = join_text(it["title"], it["description"])
    hits = overlaps(items, refs)
    kept = [it for it in items if it["id"] not in hits]
    # The same summary under several names (forks, renames): keep the first.
    seen, unique = set(), []
    for it in kept:
        key = it["description"].lower()
        if key not in seen:
            seen.add(key)
            unique.append(it)
    picked = _cap(unique, PER_TAG)
    out = []
    for n, it in enumerate(picked):
        it.pop("text")
        out.append({"id": FIRST_ID + n, **{k: v for k, v in it.items() if k != "id"}})
    report = {
        "registry": str(registry.name),
        "candidates": len(candidates),
        "excluded_fresh_packages": by_name,
        "abstained": dict(abstained),
        "removed_copies_of_reference": len(hits),
        "removed_same_summary": len(kept) - len(unique),
        "labelled_before_cap": len(unique),
        "labelled_before_cap_by_tag": dict(Counter(it["tag"] for it in unique).most_common()),
        "per_tag_cap": PER_TAG,
        "items": len(out),
        "by_tag": dict(Counter(it["tag"] for it in out).most_common()),
    }
    return out, candidates, report


def _cap(items: list[dict], cap: int) -> list[dict]:
    """At most `cap` per tag: ranked (most downloaded) packages first, then a seeded sample;
    the result keeps registry order, so a rebuild from the kept rows alone is identical."""

    keep: set[int] = set()
    non_ml = [it for it in items if it["votes"] == [NON_ML_VOTE]]
    random.Random("packages:non-ml").shuffle(non_ml)
    keep.update(it["id"] for it in non_ml[:NON_ML_CAP])
    for tag in LABELLING_FUNCTIONS:
        rows = [it for it in items if it["tag"] == tag and it["votes"] != [NON_ML_VOTE]]
        ranked = sorted((it for it in rows if it["rank"]), key=lambda it: int(it["rank"] or 0))[
            :cap
        ]
        rest = [it for it in rows if not it["rank"]]
        random.Random(f"packages:{tag}").shuffle(rest)
        keep.update(it["id"] for it in ranked + rest[: cap - len(ranked)])
    return [it for it in items if it["id"] in keep]


def _tags() -> list[str]:
    return list(LABELLING_FUNCTIONS)


def write_candidates(rows: Sequence[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("name\tversion\tmonth\trank_among_15000_most_downloaded\tsummary\n")
        for r in rows:
            fh.write(f"{r['name']}\t{r['version']}\t{r['month']}\t{r['rank']}\t{r['summary']}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """`make data-packages`: the labelled package pool -> data/packages.json."""
    p = argparse.ArgumentParser(prog="mltagger data-packages", description=main.__doc__)
    p.add_argument("--registry", default="data/packages/pypi_subset.tsv")
    p.add_argument("--candidates", default="data/packages/pypi_subset.tsv")
    p.add_argument("--out", default="data/packages.json")
    args = p.parse_args(argv)
    root = resolve_path(".", None)
    registry = resolve_path(args.registry, root)
    try:
        items, candidates, report = build(registry, root)
    except DataError as err:
        print(f"error: {err}")
        return 1
    cand = resolve_path(args.candidates, root)
    if registry.resolve() != cand.resolve():
        # Only the rows behind the kept items: rebuilding from them gives the same pool.
        used = {(it["title"], it["version"]) for it in items}
        rows = [r for r in candidates if (clean_text(r["name"]), r["version"]) in used]
        write_candidates(rows, cand)
        print(f"wrote {cand} ({len(rows)} registry rows, sha256 {sha256_file(cand)})")
    out = resolve_path(args.out, root)
    out.write_text(json.dumps(items, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if registry.resolve() != cand.resolve():  # the full registry's counts are the ones to keep
        (out.parent / "packages" / "build_report.json").write_text(
            json.dumps(report, indent=1) + "\n"
        )
    print(json.dumps(report, indent=1))
    print(f"wrote {out} ({len(items)} items, sha256 {sha256_file(out)})")
    return 0
