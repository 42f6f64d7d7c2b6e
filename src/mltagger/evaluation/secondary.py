"""Figures for secondary tags (issue 35), against gold `tag` + `also` (one defensible second tag).

A secondary tag is right when it is the item's gold tag or its gold `also` (a model whose primary
answer was the `also` and whose secondary answer was the gold tag gave two right tags). Recall is
of the gold `also` tags: the share a secondary tag names (the target's figure), beside the share
any applied tag names. The primary tag's strict precision stays the product's figure;
"acceptable" precision (gold or `also`) is reported beside it, never instead of it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _also(item: dict) -> str | None:
    """The gold `also` of an item: the pool writes none as "", the fresh set as null."""
    return item.get("also") or None


def secondary_figures(
    records: Sequence[dict], gold: Sequence[dict], fallback_tag: str = "other"
) -> dict:
    """Precision/recall of the applied tags in `records` (predict's output, with `tags`) against
    `gold` (items with `tag` and `also`, same order)."""
    if len(records) != len(gold):
        raise ValueError(f"{len(records)} predictions for {len(gold)} gold items")
    sec_right = sec_n = every_right = every_n = 0
    prim_strict = prim_ok = prim_n = 0
    also_n = also_topic_n = by_secondary = by_secondary_topic = by_any = 0
    per_tag: dict[str, list[int]] = {}
    for rec, item in zip(records, gold, strict=True):
        ok = {item["tag"], _also(item)} - {None}
        secondary = [t["tag"] for t in rec.get("tags", []) if not t["primary"]]
        applied = [] if rec["needs_review"] else [rec["tag"], *secondary]
        if not rec["needs_review"]:
            prim_n += 1
            prim_strict += rec["tag"] == item["tag"]
            prim_ok += rec["tag"] in ok
        for t in secondary:
            sec_n += 1
            sec_right += t in ok
            per_tag.setdefault(t, [0, 0])
            per_tag[t][0] += t in ok
            per_tag[t][1] += 1
        every_n += len(applied)
        every_right += sum(t in ok for t in applied)
        also = _also(item)
        if also:
            also_n += 1
            by_secondary += also in secondary
            by_any += also in applied
            if also != fallback_tag:
                also_topic_n += 1
                by_secondary_topic += also in secondary

    def ratio(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    return {
        "items": len(gold),
        "secondary_applied": sec_n,
        "items_with_secondary": sum(
            any(not t["primary"] for t in r.get("tags", [])) for r in records
        ),
        "secondary_precision": ratio(sec_right, sec_n),
        "gold_also": also_n,
        "also_recall": ratio(by_secondary, also_n),
        "also_recall_topics": ratio(by_secondary_topic, also_topic_n),
        "gold_also_topics": also_topic_n,
        "also_named_by_any_applied_tag": ratio(by_any, also_n),
        "every_applied_tag_precision": ratio(every_right, every_n),
        "applied_tags": every_n,
        "primary_applied": prim_n,
        "primary_precision": ratio(prim_strict, prim_n),
        "primary_precision_acceptable": ratio(prim_ok, prim_n),
        "secondary_per_tag": {
            t: {"applied": n, "precision": ratio(r, n)} for t, (r, n) in sorted(per_tag.items())
        },
    }


def precision_curve(scores: np.ndarray, right: np.ndarray, grid: Sequence[float]) -> list[dict]:
    """Precision and count of the candidates at or above each threshold of `grid`."""
    scores, right = np.asarray(scores, dtype=float), np.asarray(right, dtype=bool)
    out = []
    for t in grid:
        keep = scores >= t
        n = int(keep.sum())
        out.append(
            {
                "threshold": round(float(t), 4),
                "applied": n,
                "precision": round(float(right[keep].mean()), 4) if n else None,
            }
        )
    return out


def choose_threshold(curve: Sequence[dict], target: float, min_applied: int) -> dict | None:
    """The lowest threshold whose candidates at or above it reach the precision target with at
    least `min_applied` of them (None when no threshold does: the head must not ship)."""
    for row in curve:
        enough = row["applied"] >= min_applied and row["precision"] is not None
        if enough and row["precision"] >= target:
            return dict(row)
    return None


def suggestion_figures(offered: Sequence[Sequence[str]], gold: Sequence[dict]) -> dict:
    """What reviewers would be offered (per item, tags beside the model's top tag): precision
    against the gold tag or `also`, and the share of gold `also` tags offered."""
    n = right = also_n = named = 0
    for tags, item in zip(offered, gold, strict=True):
        ok = {item["tag"], _also(item)} - {None}
        n += len(tags)
        right += sum(t in ok for t in tags)
        if _also(item):
            also_n += 1
            named += _also(item) in tags
    return {
        "offered": n,
        "items_offered": sum(1 for t in offered if t),
        "precision": round(right / n, 4) if n else None,
        "also_recall": round(named / also_n, 4) if also_n else None,
    }
