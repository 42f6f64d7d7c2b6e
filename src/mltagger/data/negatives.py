"""The in-scope gate's negatives: real texts outside the six topics, never generated.

The gate (issue 32) decides whether an item belongs to any topic at all, on frozen sentence
embeddings; it learns from `data/negatives/registry.json` (scripts/negatives_draw.py, provenance
in data/SOURCE.md): package authors' own one-line summaries from the PyPI, npm and NuGet lists,
drawn by a written rule, each `other` by the labelling guide (not ML at all, or out-of-scope ML:
tabular, recommenders, optimisers, kernels and frameworks, classical ML, non-speech audio). It
trains only the gate, never the encoder's epochs.

A negative may not copy a training item, a fresh-set item or a stream-pool item (exact, near, or
the same registry package): the gate would learn "out of scope" from an item the model is
trained or judged on. Each such row is named together with the row it copies.

A bad file stops with every bad row listed (DataError, one line; `mltagger validate
--negatives FILE` lists them all and exits 2).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mltagger.core.errors import DataError
from mltagger.core.paths import resolve_path
from mltagger.data.duplicates import near_duplicate_groups
from mltagger.data.fresh import FreshReport, overlaps
from mltagger.data.pool import package_name, references
from mltagger.data.text import clean_text, join_text
from mltagger.data.validation import RawRow, RowProblem, load_items, parse_date, parse_id, read_rows

# data/negatives/registry.json as shipped (data/SOURCE.md)
NEGATIVES_SHA256 = "d9289dd4fc425d694f3d37a44828df90607f8c412b8c4a8cb2b74cb7babbaf05"
SOURCES = ("pypi", "npm", "nuget")
TAG = "other"
TEXT_ORIGIN = "author-summary"
_TEXT_FIELDS = ("title", "description", "stratum", "reference")


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", str(name)).lower()


def _row_problems(raw: RawRow, seen: dict[int, int]) -> list[RowProblem]:
    """One row's own fields: id, title, description, tag, source, stratum, reference, origin."""
    data, out = raw.data, []
    if raw.error or not isinstance(data, dict):
        return [RowProblem(raw.number, None, "row", raw.error or "expected an object")]
    item_id = parse_id(data.get("id"))

    def bad(name: str, message: str) -> None:
        out.append(RowProblem(raw.number, item_id, name, message))

    if item_id is None:
        bad("id", f"must be an integer, got {data.get('id')!r}")
    elif item_id in seen:
        bad("id", f"duplicate id {item_id} (first seen at row {seen[item_id]})")
    else:
        seen[item_id] = raw.number
    for name in _TEXT_FIELDS:
        value = data.get(name)
        if not isinstance(value, str) or not clean_text(value).strip():
            bad(name, "missing or empty")
    if data.get("tag") != TAG:
        bad("tag", f"{data.get('tag')!r}: a negative is `{TAG}` (out of every topic)")
    if data.get("source") not in SOURCES:
        bad("source", f"{data.get('source')!r}: one of {', '.join(SOURCES)}")
    if data.get("text_origin") != TEXT_ORIGIN:
        bad("text_origin", f"{data.get('text_origin')!r}: must be {TEXT_ORIGIN} (real text only)")
    created = data.get("created_on")
    if created is not None and (not isinstance(created, str) or parse_date(created) is None):
        bad("created_on", f"{created!r}: a date (YYYY-MM-DD HH:MM:SS) or null")
    return out


def _item(data: dict) -> dict:
    title, desc = clean_text(data["title"]), clean_text(data["description"])
    return {
        "id": parse_id(data["id"]),
        "created_on": data.get("created_on"),
        "title": title,
        "description": desc,
        "text": join_text(title, desc),
        "tag": TAG,
        "source": data["source"],
        "stratum": data["stratum"],
        "reference": data["reference"],
        "text_origin": data["text_origin"],
        "non_ml": str(data["stratum"]).startswith("not-ml"),
    }


def _with_text(items: Sequence[dict]) -> list[dict]:
    """Items as read from a file (no `text` yet) or as loaded: the text the models read."""
    return [
        it
        if "text" in it
        else {
            **it,
            "text": join_text(clean_text(str(it["title"])), clean_text(str(it["description"]))),
        }
        for it in items
    ]


def _copy_problems(
    items: list[dict],
    number: dict[int, int],
    others: dict[str, Sequence[dict]],
    near_threshold: float,
    same_title_min_chars: int,
) -> list[RowProblem]:
    """Rows that copy a training, fresh or pool item (text or registry package), or an earlier
    row of the file; each problem names both rows."""
    out = []
    for what, rows in others.items():
        titles = {it["id"]: it["title"] for it in rows}
        found = overlaps(items, _with_text(rows), near_threshold, same_title_min_chars)
        for nid, m in found.items():
            other = m["training_id"]
            out.append(
                RowProblem(
                    number[nid],
                    nid,
                    "title",
                    f"{m['how']} of {what} item {other} ({titles[other]!r}): a negative may not "
                    "copy an item the model is trained or judged on",
                )
            )
    cited: dict[str, str] = {}
    for what, rows in others.items():
        for it in rows:
            name = package_name(it.get("reference", "")) or (
                _name(it["title"]) if what in ("package-pool", "pool") else None
            )
            if name:
                cited.setdefault(name, f"{what} item {it['id']} ({it['title']!r})")
    for it in items:
        name = _name(it["title"])
        if name in cited:
            out.append(
                RowProblem(
                    number[it["id"]],
                    it["id"],
                    "reference",
                    f"package {name} is already {cited[name]}: the same registry package "
                    "counts as a copy",
                )
            )
    for group in near_duplicate_groups(items, near_threshold, same_title_min_chars):
        for nid in group[1:]:
            out.append(
                RowProblem(
                    number[nid], nid, "title", f"near copy of negative {group[0]} in this file"
                )
            )
    return out


def check_negatives(
    path: str | Path,
    training: Sequence[dict] = (),
    fresh: Sequence[dict] = (),
    packages: Sequence[dict] = (),
    pool: Sequence[dict] = (),
    *,
    near_threshold: float = 0.7,
    same_title_min_chars: int = 12,
) -> FreshReport:
    """Every check on a negatives file; the report lists all problems of all rows. `packages`:
    the package pool's items and `pool`: the stream pool's (their titles are registry names)."""
    rows = read_rows(path)
    report = FreshReport(source=str(path), n_rows=len(rows))
    seen: dict[int, int] = {}
    number: dict[int, int] = {}
    for raw in rows:
        problems = _row_problems(raw, seen)
        report.problems.extend(problems)
        if not problems:
            number[parse_id(raw.data["id"])] = raw.number
            report.items.append(_item(raw.data))
    others = {"training": training, "fresh-set": fresh, "pool": pool, "package-pool": packages}
    copies = _copy_problems(report.items, number, others, near_threshold, same_title_min_chars)
    report.problems.extend(copies)
    bad_rows = {p.row for p in report.problems}
    report.items = [it for it in report.items if number[it["id"]] not in bad_rows]
    report.problems.sort(key=lambda p: (p.row, p.field))
    return report


def describe_negatives(items: Sequence[dict]) -> str:
    """Counts per source and per stratum, on one line."""
    sources = Counter(it["source"] for it in items)
    strata = Counter(it["stratum"] for it in items)
    return (
        f"{len(items)} negatives; per source: "
        + ", ".join(f"{s} {n}" for s, n in sorted(sources.items()))
        + "; per stratum: "
        + ", ".join(f"{s} {n}" for s, n in sorted(strata.items()))
    )


def _pool_items(pool_path: str | Path | None, tags: Sequence[str]) -> list[dict]:
    """The stream pool's items with their references (their titles are registry names)."""
    if pool_path is None or not Path(pool_path).is_file():
        return []
    refs = {r["id"]: r.get("reference", "") for r in json.loads(Path(pool_path).read_text())}
    return [
        {**it, "reference": refs.get(it["id"], "")}
        for it in load_items(pool_path, tags, labeled=True).items
    ]


def negatives_report(
    path: str | Path,
    data_cfg: Any,
    root: str | Path | None,
    pool_path: str | Path | None = "data/pool/stream.json",
) -> FreshReport:
    """`check_negatives` against everything the data config trains and judges on and the
    stream pool, with the config's near-duplicate settings: what `validate --negatives`
    prints."""
    near = data_cfg.near_duplicates
    refs = references(data_cfg, root)
    pool = _pool_items(resolve_path(pool_path, root) if pool_path else None, list(data_cfg.tags))
    return check_negatives(
        path,
        refs["training"],
        refs["fresh"],
        refs["packages"],
        pool,
        near_threshold=float(near.threshold),
        same_title_min_chars=int(near.same_title_min_chars),
    )


def load_checked_negatives(
    path: str | Path, data_cfg: Any, root: str | Path | None, pool_path: str | Path | None = None
) -> list[dict]:
    """The negatives as `mltagger validate --negatives` checks them (against every source of the
    data config, its fresh set and the stream pool, with the config's near-copy settings), so a
    file the validator passes is the file a run trains on; DataError (one line) otherwise."""
    if TAG not in data_cfg.tags:
        raise DataError(f"{path}: negatives are tagged `{TAG}`, which is not an approved tag")
    if not Path(path).is_file():
        raise DataError(f"negatives file {path} not found")
    pool_path = pool_path or "data/pool/stream.json"
    report = negatives_report(path, data_cfg, root, pool_path)
    report.raise_if_bad(path, "--negatives")
    return sorted(report.items, key=lambda it: it["id"])
