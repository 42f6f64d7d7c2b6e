"""Teacher soft labels: what a stronger model thinks of every training item, shipped as data.

The product trains and serves the 6-layer MiniLM. A bigger encoder (all-mpnet-base-v2, 109M
parameters, `make install-mpnet`) reads the same items better but costs ~8x per step on CPU, so
the default `make train` never runs it: `make teacher` computes the teacher's class probabilities
for every train + val item of a data config once, and writes them with the teacher's identity
and the data's sha256 to a file (`data/teacher/*.json`). Training with `distill.soft_labels`
mixes them into the loss (mltagger.training.distill.distillation_loss) when the data sha256 matches.

Teachers (`--teacher`):
- `mpnet_lr`: frozen all-mpnet-base-v2 sentence embeddings (mean pooling, as the model was trained)
  and a logistic regression, **cross-fitted**: each item's probabilities come from a regression
  that never saw it, so the soft labels carry the teacher's real uncertainty instead of a
  memorised one-hot (a model scoring its own training items is near-certain on all of them).
- `minilm_cv`: the fine-tuned MiniLM's out-of-fold probabilities from `make cv` (`--oof`).
- `ensemble`: the mean of the two.

`--evaluate` also fits the mpnet regression on the train split and scores test and the fresh set,
so a teacher is judged on the same items as the student.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from tqdm.auto import tqdm

from mltagger.core.errors import DataError
from mltagger.core.paths import resolve_path
from mltagger.data.prepare import PreparedData, prepare_data
from mltagger.data.validation import sha256_file
from mltagger.models.modelio import ModelNotAvailable, resolve_model_path
from mltagger.training.label_issues import oof_probs_for

TEACHERS = ("mpnet_lr", "minilm_cv", "ensemble")
MPNET_DIR = "models/teachers/all-mpnet-base-v2"
SOFT_LABELS_VERSION = 1


def embed(
    texts: Sequence[str],
    model_dir: str | Path,
    batch_size: int = 32,
    cache: str | Path | None = None,
) -> np.ndarray:
    """L2-normalised mean-pooled sentence embeddings (what sentence-transformers computes).

    `cache`: an .npz of text sha1 -> vector, so several data configs share one pass of the
    (slow, ~8 texts/s on 2 cores) encoder; written back with the new texts.
    """

    keys = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
    known: dict[str, np.ndarray] = {}
    if cache is not None and Path(cache).is_file():
        z = np.load(cache)
        known = dict(zip(z["keys"].tolist(), z["vectors"], strict=True))
    todo = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in known}.items())
    if todo:
        new = _embed([t for _, t in todo], model_dir, batch_size)
        known.update({k: v for (k, _), v in zip(todo, new, strict=True)})
        if cache is not None:
            Path(cache).parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, keys=np.array(list(known)), vectors=np.stack(list(known.values())))
    return np.stack([known[k] for k in keys]) if keys else np.zeros((0, 0))


def _embed(texts: Sequence[str], model_dir: str | Path, batch_size: int) -> np.ndarray:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    out = []
    with torch.inference_mode():
        for i in tqdm(range(0, len(texts), batch_size), desc="embed", unit="batch"):
            enc = tok(
                list(texts[i : i + batch_size]),
                truncation=True,
                max_length=128,
                padding=True,
                return_tensors="pt",
            )
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


def _logreg(c: float = 4.0, seed: int = 0):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=2000, class_weight="balanced", random_state=seed)


def cross_fitted_probs(
    x: np.ndarray, y: np.ndarray, n_classes: int, folds: int = 5, seed: int = 0
) -> np.ndarray:
    """(n, K) probabilities, each row from a regression fitted on the other folds."""
    from sklearn.model_selection import StratifiedKFold

    probs = np.zeros((len(y), n_classes))
    for fit, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        model = _logreg(seed=seed).fit(x[fit], y[fit])
        p = np.zeros((len(held), n_classes))
        p[:, model.classes_] = model.predict_proba(x[held])
        probs[held] = p
    return probs


def pool_items(data: PreparedData) -> list[dict]:
    """The items a training of this data config can see: train + val (CV folds use both)."""
    return data.splits["train"] + data.splits["val"]


def minilm_oof(items: Sequence[dict], labels: Sequence[str], oof_path: Path) -> np.ndarray:
    """The `make cv` out-of-fold probabilities for `items` (mean over seeds)."""

    return oof_probs_for(items, list(labels), oof_path)


def soft_labels_file(
    items: Sequence[dict],
    probs: np.ndarray,
    labels: Sequence[str],
    data: PreparedData,
    teacher: dict,
) -> dict:
    return {
        "version": SOFT_LABELS_VERSION,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "teacher": teacher,
        "data_sha256": data.data_sha256,
        "labels": list(labels),
        "rows": [
            {"id": it["id"], "probs": [round(float(v), 5) for v in p]}
            for it, p in zip(items, probs, strict=True)
        ],
    }


def load_soft_labels(
    path: str | Path, data: PreparedData, labels: Sequence[str], items: Sequence[dict]
) -> tuple[np.ndarray | None, dict]:
    """(n, K) teacher probabilities for `items`, or None with the reason when they do not apply.

    They apply only to the data they were computed on (same sha256) and the same classes; every
    item must have a row. A mismatch is reported by the caller (warning + run record), so a run on
    other data trains without the teacher instead of with soft labels of other rows.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"distill.soft_labels={path}: no such file (build it with `make teacher`)")
    blob = json.loads(path.read_text())
    info = {"file": str(path), "sha256": sha256_file(path), "teacher": blob.get("teacher")}
    if blob.get("data_sha256") != data.data_sha256:
        return None, {
            **info,
            "used": False,
            "reason": f"computed for data {str(blob.get('data_sha256'))[:12]}…, "
            f"this run's data is {data.data_sha256[:12]}…",
        }
    if blob.get("labels") != list(labels):
        return None, {**info, "used": False, "reason": "computed for other classes"}
    by_id = {r["id"]: r["probs"] for r in blob["rows"]}
    missing = [it["id"] for it in items if it["id"] not in by_id]
    if missing:
        raise DataError(
            f"{path}: no soft label for {len(missing)} training items (e.g. {missing[:5]}) "
            "although the data sha256 matches; rebuild it with `make teacher`"
        )
    probs = np.array([by_id[it["id"]] for it in items], dtype=float)
    probs = probs / probs.sum(axis=1, keepdims=True)
    return probs, {**info, "used": True, "rows": len(items)}


def _figures(gold: Sequence[str], probs: np.ndarray, labels: Sequence[str], fallback: str) -> dict:
    from sklearn.metrics import f1_score

    pred = [labels[i] for i in probs.argmax(1)]
    topics = [i for i, g in enumerate(gold) if g != fallback]
    return {
        "n": len(gold),
        "accuracy": float(np.mean([p == g for p, g in zip(pred, gold, strict=True)])),
        "f1_weighted": float(f1_score(gold, pred, average="weighted", zero_division=0)),
        "topic_f1_weighted": float(
            f1_score(
                [gold[i] for i in topics],
                [pred[i] for i in topics],
                labels=[t for t in labels if t != fallback],
                average="weighted",
                zero_division=0,
            )
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """`make teacher`: soft labels of a teacher for every train + val item -> data/teacher/."""

    p = argparse.ArgumentParser(prog="mltagger teacher", description=main.__doc__)
    p.add_argument("--teacher", choices=TEACHERS, default="ensemble")
    p.add_argument("--data", default="with_external", help="a data config (conf/data/*.yaml)")
    p.add_argument("--oof", default=None, help="make cv oof.json (minilm_cv and ensemble)")
    p.add_argument("--mpnet", default=MPNET_DIR)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--out", default=None, help="default data/teacher/<teacher>_<data>.json")
    p.add_argument("--evaluate", action="store_true", help="also score test and fresh")
    p.add_argument("--cache", default="runs/teacher_cache/mpnet_embeddings.npz")
    args = p.parse_args(argv)
    root = resolve_path(".", None)
    cache = resolve_path(args.cache, root) if args.cache else None
    if not (root / "conf" / "data" / f"{args.data}.yaml").is_file():
        known = sorted(p.stem for p in (root / "conf" / "data").glob("*.yaml"))
        print(f"error: --data {args.data}: no such data config; use one of {known}")
        return 2
    with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"data={args.data}", f"paths.root_dir={root}"])
    try:
        data = prepare_data(cfg.data, root)
        labels = data.label_names()
        items = pool_items(data)
        y = np.array([labels.index(it["tag"]) for it in items])
        teacher: dict = {"name": args.teacher, "data_config": args.data}
        parts = []
        if args.teacher in ("mpnet_lr", "ensemble"):
            folder = Path(resolve_model_path(str(resolve_path(args.mpnet, root))))
            t0 = time.perf_counter()
            x = embed([it["text"] for it in items], folder, cache=cache)
            secs = time.perf_counter() - t0
            print(f"embedded {len(items)} items with all-mpnet-base-v2 in {secs:.0f} s")
            parts.append(cross_fitted_probs(x, y, len(labels), folds=args.folds))
            teacher["mpnet"] = {
                "model": "sentence-transformers/all-mpnet-base-v2 (frozen, mean pooling)",
                "model_safetensors_sha256": sha256_file(folder / "model.safetensors"),
                "head": "logistic regression (C=4, balanced), cross-fitted",
                "folds": args.folds,
                "embed_seconds": round(secs, 1),
            }
        if args.teacher in ("minilm_cv", "ensemble"):
            if not args.oof:
                raise DataError(f"--teacher {args.teacher} needs --oof (a make cv oof.json)")
            oof_path = resolve_path(args.oof, root)
            parts.append(minilm_oof(items, labels, oof_path))
            teacher["minilm_cv"] = {"oof": str(args.oof), "oof_sha256": sha256_file(oof_path)}
        probs = np.mean(parts, axis=0)
        fig = _figures([it["tag"] for it in items], probs, labels, data.fallback_tag)
        teacher["cross_fitted_figures_on_pool"] = fig
        print(f"teacher {args.teacher} on {len(items)} train+val items (out of fold): {fig}")
        if args.evaluate and args.teacher in ("mpnet_lr", "ensemble"):
            teacher["evaluation"] = _evaluate_mpnet(data, labels, folder, x, items, y, cache)
            print(json.dumps(teacher["evaluation"], indent=1))
    except (DataError, ModelNotAvailable) as err:
        print(f"error: {err}")
        return 2
    out = resolve_path(args.out or f"data/teacher/{args.teacher}_{args.data}.json", root)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(soft_labels_file(items, probs, labels, data, teacher)) + "\n")
    print(f"wrote {out} (sha256 {sha256_file(out)})")
    return 0


def _evaluate_mpnet(data, labels, folder, x_pool, pool, y_pool, cache) -> dict:
    """The mpnet regression fitted on the train split, scored on test and the fresh set."""
    train_n = len(data.splits["train"])
    model = _logreg().fit(x_pool[:train_n], y_pool[:train_n])
    out = {}
    for name, items in (("test", data.splits["test"]), ("fresh", data.fresh)):
        if not items:
            continue
        p = np.zeros((len(items), len(labels)))
        x = embed([it["text"] for it in items], folder, cache=cache)
        p[:, model.classes_] = model.predict_proba(x)
        out[name] = _figures([it["tag"] for it in items], p, labels, data.fallback_tag)
    return out
