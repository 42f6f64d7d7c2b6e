"""The labelled stream pool: 2023-2026 items replayed as the stream the model learns from.

The fresh set measures the model on today's content; the pool is the stream itself, labelled by
reading (data/eval/GUIDE.md) before any model saw it, in `created_on` order. `mltagger
simulate-labels` replays it: each simulated day's items are scored, a simulated reviewer labels
some of them in the queue's order, and the model learns from those labels only.

Each row says where its text comes from (`text_origin`: the package author's own summary, or a
text written from a reference), by which written rule it was drawn (`rule`: scripts/pool_draw.py,
never the model's answer), and, where a careful reader could defend a second tag, that tag
(`also`). Everything the fresh set is checked for holds here too, and more: a pool row may not
copy a fresh item or a training item (exact, near, or the same registry package), because an
item the model was trained or judged on measures nothing when it comes round again.

A bad file stops with every bad row listed (DataError; `mltagger validate --pool` exits 1).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from mltagger.core.paths import resolve_path
from mltagger.data.fresh import FreshReport, check_fresh, overlaps
from mltagger.data.text import clean_text, join_text
from mltagger.data.validation import RowProblem, load_items, parse_id, read_rows

TEXT_ORIGINS = {
    "author-summary": "the package author's own one-line summary, word for word",
    "written-from-reference": "written by the labeller from the cited reference",
}
_PYPI = re.compile(r"pypi:([A-Za-z0-9_.\-]+)==")


def package_name(reference: str) -> str | None:
    """The registry package a reference cites (`pypi:name==version`), normalised; else None."""
    m = _PYPI.match(str(reference or ""))
    return re.sub(r"[-_.]+", "-", m.group(1)).lower() if m else None


def _own_problems(raw: Any, tags: Sequence[str]) -> list[RowProblem]:
    """The pool's own fields: text_origin, rule, also."""
    data, out = raw.data, []
    if not isinstance(data, dict):
        return out
    item_id = parse_id(data.get("id"))

    def bad(name: str, message: str) -> None:
        out.append(RowProblem(raw.number, item_id, name, message))

    if data.get("created_on") in (None, ""):
        bad("created_on", "missing (the replay runs in date order)")
    if data.get("text_origin") not in TEXT_ORIGINS:
        bad("text_origin", f"{data.get('text_origin')!r}: one of {', '.join(TEXT_ORIGINS)}")
    if not isinstance(data.get("rule"), str) or not data["rule"].strip():
        bad("rule", "missing (the written sampling rule that drew this item)")
    also = data.get("also", "")
    if also not in ("", None):
        if also not in tags:
            bad("also", f"{also!r} is not an approved tag")
        elif also == data.get("tag"):
            bad("also", "the same as tag (leave it empty when no second tag is defensible)")
    return out


def check_pool(
    path: str | Path,
    tags: Sequence[str],
    training: Sequence[dict] = (),
    fresh: Sequence[dict] = (),
    packages: Sequence[dict] = (),
    *,
    near_threshold: float = 0.7,
    same_title_min_chars: int = 12,
) -> FreshReport:
    """Every check on a pool file; the report lists all problems of all rows, each copy naming
    the row it copies (a training item by id, a fresh item by id). `packages`: the package
    pool's items (their title is the registry name), whose names count as copies too."""
    report = check_fresh(
        path,
        tags,
        training,
        near_threshold=near_threshold,
        same_title_min_chars=same_title_min_chars,
    )
    rows = read_rows(path)
    number = {}
    for raw in rows:
        report.problems.extend(_own_problems(raw, tags))
        if isinstance(raw.data, dict):
            number.setdefault(parse_id(raw.data.get("id")), raw.number)
    # the fresh file as read (no `text` yet) or as loaded: the same text the models read
    fresh = [
        it
        if "text" in it
        else {
            **it,
            "text": join_text(clean_text(str(it["title"])), clean_text(str(it["description"]))),
        }
        for it in fresh
    ]
    for pid, match in overlaps(report.items, fresh, near_threshold, same_title_min_chars).items():
        report.problems.append(
            RowProblem(
                number[pid],
                pid,
                "title",
                f"{match['how']} of fresh-set item {match['training_id']}: the pool may not "
                "replay an item the model is judged on",
            )
        )
    # the same registry package, whatever its text says now
    cited: dict[str, str] = {}
    for it in packages:
        cited.setdefault(_norm_name(it["title"]), f"package-pool item {it['id']}")
    for it in fresh:
        name = package_name(it.get("reference", ""))
        if name:
            cited.setdefault(name, f"fresh-set item {it['id']}")
    for it in report.items:
        name = package_name(it.get("reference", ""))
        if name in cited:
            report.problems.append(
                RowProblem(
                    number[it["id"]],
                    it["id"],
                    "reference",
                    f"package {name} is already {cited[name]}: the same registry package "
                    "counts as a copy",
                )
            )
    # check_fresh words a copy inside the file for the fresh set
    report.problems = [
        replace(
            p,
            message=p.message.replace("near copy of fresh item", "near copy of pool item").replace(
                "a fresh item must be new", "a pool item must be new"
            ),
        )
        for p in report.problems
    ]
    bad_rows = {p.row for p in report.problems}
    by_id = {it["id"]: it for it in report.items}
    for raw in rows:
        data = raw.data if isinstance(raw.data, dict) else {}
        it = by_id.get(parse_id(data.get("id")))
        if it is not None:
            it["also"] = data.get("also") or ""
            it["text_origin"] = data.get("text_origin")
            it["rule"] = data.get("rule")
            it["source"] = "pool"
    report.items = [it for it in report.items if number[it["id"]] not in bad_rows]
    report.problems.sort(key=lambda p: (p.row, p.field))
    return report


def _norm_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", str(name)).lower()


def describe_pool(items: Sequence[dict]) -> str:
    """Counts a reader of the pool wants first: per tag, per text origin, per stratum."""
    tags = Counter(it["tag"] for it in items)
    origins = Counter(it.get("text_origin") for it in items)
    non_ml = sum(1 for it in items if it.get("non_ml"))
    return (
        f"{len(items)} items; "
        + ", ".join(f"{t} {n}" for t, n in sorted(tags.items()))
        + f"; not ML at all {non_ml}; "
        + ", ".join(f"{o} {n}" for o, n in sorted(origins.items()))
    )


def references(data_cfg: Any, root: str | Path | None) -> dict[str, list[dict]]:
    """What a pool may not copy, for a data config: every row of every training source, the
    fresh set (with its references) and the package pool's rows (their titles are names)."""
    tags = list(data_cfg.tags)
    training: list[dict] = []
    packages: list[dict] = []
    for src in data_cfg.sources:
        items = load_items(resolve_path(src.path, root), tags, labeled=True).items
        training.extend(items)
        if src.name == "packages":
            packages = items
    fresh: list[dict] = []
    if data_cfg.get("fresh") and data_cfg.fresh.get("path"):
        fresh_path = resolve_path(data_cfg.fresh.path, root)
        refs = {it["id"]: it.get("reference", "") for it in json.loads(fresh_path.read_text())}
        fresh = [
            {**it, "reference": refs.get(it["id"], "")}
            for it in load_items(fresh_path, tags, labeled=True).items
        ]
    return {"training": training, "fresh": fresh, "packages": packages}


def pool_report(path: str | Path, data_cfg: Any, root: str | Path | None) -> FreshReport:
    """`check_pool` against everything the data config trains and judges on, with its
    near-duplicate settings: what `mltagger validate --pool` prints and a replay refuses."""
    near = data_cfg.near_duplicates
    return check_pool(
        path,
        list(data_cfg.tags),
        **references(data_cfg, root),
        near_threshold=float(near.threshold),
        same_title_min_chars=int(near.same_title_min_chars),
    )


def load_pool(
    path: str | Path,
    tags: Sequence[str],
    training: Sequence[dict] = (),
    fresh: Sequence[dict] = (),
    packages: Sequence[dict] = (),
    *,
    report: FreshReport | None = None,
) -> list[dict]:
    """The checked pool items in replay order (created_on, then id); DataError (one line) if
    bad. `report`: a check already made (pool_report)."""
    report = report or check_pool(path, tags, training, fresh, packages)
    report.raise_if_bad(path, "--pool")
    return sorted(report.items, key=lambda it: (str(it["created_on"]), it["id"]))
