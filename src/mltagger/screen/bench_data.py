"""The duplicate screen's benchmark data: big stores of distinct items, genuinely new queries, and
true copies of stored items.

Why: pairs made from the shipped data (an item and an edited copy, an item and one random or
hand-picked neighbour) say little about a store of 100k items on the same topics, where every new
item has many close neighbours and any one of them over the threshold loses the item. The
benchmark therefore screens each query against a whole store, as the service does.

- **Stores.** The shipped items (projects, other), the external lists, and, for size, distinct
  PyPI package summaries (`data/dedup/registry.tsv.gz`, from the registry list of the `env`
  entry: one row per distinct normalised summary). Two stores: `all` (any package) and `ml`
  (packages whose name or summary uses ML vocabulary), each at 1k / 10k / 100k items, nested.
- **Genuinely new queries.** The fresh set (written from 2023-26 papers, posts and packages) and
  held-out ML library summaries of 2023-26 that are in no store: their packages and exact-summary
  copies are left out, as are the packages the fresh set cites (by name).
- **True copies.** Edited copies of stored items (format, typos, truncated, reworded,
  reposted: `mltagger.screen.copies.make_duplicate`) and real ones: the same link listed under
  different titles across the external lists (`relisted`: one listing stored, the other the
  query; screened with and without its link).

Every query and copy falls in split `a` (choose) or `b` (report) by a hash of its key, so a
threshold chosen on `a` is reported on items it never saw.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mltagger.core.errors import DataError
from mltagger.core.paths import resolve_path
from mltagger.data.duplicates import dedup_key
from mltagger.data.external import parse_markdown
from mltagger.data.package_pool import _ANY, _ML_VOCAB, fresh_package_names
from mltagger.data.package_pool import read_registry as read_pypi_registry
from mltagger.screen.copies import make_duplicate
from mltagger.screen.screening import url_key as norm_url

REGISTRY_FILE = "data/dedup/registry.tsv.gz"
REPORT_FILE = "data/dedup/build_report.json"
STORE_SIZES = (1000, 10000, 100000)
HELD_OUT = 450  # ML library summaries kept out of every store as genuinely new queries
FIRST_MONTH = "2023-01"
SEED = 16
COPY_KINDS = ("format", "typos", "truncated", "reworded", "reposted")
COPIES_PER_KIND = 240


def split_of(key: str) -> str:
    """`a` (choose) or `b` (report), fixed by the key's hash: stable across runs and machines."""
    return "a" if hashlib.sha256(key.encode()).digest()[0] % 2 == 0 else "b"


def _norm_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _read_pypi(path: Path) -> Iterable[tuple[str, str, str]]:
    """(name, month, summary) of every row of the registry list, any month."""
    for row in read_pypi_registry(path, months=None):
        yield row["name"], row["month"], row["summary"]


def build_registry(pypi: Path, root: Path, seed: int = SEED) -> tuple[list[dict], dict]:
    """Rows (name, month, role, summary) for the stores and the held-out queries, and a report.

    Distinct by normalised summary (the first row of each wins) and by normalised name. Packages
    the fresh set cites or the shipped pool holds are left out of everything, so a fresh item
    never meets the package it was written from.
    """

    excluded = fresh_package_names(resolve_path("data/eval/fresh.json", root))
    excluded |= {
        _norm_name(it["title"].split(":")[0])
        for it in json.loads(resolve_path("data/packages.json", root).read_text())
    }
    seen_summary: set[str] = set()
    seen_name: set[str] = set()
    rows = []
    dropped = {"same_summary": 0, "same_name": 0, "cited_or_shipped": 0}
    for name, month, summary in _read_pypi(pypi):
        key, nname = dedup_key(summary), _norm_name(name)
        if key in seen_summary:
            dropped["same_summary"] += 1
            continue
        if nname in seen_name:
            dropped["same_name"] += 1
            continue
        seen_summary.add(key)
        seen_name.add(nname)
        if nname in excluded:
            dropped["cited_or_shipped"] += 1
            continue
        rows.append({"name": name, "month": month, "summary": summary})
    rng = random.Random(seed)
    # held-out queries: ML libraries of 2023-26 (the strict vocabulary of the package pool)
    candidates = [
        i for i, r in enumerate(rows) if r["month"] >= FIRST_MONTH and _ANY.search(r["summary"])
    ]
    held = set(rng.sample(candidates, HELD_OUT))
    rest = [i for i in range(len(rows)) if i not in held]
    ml_rest = [i for i in rest if _ML_VOCAB.search(rows[i]["name"] + " " + rows[i]["summary"])]
    n = max(STORE_SIZES)
    general = rng.sample(rest, n)
    ml = rng.sample(ml_rest, min(n, len(ml_rest)))
    role: dict[int, set[str]] = {}
    for i in held:
        role.setdefault(i, set()).add("query")
    for rank, i in enumerate(general):
        role.setdefault(i, set()).add(f"all:{rank}")
    for rank, i in enumerate(ml):
        role.setdefault(i, set()).add(f"ml:{rank}")
    out = [{**rows[i], "role": " ".join(sorted(role[i]))} for i in sorted(role)]
    report = {
        "registry_rows_distinct": len(rows),
        "dropped": dropped,
        "held_out_queries": len(held),
        "ml_pool": len(ml_rest),
        "stored_rows": {"all": len(general), "ml": len(ml)},
        "rows_shipped": len(out),
        "seed": seed,
    }
    return out, report


def write_registry(rows: Sequence[dict], path: Path) -> str:
    """gzip TSV with a fixed mtime, so the same rows give the same bytes (and sha256)."""
    buf = io.StringIO()
    w = csv.writer(
        buf, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n"
    )
    w.writerow(["name", "month", "role", "summary"])
    for r in rows:
        w.writerow([r["name"], r["month"], r["role"], r["summary"].replace("\t", " ")])
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(buf.getvalue().encode("utf-8"))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_registry(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(f"{path} not found: run `make data-dedup` (needs the env registry list)")
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        return list(reader)


@dataclass
class Bench:
    """stores[name] = stored items in order (a store of size n is the first n); queries are
    genuinely new items; copies are true duplicates with `of` = the index of their original in
    every store (the originals are placed first)."""

    stores: dict[str, list[dict]]
    queries: list[dict]
    copies: list[dict]
    info: dict = field(default_factory=dict)


def _item(title: str, description: str, url: str | None = None, **extra) -> dict:
    return {"title": title, "description": description, "url": url, **extra}


def relisted_pairs(root: Path) -> list[tuple[dict, dict]]:
    """(stored, query) listings of the same link with a different title or description, across
    the external lists (every parsed entry, mapped or not)."""
    cfg = yaml.safe_load(resolve_path("conf/external/mapping.yaml", root).read_text())
    raw = resolve_path(cfg["raw_dir"], root)
    groups: dict[str, list] = {}
    for lst in cfg["lists"]:
        for f in lst["files"]:
            text = (raw / lst["folder"] / f["path"]).read_text(encoding="utf-8")
            for e in parse_markdown(
                text, list_name=lst["name"], file=f["path"], style=lst["style"]
            ):
                u = norm_url(e.url)
                if u:
                    groups.setdefault(u, []).append(e)
    pairs = []
    for u in sorted(groups):
        distinct: dict[str, object] = {}
        for e in groups[u]:
            distinct.setdefault(dedup_key(e.title + " " + e.description), e)
        if len(distinct) > 1:
            a, b = list(distinct.values())[:2]
            pairs.append(
                (
                    _item(a.title, a.description, a.url, source=f"relisted:{a.list}"),
                    _item(b.title, b.description, b.url, source=f"relisted:{b.list}"),
                )
            )
    return pairs


def load_bench(root: str | Path | None = None, seed: int = SEED) -> Bench:
    """The stores, queries and copies (deterministic for a seed)."""

    root = Path(resolve_path(".", root))
    reg = read_registry(resolve_path(REGISTRY_FILE, root))
    rng = random.Random(seed)
    relisted = relisted_pairs(root)
    relisted_urls = {norm_url(b["url"]) for _, b in relisted}

    shipped = []
    for name in ("data/projects.json", "data/other.json"):
        for it in json.loads(resolve_path(name, root).read_text()):
            shipped.append(_item(it["title"], it["description"], source=name))
    for it in json.loads(resolve_path("data/external.json", root).read_text()):
        if norm_url(it.get("url")) in relisted_urls:
            continue  # the relisted pairs add their stored side themselves
        shipped.append(_item(it["title"], it["description"], it.get("url"), source="external"))
    stored_side = [a for a, _ in relisted]
    rng.shuffle(shipped)

    # copies: originals are shipped/external items, kinds in rotation; relistings are real copies
    originals = rng.sample(shipped, len(COPY_KINDS) * COPIES_PER_KIND)
    copies = []
    for k, orig in enumerate(originals):
        kind = COPY_KINDS[k % len(COPY_KINDS)]
        dup = make_duplicate(orig, kind, rng)
        copies.append({**_item(dup["title"], dup["description"]), "kind": kind, "of": k})
    head = originals + stored_side
    n_orig = len(originals)
    for j, (_, b) in enumerate(relisted):
        copies.append({**_item(b["title"], b["description"]), "kind": "relisted", "of": n_orig + j})
        copies.append({**b, "kind": "relisted_with_link", "of": n_orig + j})
    for c in copies:
        c["split"] = split_of(f"copy:{c['kind']}:{c['of']}")
    taken = {id(x) for x in originals}
    rest = [x for x in shipped if id(x) not in taken]

    def registry_items(tag: str) -> list[dict]:
        ranked = []
        for r in reg:
            for role in r["role"].split():
                if role.startswith(tag + ":"):
                    ranked.append((int(role.split(":")[1]), r))
        return [
            _item(r["name"], r["summary"], source="registry")
            for _, r in sorted(ranked, key=lambda x: x[0])
        ]

    n = max(STORE_SIZES)
    stores = {}
    for name in ("all", "ml"):
        items = head + rest
        items = items + registry_items(name)[: n - len(items)]
        stores[name] = items

    queries = []
    for it in json.loads(resolve_path("data/eval/fresh.json", root).read_text()):
        queries.append(_item(it["title"], it["description"], source="fresh", ref=it["id"]))
    for r in reg:
        if "query" in r["role"].split():
            queries.append(_item(r["name"], r["summary"], source="registry", ref=r["name"]))
    for q in queries:
        q["split"] = split_of(f"query:{q['source']}:{q['ref']}")
    return Bench(
        stores,
        queries,
        copies,
        {
            "originals_first": len(head),
            "relisted_pairs": len(relisted),
            "store_sizes": {k: len(v) for k, v in stores.items()},
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    """make data-dedup: rebuild data/dedup/registry.tsv.gz from the env registry list."""

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "--registry",
        default="../.library/env/packages/pypi.tsv",
        help="the PyPI list of the env entry (name, version, month, rank, summary)",
    )
    args = parser.parse_args(argv)
    root = Path(resolve_path("."))
    try:
        rows, report = build_registry(Path(args.registry), root)
    except DataError as e:
        print(f"error: {e}")
        return 2
    out = resolve_path(REGISTRY_FILE, root)
    report["sha256"] = write_registry(rows, out)
    report["file"] = REGISTRY_FILE
    resolve_path(REPORT_FILE, root).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0
