"""Applying a label-issue layer (from `mltagger label-issues`) to the weak training data: keep,
drop, relabel or down-weight each flagged item.

The layer is only applied here, in the data layer; finding the issues needs trained models and
lives in `mltagger.training.label_issues`.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

from mltagger.core.errors import DataError
from mltagger.data.validation import combined_sha256

LAYER_VERSION = 1
ACTIONS = ("keep", "drop", "relabel", "downweight")


def ids_digest(items: Sequence[dict]) -> str:
    """sha256 of the sorted ids: detects a changed split even when its settings are the same."""

    ids = ",".join(str(i) for i in sorted(it["id"] for it in items))
    return hashlib.sha256(ids.encode()).hexdigest()


def apply_layer(
    splits: dict[str, list[dict]],
    layer: dict,
    *,
    action: str,
    sources: Sequence[str],
    weight: float,
    data_sources: Sequence[dict] | None = None,
    data_sha256: str | None = None,
    split_config: dict,
) -> tuple[dict[str, list[dict]], dict]:
    """The train split with the action applied to suspect rows of `sources`; val/test untouched.

    Refuses a layer computed for other data or another split: its row ids would point at rows
    it never judged. A layer built on the first k sources of the data (same files, same split)
    stays valid when sources are added after them (e.g. `mltagger dataset build` adding human
    labels), because splitting source by source never moves an earlier source's rows.
    With `data_sources`, `data_sha256` (when given) is the whole data's fingerprint, which
    differs from the sources' combined hash when relabelling rules are folded in.
    """

    if action not in ACTIONS:
        raise DataError(f"label_noise.action must be one of {ACTIONS}, got {action!r}")
    if layer.get("version") != LAYER_VERSION:
        raise DataError(f"label-issue layer version {layer.get('version')} is not supported")
    if data_sources is None:  # callers that know only the combined hash
        prefixes = [(data_sha256, None)]
    else:
        prefixes = [
            (combined_sha256(data_sources[:k]), {s["name"] for s in data_sources[:k]})
            for k in range(len(data_sources), 0, -1)
        ]
        if data_sha256 is not None:  # the whole data's fingerprint (relabel rules folded in)
            prefixes[0] = (data_sha256, prefixes[0][1])
        data_sha256 = prefixes[0][0]
    covered = next((names for sha, names in prefixes if sha == layer.get("data_sha256")), False)
    judged = (
        splits["train"]
        if covered is None or covered is False
        else [it for it in splits["train"] if it.get("source") in covered]
    )
    if (
        covered is False
        or layer.get("split") != split_config
        or layer.get("train_ids_sha256") != ids_digest(judged)
    ):
        raise DataError(
            "the label-issue layer was computed for other data or another split "
            f"(layer data sha256 {str(layer.get('data_sha256'))[:12]}…, split "
            f"{layer.get('split')}; now {str(data_sha256)[:12]}…, {split_config}). "
            "Rebuild it with `make label-issues`, or set data.label_noise.action=keep."
        )
    train_ids = {it["id"] for it in splits["train"]}
    chosen = {
        r["id"]: r for r in layer["issues"] if r.get("source") in sources and r["id"] in train_ids
    }
    stale = [r["id"] for r in layer["issues"] if r["id"] not in train_ids]
    if stale:
        raise DataError(f"label-issue layer names rows outside the train split: {stale[:10]}")
    if not (0.0 < weight <= 1.0):
        raise DataError(f"label_noise.weight must be in (0, 1], got {weight}")

    train = []
    overruled = 0
    for it in splits["train"]:
        issue = chosen.get(it["id"])
        # A written relabelling rule (data.relabel) decided this row's tag: a person's rule
        # outranks the search's suggestion, which judged the row under its shipped tag.
        if issue is not None and it.get("relabel_rule"):
            overruled += 1
            issue = None
        if issue is None or action == "keep":
            train.append(it)
        elif action == "drop":
            continue
        elif action == "relabel":
            train.append({**it, "tag": issue["suggested"], "tag_shipped": it["tag"]})
        else:  # downweight
            train.append({**it, "weight": float(weight) * float(it.get("weight", 1.0))})
    summary = {
        "action": action,
        "sources": list(sources),
        "suspects_in_sources": len(chosen),
        "affected": 0 if action == "keep" else len(chosen) - overruled,
        "overruled_by_relabel_rules": overruled,
        "by_change": dict(Counter(f"{r['tag']} -> {r['suggested']}" for r in chosen.values())),
    }
    return {**splits, "train": train}, summary
