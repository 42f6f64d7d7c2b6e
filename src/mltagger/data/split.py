"""Splitting without leakage: rare tags folded into the fallback, near-duplicate groups kept
whole, stratified group splits, and per-source split rules (e.g. a source used only for
training).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from mltagger.core.errors import DataError

SPLITS = ("train", "val", "test")
# A data source's `split`: `all` (train/val/test, the platform's items), `train` (weak rows, train
# only, never scored) or `trainval` (gold rows that train and are cross-validated - their
# out-of-fold predictions choose operating points - but never join the test split, so test stays
# comparable across recipes; the stream pool).
SOURCE_SPLITS = ("all", "train", "trainval")
# How cross-validation folds a source's rows (`folds:`), see mltagger.training.cv.make_folds.
FOLD_KINDS = ("stratified", "date")


def fold_rare_tags(
    items: Sequence[dict], min_freq: int, fallback: str
) -> tuple[list[dict], dict[str, int]]:
    """Relabel items whose tag has fewer than min_freq examples as the fallback tag.

    A tag with a handful of examples cannot be learned or measured; folding it into `other`
    (which routes to review) is safer than a confident guess. Returns (items, {tag: count folded}).
    """
    counts = Counter(it["tag"] for it in items)
    rare = {t: n for t, n in counts.items() if t != fallback and n < min_freq}
    if not rare:
        return list(items), {}
    return [{**it, "tag": fallback} if it["tag"] in rare else it for it in items], rare


def group_units(
    items: Sequence[dict], groups: Iterable[Sequence[int]] = ()
) -> dict[str, list[list[int]]]:
    """Units of splitting, by tag: each near-duplicate group (ids present in items) is one unit,
    every other item is its own; a unit's tag is its most common tag. Shared by the split and by
    the cross-validation folds, so neither ever puts a near-copy on both sides."""
    by_id = {it["id"]: it for it in items}
    unit_of: dict[int, int] = {}
    units: list[list[int]] = []
    for group in groups:
        members = [i for i in group if i in by_id and i not in unit_of]
        if members:
            for i in members:
                unit_of[i] = len(units)
            units.append(sorted(members))
    for it in items:
        if it["id"] not in unit_of:
            unit_of[it["id"]] = len(units)
            units.append([it["id"]])
    units_by_tag: dict[str, list[list[int]]] = defaultdict(list)
    for unit in units:
        tag = Counter(by_id[i]["tag"] for i in unit).most_common(1)[0][0]
        units_by_tag[tag].append(unit)
    return units_by_tag


def stratified_group_split(
    items: Sequence[dict],
    *,
    val_size: float,
    test_size: float,
    seed: int,
    groups: Iterable[Sequence[int]] = (),
) -> dict[str, list[dict]]:
    """Split items into train/val/test, stratified by tag, keeping each group in one split.

    Units are the near-duplicate groups plus single items; a unit's tag is its most common tag.
    Within each tag, units are shuffled with `seed` and each goes to the split furthest below its
    target share, so small tags (28 time-series items) still get val and test examples and the
    result depends only on (items, sizes, seed, groups); each tag's assignment depends only on
    its own units.
    """
    if not 0 <= val_size < 1 or not 0 <= test_size < 1 or val_size + test_size >= 1:
        raise DataError(
            f"split sizes must be in [0, 1) and sum below 1, got val={val_size} test={test_size}"
        )
    by_id = {it["id"]: it for it in items}
    units_by_tag = group_units(items, groups)

    fractions = {"test": test_size, "val": val_size, "train": 1 - val_size - test_size}
    assignment: dict[str, list[int]] = {s: [] for s in SPLITS}
    for tag in sorted(units_by_tag):
        tag_units = sorted(units_by_tag[tag], key=lambda u: u[0])
        # One generator per tag: adding a source with a new tag (e.g. `other`) leaves the
        # split of every existing tag unchanged, so six- and seven-class runs share a test set.
        random.Random(f"{seed}:{tag}").shuffle(tag_units)
        total = sum(len(u) for u in tag_units)
        target = {s: fractions[s] * total for s in fractions}
        placed = dict.fromkeys(fractions, 0)
        for unit in tag_units:
            # test, val, train order breaks ties so tiny tags get evaluation items first.
            split = max(
                fractions,
                key=lambda s: (
                    (target[s] - placed[s]) / max(target[s], 1e-9)
                    if target[s] > 0
                    else float("-inf")
                ),
            )
            placed[split] += len(unit)
            assignment[split].extend(unit)
    return {s: sorted((by_id[i] for i in assignment[s]), key=lambda it: it["id"]) for s in SPLITS}


def split_sources_in_order(
    items: Sequence[dict],
    source_order: Sequence[str],
    *,
    val_size: float,
    test_size: float,
    seed: int,
    groups: Iterable[Sequence[int]] = (),
    train_only: Iterable[str] = (),
    no_test: Iterable[str] = (),
    dropped: list[dict] | None = None,
) -> dict[str, list[dict]]:
    """Split each source in turn, so adding a source never moves an item of an earlier one.

    Six-topic and six + `other` runs then share their topic test items exactly, which is what
    makes their figures comparable. A near-duplicate of an already placed item (across sources)
    follows it into its split, so no near-copy straddles train and test.

    Sources in `train_only` (weak sources such as the external lists) go to train whole, so the
    val and test splits - and every figure computed on them - stay those of the platform's own
    items; their near-copies of a val/test item are left out (appended to `dropped`).
    Sources in `no_test` are split into train and val only (val share `val_size`); their
    near-copies of a test item are left out the same way.
    """
    groups = [list(g) for g in groups]
    train_only = set(train_only)
    no_test = set(no_test)
    placed: dict[int, str] = {}
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for name in source_order:
        src_items = [it for it in items if it.get("source", name) == name]
        src_ids = {it["id"] for it in src_items}
        follow: dict[int, str] = {}
        for g in groups:
            anchor = next((placed[i] for i in g if i in placed), None)
            if anchor is not None:
                follow.update({i: anchor for i in g if i in src_ids})
        if name in train_only:
            kept = [it for it in src_items if follow.get(it["id"], "train") == "train"]
            if dropped is not None:
                dropped += [
                    {"id": it["id"], "source": name, "near_copy_in": follow[it["id"]]}
                    for it in src_items
                    if follow.get(it["id"], "train") != "train"
                ]
            out["train"].extend(kept)
            placed.update({it["id"]: "train" for it in kept})
            continue
        if name in no_test:
            to_test = [it for it in src_items if follow.get(it["id"]) == "test"]
            if dropped is not None:
                dropped += [
                    {"id": it["id"], "source": name, "near_copy_in": "test"} for it in to_test
                ]
            src_items = [it for it in src_items if follow.get(it["id"]) != "test"]
        rest = [it for it in src_items if it["id"] not in follow]
        rest_ids = {it["id"] for it in rest}
        src_groups = [[i for i in g if i in rest_ids] for g in groups]
        part = stratified_group_split(
            rest,
            val_size=val_size,
            test_size=0.0 if name in no_test else test_size,
            seed=seed,
            groups=[g for g in src_groups if len(g) > 1],
        )
        for it in src_items:
            if it["id"] in follow:
                part[follow[it["id"]]].append(it)
        for split, split_items in part.items():
            out[split].extend(split_items)
            placed.update({it["id"]: split for it in split_items})
    return {s: sorted(v, key=lambda it: it["id"]) for s, v in out.items()}
