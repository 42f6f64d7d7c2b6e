"""Likely label errors in weakly labelled data, and the versioned layer that fixes them.

The `other` source is labelled from catalog tags, not by a person, so some of its rows are really
topic items. Training on them as `other` teaches the model to send real topic items away. We find
them with confident learning (Northcutt, Jiang & Chuang, JAIR 2021) as implemented by cleanlab
(`cleanlab.filter.find_label_issues`): a maintained, tested implementation by the method's
authors, rather than our own copy of it. It takes out-of-fold probabilities (each row from a model
that never saw it), estimates per class pair how many labels are wrong from the confident joint
(per-class thresholds: the mean probability the model gives a class on rows labelled with it), and
flags that many rows per pair (`prune_by_noise_rate`). Suspects are ranked by self-confidence:
the lowest probability of the given label first.

The probabilities are either
- the encoder's out-of-fold predictions from `make cv` (`label_noise.oof`: its oof.json), the
  stronger model, when the file covers every train row; or
- the TF-IDF baseline's k-fold out-of-fold predictions: cheap (seconds on CPU), independent of
  the encoder, and strong enough on this data (0.89 weighted F1 on the six topics).
Inside a cross-validation fold (mltagger.training.cv) the layer is always rebuilt from TF-IDF:
the `make cv` predictions of the fold's train rows come from models that saw the fold's
held-out rows.

The result is written once as a layer file (`make label-issues` -> data/corrections/*.json),
committed and reviewed like code. Training reads it and applies the configured action to suspect
rows of the weak sources, in the train split only: val and test keep the shipped labels, so the
evaluation is not graded against the finder's opinion. The shipped data files are never edited.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mltagger.core.errors import DataError
from mltagger.core.paths import resolve_path
from mltagger.data.corrections import LAYER_VERSION, ids_digest
from mltagger.data.prepare import prepare_data
from mltagger.data.validation import sha256_file
from mltagger.models.baselines import TfidfLogReg
from mltagger.training.config_rules import check_label_issues_config

FILTER_BY = "prune_by_noise_rate"
RANKED_BY = "self_confidence"


def out_of_fold_probs(
    items: Sequence[dict], label_names: Sequence[str], folds: int = 5, seed: int = 0
) -> np.ndarray:
    """(n, K) probabilities where each row comes from a TF-IDF model trained on the other folds."""
    from sklearn.model_selection import StratifiedKFold

    y = np.array([label_names.index(it["tag"]) for it in items])
    smallest = int(np.bincount(y).min()) if len(y) else 0
    if folds < 2 or smallest < folds:
        raise DataError(
            f"label-issue search needs folds >= 2 and at least `folds` rows per class; "
            f"got folds={folds}, smallest class has {smallest} rows"
        )
    probs = np.zeros((len(items), len(label_names)))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit_idx, held_idx in splitter.split(np.zeros(len(y)), y):
        model = TfidfLogReg(seed=seed).fit([items[i] for i in fit_idx], label_names)
        probs[held_idx] = model.predict_proba([items[i] for i in held_idx])
    return probs


def read_oof(oof_path: str | Path) -> dict:
    """A `make cv` oof.json, or DataError with one line."""

    path = Path(oof_path)
    if not path.is_file():
        raise DataError(f"out-of-fold file {path} not found; build it with `make cv`")
    try:
        oof = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not a `make cv` out-of-fold file ({err})") from None
    if (
        not isinstance(oof, dict)
        or not isinstance(oof.get("oof"), list)
        or not isinstance(oof.get("labels"), list)
    ):
        raise DataError(f"{path}: not a `make cv` out-of-fold file (needs 'labels' and 'oof')")
    return oof


def oof_probs_for(
    items: Sequence[dict],
    label_names: Sequence[str],
    oof_path: str | Path,
    *,
    data_sha256: str | None = None,
) -> np.ndarray:
    """(n, K) encoder out-of-fold probabilities from a `make cv` oof.json, aligned with `items`.

    An id predicted under several seeds gets the mean of its rows; each row is renormalised to
    sum to 1 over `label_names`. Every item must have a prediction, the file's classes must be
    `label_names` and, when `data_sha256` is given, the file must be for that data: otherwise
    DataError (rebuild the file with `make cv`).
    """

    label_names = list(label_names)
    oof = read_oof(oof_path)
    if list(oof["labels"]) != label_names:
        raise DataError(
            f"{oof_path} has classes {oof['labels']}, this data {label_names}; "
            "rebuild it with `make cv` for this data config"
        )
    if data_sha256 is not None and oof.get("data_sha256") != data_sha256:
        raise DataError(
            f"{oof_path} was computed for other data (sha256 {str(oof.get('data_sha256'))[:12]}…, "
            f"now {data_sha256[:12]}…); rebuild it with `make cv` for this data config"
        )
    sums: dict[Any, np.ndarray] = defaultdict(lambda: np.zeros(len(label_names)))
    counts: Counter = Counter()
    try:
        for r in oof["oof"]:
            sums[r["id"]] += [float(r["scores"][t]) for t in label_names]
            counts[r["id"]] += 1
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{oof_path}: malformed out-of-fold row ({err!r})") from None
    missing = [it["id"] for it in items if it["id"] not in counts]
    if missing:
        raise DataError(
            f"{oof_path} has no out-of-fold prediction for {len(missing)} of {len(items)} rows "
            f"(e.g. ids {missing[:5]}); rebuild it with `make cv` for this data config"
        )
    probs = np.array([sums[it["id"]] / counts[it["id"]] for it in items]).reshape(
        len(items), len(label_names)
    )
    totals = probs.sum(axis=1, keepdims=True)
    if np.any(probs < 0) or np.any(totals <= 0):
        raise DataError(f"{oof_path}: out-of-fold scores must be non-negative with a positive sum")
    return probs / totals


def find_label_issues(
    items: Sequence[dict],
    label_names: Sequence[str],
    folds: int = 5,
    seed: int = 0,
    probs: np.ndarray | None = None,
) -> tuple[list[dict], dict[str, Any]]:
    """Suspect rows, most suspicious first (cleanlab's self-confidence ranking), and a summary.

    `probs`: (n, K) out-of-fold probabilities aligned with `items`; when None, the TF-IDF
    baseline's `folds`-fold out-of-fold probabilities. Summary: rows, suspects, per-class
    thresholds, the confident joint (raw counts: rows labelled i the model confidently puts in
    class j) and counts of given -> suggested.
    """
    from cleanlab.count import compute_confident_joint, get_confident_thresholds
    from cleanlab.filter import find_label_issues as cleanlab_find_label_issues

    label_names = list(label_names)
    y = np.array([label_names.index(it["tag"]) for it in items], dtype=int)
    if probs is None:
        probs = out_of_fold_probs(items, label_names, folds=folds, seed=seed)
    probs = np.asarray(probs, dtype=float)
    if probs.shape != (len(items), len(label_names)):
        raise ValueError(
            f"label-issue search needs probs of shape ({len(items)}, {len(label_names)}), "
            f"got {probs.shape}"
        )
    empty = [t for j, t in enumerate(label_names) if not np.any(y == j)]
    if empty:
        raise DataError(f"label-issue search needs rows of every class; none labelled {empty}")
    try:
        ranked = cleanlab_find_label_issues(
            labels=y,
            pred_probs=probs,
            filter_by=FILTER_BY,
            return_indices_ranked_by=RANKED_BY,
            n_jobs=1,  # same result; no worker processes on a shared machine
        )
        thresholds = get_confident_thresholds(y, probs)
        joint = compute_confident_joint(y, probs, calibrate=False)
    except (ValueError, AssertionError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"cleanlab could not judge these labels: {first}") from None

    issues = []
    for i in ranked:
        i = int(i)
        given = int(y[i])
        others = probs[i].copy()
        others[given] = -np.inf
        j = int(others.argmax())
        it = items[i]
        issues.append(
            {
                "id": it["id"],
                "source": it.get("source"),
                "tag": it["tag"],
                "suggested": label_names[j],
                "given_prob": round(float(probs[i, given]), 4),
                "suggested_prob": round(float(probs[i, j]), 4),
                "margin": round(float(probs[i, j] - probs[i, given]), 4),
                "title": it["title"],
                "description": it["description"][:200],
            }
        )
    summary = {
        "rows": len(items),
        "suspects": len(issues),
        "thresholds": {t: round(float(x), 4) for t, x in zip(label_names, thresholds, strict=True)},
        "confident_joint": {
            "labels": label_names,
            "matrix": np.asarray(joint, dtype=int).tolist(),
        },
        "by_change": dict(Counter(f"{r['tag']} -> {r['suggested']}" for r in issues)),
    }
    return issues, summary


def build_layer(data, label_cfg, root_dir=None, *, use_oof: bool = True) -> dict:
    """Run the finder on the train split of prepared data and return the layer (JSON-ready).

    With `label_cfg.oof` (a `make cv` oof.json, relative to `root_dir`) and `use_oof`, the
    finder judges the encoder's out-of-fold probabilities of the train rows; otherwise the TF-IDF
    baseline's `label_cfg.folds`-fold ones. mltagger.training.cv passes use_oof=False inside a fold.
    """
    import cleanlab

    train = data.splits["train"]
    labels = data.label_names()
    method: dict[str, Any] = {
        "name": "cleanlab.filter.find_label_issues",
        "cleanlab": cleanlab.__version__,
        "filter_by": FILTER_BY,
        "ranked_by": RANKED_BY,
    }
    if use_oof and label_cfg.get("oof"):
        path = resolve_path(label_cfg.oof, root_dir)
        probs = oof_probs_for(train, labels, path, data_sha256=data.data_sha256)
        oof = read_oof(path)
        method |= {
            "probs": f"encoder out-of-fold (make cv): {label_cfg.oof}",
            "probs_sha256": sha256_file(path),
            "probs_fingerprint": oof.get("fingerprint"),
            "oof_folds": oof.get("folds"),
            "oof_seeds": oof.get("seeds"),
        }
    else:
        folds, seed = int(label_cfg.folds), int(label_cfg.seed)
        probs = out_of_fold_probs(train, labels, folds=folds, seed=seed)
        method |= {
            "probs": f"tfidf_logreg out-of-fold ({folds} folds)",
            "model": "tfidf_logreg (mltagger.models.baselines.TfidfLogReg)",
            "folds": folds,
            "seed": seed,
        }
    method["scope"] = "train split"
    issues, summary = find_label_issues(train, labels, probs=probs)
    return {
        "version": LAYER_VERSION,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "method": method,
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


def render_summary(layer: dict, top: int = 25) -> str:
    s, m = layer["summary"], layer["method"]
    # Layers written before cleanlab name their probabilities by folds and model.
    probs = m.get("probs") or f"{m.get('folds')}-fold {m.get('model')}"
    ranked = f", ranked by {m['ranked_by']}" if m.get("ranked_by") else ""
    lines = [
        f"{s['suspects']} suspect labels among {s['rows']} train rows "
        f"({m['name']}{ranked}; probabilities: {probs})",
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

    check_label_issues_config(cfg)
    label_cfg = cfg.data.label_noise
    # The finder judges the shipped labels, so it must not read its own previous layer.
    data = prepare_data(cfg.data, cfg.paths.root_dir, apply_label_noise=False)
    layer = build_layer(data, label_cfg, cfg.paths.root_dir)
    path = write_layer(layer, resolve_path(label_cfg.layer, cfg.paths.root_dir))
    print(render_summary(layer))

    # Evaluation rows are never changed automatically. Suspects among them are listed for a
    # person to review; confirmed fixes go into the reviewed-labels file (data.reviewed_labels).
    # This pass always uses TF-IDF out-of-fold probabilities, also when label_noise.oof is set:
    # `make cv` predicts only train+val rows, so the test rows would have no encoder probability.
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
    print(
        f"\n{len(candidates)} suspect labels in val/test listed for human review "
        f"(TF-IDF out-of-fold probabilities, all splits): {cand_path}"
    )
    print(
        f"\nwrote {path} — review it, commit it; training applies "
        f"action={label_cfg.action} to rows of {list(label_cfg.sources)}"
    )
    return path
