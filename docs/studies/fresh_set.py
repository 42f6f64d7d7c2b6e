"""Build and audit the fresh evaluation set (data/eval/fresh.json).

    python docs/studies/fresh_set.py merge BATCH.json... --out data/eval/fresh.json
    python docs/studies/fresh_set.py sample --frac 0.15 --seed 14      # ids for the second labeller
    python docs/studies/fresh_set.py agreement SECOND.json             # agreement, Cohen's kappa
    python docs/studies/fresh_set.py references [--pypi PATH]          # pypi refs against the list
    python docs/studies/fresh_set.py stats                             # counts the issue asks for

`merge` gives ids 100001.. in batch order, turns the batch's `date` (YYYY-MM) into `created_on`
(YYYY-MM-01: month precision) and keeps kind, reference, note and non_ml. The second labeller
sees only id, title and description of the sampled items (`sample --blind`), never the first
labels. `mltagger validate --fresh` checks the file itself (fields, tags, overlap with training).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FRESH = ROOT / "data" / "eval" / "fresh.json"
PYPI = Path("/work/.library/env/packages/pypi.tsv")
FIRST_ID = 100001


def merge(batches: list[str], out: Path) -> None:
    rows = []
    for path in batches:
        for it in json.loads(Path(path).read_text()):
            row = {
                "id": FIRST_ID + len(rows),
                "created_on": f"{it['date']}-01",
                "title": it["title"].strip(),
                "description": it["description"].strip(),
                "tag": it["tag"],
                "kind": it["kind"],
                "reference": it["reference"].strip(),
                "note": (it.get("note") or "").strip(),
            }
            if it.get("non_ml"):
                row["non_ml"] = True
            rows.append(row)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(rows)} items -> {out}")


def sample(frac: float, seed: int, blind: Path | None) -> None:
    rows = json.loads(FRESH.read_text())
    k = round(frac * len(rows))
    chosen = sorted(random.Random(seed).sample([r["id"] for r in rows], k))
    print(json.dumps(chosen))
    if blind is not None:
        keep = {i for i in chosen}
        blind.write_text(
            json.dumps(
                [
                    {"id": r["id"], "title": r["title"], "description": r["description"]}
                    for r in rows
                    if r["id"] in keep
                ],
                indent=1,
                ensure_ascii=False,
            )
            + "\n"
        )
        print(f"{k} items for the second labeller (no first labels) -> {blind}", file=sys.stderr)


def kappa(a: list[str], b: list[str]) -> float:
    n = len(a)
    po = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    pe = sum(ca[t] * cb[t] for t in set(a) | set(b)) / (n * n)
    return (po - pe) / (1 - pe) if pe < 1 else 1.0


def agreement(second: Path) -> None:
    first = {r["id"]: r for r in json.loads(FRESH.read_text())}
    data = json.loads(second.read_text())
    data = data["labels"] if isinstance(data, dict) else data
    other = {r["id"]: r["tag"] for r in data}
    ids = sorted(other)
    a = [first[i]["tag"] for i in ids]
    b = [other[i] for i in ids]
    agree = sum(x == y for x, y in zip(a, b, strict=True))
    print(
        f"{len(ids)} items labelled twice: {agree} agree ({agree / len(ids):.1%}), "
        f"Cohen's kappa {kappa(a, b):.3f}"
    )
    for i, x, y in zip(ids, a, b, strict=True):
        if x != y:
            print(f"  {i}: first {x}, second {y} — {first[i]['title'][:70]}")


def references(pypi: Path) -> int:
    rows = json.loads(FRESH.read_text())
    if not pypi.is_file():
        print(f"error: the registry list {pypi} is not on this machine", file=sys.stderr)
        return 2
    wanted = {}
    pat = re.compile(r"pypi:([^=\s]+)==(\S+) \((\d{4}-\d{2})\)")
    for r in rows:
        m = pat.search(r["reference"])
        if m:
            wanted[m.group(1).lower()] = (r["id"], m.group(2), m.group(3), r["created_on"][:7])
        elif r["kind"] == "library" and r["reference"].startswith("pypi:"):
            print(f"  {r['id']}: malformed pypi reference {r['reference']!r}")
    found = {}
    with pypi.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            name, version, month = [*line.split("\t"), "", "", ""][:3]
            if name.lower() in wanted:
                found[name.lower()] = (version, month)
    bad = 0
    for name, (rid, version, month, date) in sorted(wanted.items(), key=lambda kv: kv[1][0]):
        got = found.get(name)
        if got != (version, month) or date != month:
            bad += 1
            print(f"  {rid}: pypi:{name}=={version} ({month}), date {date}; list has {got}")
    print(f"{len(wanted)} pypi references, {bad} not matching {pypi.name}")
    return 1 if bad else 0


def stats() -> None:
    rows = json.loads(FRESH.read_text())
    tags = Counter(r["tag"] for r in rows)
    kinds = Counter(r["kind"] for r in rows)
    years = Counter(r["created_on"][:4] for r in rows)
    print(f"{len(rows)} items; per tag {dict(sorted(tags.items()))}")
    print(f"kinds {dict(kinds.most_common())}; libraries {kinds['library'] / len(rows):.1%}")
    print(
        f"not ML at all: {sum(1 for r in rows if r.get('non_ml'))}; with a note: "
        f"{sum(1 for r in rows if r.get('note'))}; years {dict(sorted(years.items()))}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("merge")
    p.add_argument("batches", nargs="+")
    p.add_argument("--out", type=Path, default=FRESH)
    p = sub.add_parser("sample")
    p.add_argument("--frac", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--blind", type=Path, help="write id/title/description of the sample here")
    p = sub.add_parser("agreement")
    p.add_argument("second", type=Path)
    p = sub.add_parser("references")
    p.add_argument("--pypi", type=Path, default=PYPI)
    sub.add_parser("stats")
    args = ap.parse_args()
    if args.cmd == "merge":
        merge(args.batches, args.out)
    elif args.cmd == "sample":
        sample(args.frac, args.seed, args.blind)
    elif args.cmd == "agreement":
        agreement(args.second)
    elif args.cmd == "references":
        return references(args.pypi)
    else:
        stats()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
