"""Likely label errors in weakly labelled data, and the versioned layer that fixes them.

The `other` source is labelled from catalog tags, not by a person, so some of its rows are really
topic items. Training on them as `other` teaches the model to send real topic items away. We find
them with confident learning (Northcutt, Jiang & Chuang, JAIR 2021): out-of-fold probabilities from
a model that never saw the row, a per-class confidence threshold (the mean probability the model
gives a class on rows labelled with it), and a row is suspect when another class clears its own
threshold and beats the given label. The out-of-fold model is the TF-IDF baseline: cheap (seconds
on CPU), independent of the encoder being trained, and strong enough on this data (0.89 weighted
F1 on the six topics).

The result is written once as a layer file (`make label-issues` -> data/corrections/*.json),
committed and reviewed like code. Training reads it and applies the configured action to suspect
rows of the weak sources, in the train split only: val and test keep the shipped labels, so the
evaluation is not graded against the finder's opinion. The shipped data files are never edited.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

LAYER_VERSION = 1
ACTIONS = ("keep", "drop", "relabel", "downweight")


def out_of_fold_probs(
    items: Sequence[dict], label_names: Sequence[str], folds: int = 5, seed: int = 0
) -> np.ndarray:
    """(n, K) probabilities where each row comes from a TF-IDF model trained on the other folds."""
    from sklearn.model_selection import StratifiedKFold

    from mltagger.baselines import TfidfLogReg

    y = np.array([label_names.index(it["tag"]) for it in items])
    smallest = int(np.bincount(y).min()) if len(y) else 0
    if folds < 2 or smallest < folds:
        raise ValueError(
            f"label-issue search needs folds >= 2 and at least `folds` rows per class; "
            f"got folds={folds}, smallest class has {smallest} rows"
        )
    probs = np.zeros((len(items), len(label_names)))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit_idx, held_idx in splitter.split(np.zeros(len(y)), y):
        model = TfidfLogReg(seed=seed).fit([items[i] for i in fit_idx], label_names)
        probs[held_idx] = model.predict_proba([items[i] for i in held_idx])
    return probs


def confident_learning(probs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Per-class thresholds, each row's confident class (-1: none) and the confident joint.

    joint[i][j] counts rows labelled i that the model confidently puts in class j; its
    off-diagonal mass estimates how many labels are wrong, and where they belong.
    """
    probs = np.asarray(probs, dtype=float)
    labels = np.asarray(labels, dtype=int)
    k = probs.shape[1]
    thresholds = np.array(
        [probs[labels == j, j].mean() if np.any(labels == j) else 1.0 for j in range(k)]
    )
    above = probs >= thresholds[None, :]
    masked = np.where(above, probs, -1.0)
    confident = np.where(above.any(axis=1), masked.argmax(axis=1), -1)
    joint = np.zeros((k, k), dtype=int)
    for given, conf in zip(labels, confident, strict=True):
        if conf >= 0:
            joint[given, conf] += 1
    return {"thresholds": thresholds, "confident_class": confident, "joint": joint}


def find_label_issues(
    items: Sequence[dict], label_names: Sequence[str], folds: int = 5, seed: int = 0
) -> tuple[list[dict], dict[str, Any]]:
    """Suspect rows, most suspicious first, and a summary (thresholds, confident joint).

    A row is suspect when its confident class differs from its label and the model gives that
    class more probability than the label: both conditions, so a row that merely sits near a
    class boundary is not flagged.
    """
    label_names = list(label_names)
    y = np.array([label_names.index(it["tag"]) for it in items])
    probs = out_of_fold_probs(items, label_names, folds=folds, seed=seed)
    cl = confident_learning(probs, y)
    issues = []
    for i, it in enumerate(items):
        j = int(cl["confident_class"][i])
        if j < 0 or j == y[i] or probs[i, j] <= probs[i, y[i]]:
            continue
        issues.append(
            {
                "id": it["id"],
                "source": it.get("source"),
                "tag": it["tag"],
                "suggested": label_names[j],
                "given_prob": round(float(probs[i, y[i]]), 4),
                "suggested_prob": round(float(probs[i, j]), 4),
                "margin": round(float(probs[i, j] - probs[i, y[i]]), 4),
                "title": it["title"],
                "description": it["description"][:200],
            }
        )
    issues.sort(key=lambda r: (-r["margin"], r["id"]))
    summary = {
        "rows": len(items),
        "suspects": len(issues),
        "thresholds": {
            t: round(float(x), 4) for t, x in zip(label_names, cl["thresholds"], strict=True)
        },
        "confident_joint": {
            "labels": label_names,
            "matrix": cl["joint"].tolist(),
        },
        "by_change": dict(Counter(f"{r['tag']} -> {r['suggested']}" for r in issues)),
    }
    return issues, summary


# --------------------------------------------------------------------------------------------
# The layer file
# --------------------------------------------------------------------------------------------


def ids_digest(items: Sequence[dict]) -> str:
    """sha256 of the sorted ids: detects a changed split even when its settings are the same."""
    import hashlib

    ids = ",".join(str(i) for i in sorted(it["id"] for it in items))
    return hashlib.sha256(ids.encode()).hexdigest()


def build_layer(data, label_cfg) -> dict:
    """Run the finder on the train split of prepared data and return the layer (JSON-ready)."""
    train = data.splits["train"]
    issues, summary = find_label_issues(
        train, data.label_names(), folds=int(label_cfg.folds), seed=int(label_cfg.seed)
    )
    return {
        "version": LAYER_VERSION,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "method": {
            "name": "confident_learning",
            "model": "tfidf_logreg (mltagger.baselines.TfidfLogReg)",
            "folds": int(label_cfg.folds),
            "seed": int(label_cfg.seed),
            "scope": "train split",
        },
        "data_sha256": data.data_sha256,
        "split": data.split_config,
        "train_ids_sha256": ids_digest(train),
        "summary": summary,
        "issues": issues,
    }


def write_layer(layer: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(layer, indent=1, ensure_ascii=False) + "\n")
    return path


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
    """
    from mltagger.data import DataError, combined_sha256

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
    for it in splits["train"]:
        issue = chosen.get(it["id"])
        if issue is None or action == "keep":
            train.append(it)
        elif action == "drop":
            continue
        elif action == "relabel":
            train.append({**it, "tag": issue["suggested"], "tag_shipped": it["tag"]})
        else:  # downweight
            train.append({**it, "weight": float(weight)})
    summary = {
        "action": action,
        "sources": list(sources),
        "suspects_in_sources": len(chosen),
        "affected": 0 if action == "keep" else len(chosen),
        "by_change": dict(Counter(f"{r['tag']} -> {r['suggested']}" for r in chosen.values())),
    }
    return {**splits, "train": train}, summary


def render_summary(layer: dict, top: int = 25) -> str:
    s = layer["summary"]
    lines = [
        f"{s['suspects']} suspect labels among {s['rows']} train rows "
        f"({layer['method']['name']}, {layer['method']['folds']}-fold {layer['method']['model']})",
        "",
        "given -> suggested: count",
    ]
    lines += [f"  {k}: {v}" for k, v in sorted(s["by_change"].items(), key=lambda kv: -kv[1])]
    lines += ["", f"most suspicious {min(top, len(layer['issues']))}:"]
    for r in layer["issues"][:top]:
        lines.append(
            f"  [{r['id']}] {r['tag']} -> {r['suggested']} "
            f"(p {r['given_prob']:.2f} -> {r['suggested_prob']:.2f}): {r['title'][:70]}"
        )
    return "\n".join(lines)


def main(cfg) -> Path:
    """`make label-issues`: find suspect labels on the train split and write the layer file."""
    from mltagger.data import DataError, prepare_data
    from mltagger.paths import resolve_path

    label_cfg = cfg.data.get("label_noise")
    if not label_cfg or not label_cfg.get("layer"):
        raise DataError(
            f"data config {cfg.data.name!r} has no label_noise.layer; "
            "use a data config with weak labels, e.g. data=with_other"
        )
    # The finder judges the shipped labels, so it must not read its own previous layer.
    data = prepare_data(cfg.data, cfg.paths.root_dir, apply_label_noise=False)
    layer = build_layer(data, label_cfg)
    path = write_layer(layer, resolve_path(label_cfg.layer, cfg.paths.root_dir))
    print(render_summary(layer))

    # Evaluation rows are never changed automatically. Suspects among them are listed for a
    # person to review; confirmed fixes go into the reviewed-labels file (data.reviewed_labels).
    everything = [it for split in data.splits.values() for it in split]
    all_issues, _ = find_label_issues(
        everything, data.label_names(), folds=int(label_cfg.folds), seed=int(label_cfg.seed)
    )
    held_out = {it["id"]: s for s in ("val", "test") for it in data.splits[s]}
    candidates = [{**r, "split": held_out[r["id"]]} for r in all_issues if r["id"] in held_out]
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cand_path = out_dir / "review_candidates.jsonl"
    with cand_path.open("w", encoding="utf-8") as fh:
        for r in candidates:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"\n{len(candidates)} suspect labels in val/test listed for human review: {cand_path}")
    print(
        f"\nwrote {path} — review it, commit it; training applies "
        f"action={label_cfg.action} to rows of {list(label_cfg.sources)}"
    )
    return path


if __name__ == "__main__":
    from mltagger.cli import hydra_entry

    hydra_entry("train", main)
