"""Build the labelled stream pool (`data/pool/stream.json`) from the drawn rows and their labels.

Inputs, all in data/pool/: `drawn.json` (scripts/pool_draw.py: the registry rows and the rule
that drew each), `labels/first_*.json` (the labels, one object per drawn row: tag, also, kind,
non_ml, note), `labels/second.json` (a blind second labelling of a seeded sample) and
`labels/adjudicated.json` (the decision on each disagreement, with its reason).

A drawn row is left out, and listed with the row it copies in `build_report.json`, when the pool
validator (mltagger.data.pool.check_pool) finds it an exact or near copy of a training item, a
fresh-set item or an earlier pool row, or the same registry package as one of them. Nothing else
is left out: the pool keeps the stream's placeholders and spam, labelled `other`.

    python scripts/pool_build.py      # writes stream.json, second_labels.json, build_report.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sklearn.metrics import cohen_kappa_score  # noqa: E402

from mltagger.core.config import load_data_config  # noqa: E402
from mltagger.data.pool import describe_pool, pool_report  # noqa: E402
from mltagger.data.validation import sha256_file  # noqa: E402

POOL = ROOT / "data" / "pool"
# Vocabulary of items near language models, for the report's count of those that are not NLP.
NEAR_LLM = re.compile(
    r"\bLLMs?\b|language model|\bGPT|\bagents?\b|\bagentic\b|\bRAG\b|transformer|attention|"
    r"\bMCP\b|chatbot|prompt",
    re.IGNORECASE,
)


def rows(drawn: list[dict], labels: dict[int, dict], adjudicated: dict[int, dict]) -> list[dict]:
    out = []
    for d in drawn:
        lab = {**labels[d["id"]], **adjudicated.get(d["id"], {}).get("final", {})}
        row = {
            "id": d["id"],
            "created_on": f"{d['month']}-01",
            "title": d["name"],
            "description": d["summary"],
            "tag": lab["tag"],
            "also": lab.get("also") or "",
            "kind": lab["kind"],
            "non_ml": bool(lab["non_ml"]),
            "reference": f"pypi:{d['name']}=={d['version']} ({d['month']})",
            "text_origin": "author-summary",
            "rule": d["rule"],
        }
        if lab.get("note"):
            row["note"] = lab["note"]
        out.append(row)
    return out


def near_llm(pool: list[dict]) -> dict:
    """Items whose text uses language-model vocabulary, per tag: in the uniform ML stratum (the
    stream's real mix) and in the whole pool."""
    out = {}
    for name, part in (("ml-uniform", [r for r in pool if r["rule"].startswith("ml-uniform")]),
                       ("pool", pool)):  # fmt: skip
        near = [r for r in part if NEAR_LLM.search(f"{r['title']} {r['description']}")]
        out[name] = {
            "items": len(part),
            "near_llm": len(near),
            "not_nlp": sum(r["tag"] != "natural-language-processing" for r in near),
            "tags": dict(sorted(Counter(r["tag"] for r in near).items())),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    drawn = json.loads((POOL / "drawn.json").read_text())
    labels = {}
    for f in sorted((POOL / "labels").glob("first_*.json")):
        for x in json.loads(f.read_text()):
            labels[x["id"]] = x
    missing = [d["id"] for d in drawn if d["id"] not in labels]
    if missing:
        print(f"{len(missing)} drawn rows have no label yet (first: {missing[:5]})")
        return 1
    second = {x["id"]: x for x in json.loads((POOL / "labels" / "second.json").read_text())}
    adj_path = POOL / "labels" / "adjudicated.json"
    adjudicated = {}
    if adj_path.exists():
        adjudicated = {x["id"]: x for x in json.loads(adj_path.read_text())}
    disagree = [i for i in sorted(second) if second[i]["tag"] != labels[i]["tag"]]
    undecided = [i for i in disagree if i not in adjudicated]
    if undecided:
        print(f"disagreements not adjudicated in {adj_path.name}: {undecided}")
        return 1

    data_cfg = load_data_config("with_packages")
    pool = rows(drawn, labels, adjudicated)
    left_out = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stream.json"
        while True:
            path.write_text(json.dumps(pool, ensure_ascii=False))
            report = pool_report(path, data_cfg, ROOT)
            if report.ok:
                break
            # leave out the rows the validator refuses (a copy: the later row of a pair goes)
            bad = {p.id: str(p) for p in report.problems}
            other_problems = [p for p in report.problems if p.field not in ("title", "reference")]
            if other_problems:
                print(report.format())
                return 1
            left_out += [{"id": i, "why": why} for i, why in bad.items()]
            pool = [r for r in pool if r["id"] not in bad]
    (POOL / "stream.json").write_text(json.dumps(pool, indent=1, ensure_ascii=False) + "\n")

    kept = {r["id"] for r in pool}
    pairs = []
    for i in sorted(second):
        pairs.append(
            {
                "id": i,
                "first": labels[i]["tag"],
                "second": second[i]["tag"],
                "second_also": second[i].get("also") or "",
                "final": adjudicated.get(i, {}).get("final", {}).get("tag", labels[i]["tag"]),
                "reason": adjudicated.get(i, {}).get("reason", ""),
                "in_pool": i in kept,
            }
        )
    (POOL / "second_labels.json").write_text(json.dumps(pairs, indent=1) + "\n")
    a, b = [p["first"] for p in pairs], [p["second"] for p in pairs]
    strata = Counter(r["rule"].split(" ")[0] for r in pool)
    summary = {
        "items": len(pool),
        "tags": dict(sorted(Counter(r["tag"] for r in pool).items())),
        "other_not_ml": sum(r["non_ml"] for r in pool),
        "with_also": sum(bool(r["also"]) for r in pool),
        "text_origin": dict(Counter(r["text_origin"] for r in pool)),
        "kinds": dict(Counter(r["kind"] for r in pool).most_common()),
        "strata": dict(sorted(strata.items())),
        "months": [min(r["created_on"] for r in pool), max(r["created_on"] for r in pool)],
        "second_labelling": {
            "items": len(pairs),
            "agree": sum(x == y for x, y in zip(a, b, strict=True)),
            "cohen_kappa": round(float(cohen_kappa_score(a, b)), 3),
            "disagreements": len(disagree),
        },
        "near_llm": near_llm(pool),
        "left_out": left_out,
        "sha256": sha256_file(POOL / "stream.json"),
    }
    (POOL / "build_report.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(describe_pool(pool))
    print(json.dumps({k: v for k, v in summary.items() if k != "left_out"}, indent=1))
    print(f"left out: {len(left_out)} (build_report.json)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
