"""Fitting the secondary-tag head (`mltagger.models.secondary.SecondaryHead`) and choosing its
threshold on cross-validation, then scoring the fresh set once (issue 35).

What it learns from: the stream pool (data/pool/stream.json), the only source whose items were
each read for a second defensible tag (`also`, 704 of 1,775; a second reader agrees on it with
kappa 0.755, data/SOURCE.md). Its features are the primary model's probabilities for the item,
taken from the recipe's out-of-fold file (`data.cv_oof`: a fold model that never saw the item,
like the serving model on a new item), and a word TF-IDF of its text.

How the threshold is chosen: the pool's own folds (the out-of-fold file's date-ordered folds);
the head is fitted on two folds and scores the third; the primary rule of the model folder is
applied to the out-of-fold probabilities (its per-tag thresholds and gate), so candidates are
exactly those the service would consider; the lowest threshold whose candidates reach the
precision target with enough support wins. No fresh-set figure takes part; the fresh set is
scored after the choice, with the model folder's own probabilities.

    mltagger secondary --model models/latest --write models/latest models/export
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from mltagger.data.text import item_text
from mltagger.data.validation import sha256_file
from mltagger.evaluation.secondary import choose_threshold, precision_curve, secondary_figures
from mltagger.models.gate import Block
from mltagger.models.modelio import InferenceConfig, read_model_metadata
from mltagger.models.predict import Predictor
from mltagger.models.rule import apply_threshold, gate_mask
from mltagger.models.secondary import SecondaryHead

WORDS = {"ngram_range": (1, 2), "min_df": 2}
C = 1.0
GRID = [round(0.30 + 0.01 * k, 2) for k in range(66)]  # 0.30 .. 0.95


@dataclass
class PoolRows:
    """The pool items with their out-of-fold primary probabilities, in one order."""

    items: list[dict]
    texts: list[str]
    probs: np.ndarray  # (items, tags)
    in_scope: np.ndarray | None
    folds: np.ndarray
    labels: list[str]
    oof_sha256: str


def pool_rows(pool_path: Path, oof_path: Path) -> PoolRows:
    """Join the pool's items (with `also`) to their out-of-fold rows by id."""
    pool = {int(it["id"]): it for it in json.loads(pool_path.read_text())}
    oof = json.loads(oof_path.read_text())
    labels = list(oof["labels"])
    rows = [r for r in oof["oof"] if r.get("source") == "pool" and int(r["id"]) in pool]
    if not rows:
        raise ValueError(f"{oof_path} has no out-of-fold rows of the pool ({pool_path})")
    items = [pool[int(r["id"])] for r in rows]
    has_gate = all("in_scope" in r for r in rows)
    return PoolRows(
        items=items,
        texts=[item_text(it["title"], it.get("description")) for it in items],
        probs=np.array([[r["scores"][t] for t in labels] for r in rows], dtype=float),
        in_scope=np.array([r["in_scope"] for r in rows], dtype=float) if has_gate else None,
        folds=np.array([int(r["fold"]) for r in rows]),
        labels=labels,
        oof_sha256=sha256_file(oof_path),
    )


def membership(items: Sequence[dict], labels: Sequence[str]) -> np.ndarray:
    """(items, tags) 0/1: the tag is the item's gold tag or its gold `also`."""
    y = np.zeros((len(items), len(labels)), dtype=int)
    col = {t: j for j, t in enumerate(labels)}
    for i, it in enumerate(items):
        y[i, col[it["tag"]]] = 1
        if it.get("also"):
            y[i, col[it["also"]]] = 1
    return y


def fit_head(
    texts: Sequence[str],
    probs: np.ndarray,
    y: np.ndarray,
    labels: Sequence[str],
    threshold: float = 1.0,
    fallback_tag: str = "other",
    seed: int = 0,
) -> SecondaryHead:
    """One logistic head per tag on [primary probabilities, word TF-IDF], as a numpy scorer."""
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(analyzer="word", sublinear_tf=True, **WORDS)
    words = vec.fit_transform(list(texts))
    x = hstack([csr_matrix(np.asarray(probs, dtype=float)), words]).tocsr()
    n_tags = len(labels)
    coef = np.zeros((n_tags + words.shape[1], n_tags))
    intercept = np.zeros(n_tags)
    for j in range(n_tags):
        if len(set(y[:, j].tolist())) < 2:  # a tag never (or always) present: a constant
            intercept[j] = 20.0 if y[0, j] else -20.0
            continue
        head = LogisticRegression(C=C, max_iter=3000, random_state=seed).fit(x, y[:, j])
        coef[:, j], intercept[j] = head.coef_[0], head.intercept_[0]
    block = Block(
        analyzer="word",
        ngram_range=tuple(vec.ngram_range),
        vocabulary={t: int(i) for t, i in vec.vocabulary_.items()},
        idf=np.asarray(vec.idf_, dtype=float),
    )
    return SecondaryHead(
        labels=list(labels),
        block=block,
        coef_words=coef[n_tags:],
        coef_probs=coef[:n_tags],
        intercept=intercept,
        threshold=threshold,
        fallback_tag=fallback_tag,
    )


def primary_decisions(
    probs: np.ndarray, in_scope: np.ndarray | None, labels: Sequence[str], inf: InferenceConfig
) -> tuple[list[str], np.ndarray]:
    """The model folder's primary rule on these probabilities: (tags, needs_review)."""
    gated = None
    if inf.gate_threshold is not None and in_scope is not None:
        gated = gate_mask(in_scope, inf.gate_threshold, len(probs))
    tags, _, review = apply_threshold(
        probs, labels, inf.decision_threshold(), inf.fallback_tag, gated
    )
    return tags, review


def candidates(
    head: SecondaryHead,
    items: Sequence[dict],
    tags: Sequence[str],
    review: np.ndarray,
    scores: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(score, right) of every secondary candidate the rule would consider at threshold 0."""
    probe = SecondaryHead(**{**head.__dict__, "threshold": 0.0})
    out_s, out_r = [], []
    for item, picks in zip(items, probe.secondary(tags, review, scores), strict=True):
        ok = {item["tag"], item.get("also") or None}
        for tag, s in picks:
            out_s.append(s)
            out_r.append(tag in ok)
    return np.array(out_s), np.array(out_r, dtype=bool)


def cross_validate(rows: PoolRows, inf: InferenceConfig, target: float, min_applied: int) -> dict:
    """Out-of-fold head scores on the pool's folds -> precision curve and the chosen threshold."""
    y = membership(rows.items, rows.labels)
    tags, review = primary_decisions(rows.probs, rows.in_scope, rows.labels, inf)
    all_s, all_r = [], []
    recall_den = sum(1 for it in rows.items if it.get("also"))
    for fold in np.unique(rows.folds):
        tr, te = np.where(rows.folds != fold)[0], np.where(rows.folds == fold)[0]
        head = fit_head(
            [rows.texts[i] for i in tr],
            rows.probs[tr],
            y[tr],
            rows.labels,
            fallback_tag=inf.fallback_tag,
        )
        scores = head.scores([rows.texts[i] for i in te], rows.probs[te])
        s, r = candidates(
            head, [rows.items[i] for i in te], [tags[i] for i in te], review[te], scores
        )
        all_s.append(s)
        all_r.append(r)
    scores, right = np.concatenate(all_s), np.concatenate(all_r)
    curve = precision_curve(scores, right, GRID)
    for row in curve:  # recall of the pool's `also` at that threshold (an upper bound: right
        # candidates may be the gold tag when the primary answered the `also`)
        row["recall_upper"] = round(
            float((right & (scores >= row["threshold"])).sum()) / max(recall_den, 1), 4
        )
    return {
        "curve": curve,
        "chosen": choose_threshold(curve, target, min_applied),
        "target": target,
        "min_applied": min_applied,
        "pool_items": len(rows.items),
        "pool_also": recall_den,
        "folds": len(np.unique(rows.folds)),
    }


def fresh_figures(model_dir: Path, head: SecondaryHead, fresh: Sequence[dict]) -> dict:
    """The model folder's decisions on the fresh set with this head, against its gold `also`."""
    predictor = Predictor(model_dir)
    predictor.secondary = head
    items = [
        {"id": it["id"], "text": item_text(it["title"], it.get("description"))} for it in fresh
    ]
    records = predictor.predict(items)
    return {
        "figures": secondary_figures(records, fresh, predictor.inference.fallback_tag),
        "records": [
            {"id": r["id"], "tags": r["tags"], "needs_review": r["needs_review"]} for r in records
        ],
    }


def report_markdown(cv: dict, fresh: dict | None, head_path: str) -> str:
    """The run's report: the CV curve around the choice, the chosen threshold, fresh figures."""
    chosen = cv["chosen"]
    lines = [
        "# Secondary tags: threshold chosen on the pool's folds, then the fresh set once",
        "",
        f"Pool items {cv['pool_items']} ({cv['pool_also']} with `also`), {cv['folds']} folds; "
        f"target precision {cv['target']} with at least {cv['min_applied']} candidates.",
        "",
        "| threshold | candidates | precision | recall (upper) |",
        "|---|---|---|---|",
    ]
    for row in cv["curve"][::5]:
        lines.append(
            f"| {row['threshold']} | {row['applied']} | {row['precision']} | "
            f"{row['recall_upper']} |"
        )
    lines += ["", f"Chosen: {chosen if chosen else 'none: no threshold reaches the target'}", ""]
    if fresh:
        lines += ["## Fresh set", "", "```", json.dumps(fresh["figures"], indent=1), "```"]
    lines += ["", f"Head: `{head_path}`"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """`mltagger secondary`: choose on CV, fit on the whole pool, write the head, score fresh."""
    p = argparse.ArgumentParser(prog="mltagger secondary", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("models/latest"))
    p.add_argument("--pool", type=Path, default=Path("data/pool/stream.json"))
    p.add_argument("--oof", type=Path, default=Path("data/cv/minilm_with_pool.json"))
    p.add_argument("--fresh", type=Path, default=Path("data/eval/fresh.json"))
    p.add_argument("--target", type=float, default=0.85, help="precision of secondary tags")
    p.add_argument("--min-applied", type=int, default=20)
    p.add_argument(
        "--write",
        type=Path,
        nargs="*",
        default=[],
        help="model folders to put secondary.json in (default: --model)",
    )
    p.add_argument("--out", type=Path, default=Path("runs/secondary"))
    args = p.parse_args(argv)
    for path in (args.model, args.pool, args.oof):
        if not path.exists():
            print(f"mltagger secondary: {path} does not exist", flush=True)
            return 2
    labels, inf = read_model_metadata(args.model)
    rows = pool_rows(args.pool, args.oof)
    if rows.labels != labels:
        print(f"mltagger secondary: {args.oof} has classes {rows.labels}, the model {labels}")
        return 2
    cv = cross_validate(rows, inf, args.target, args.min_applied)
    out = args.out / datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    out.mkdir(parents=True)
    if cv["chosen"] is None:
        (out / "report.md").write_text(report_markdown(cv, None, "(none written)"))
        print(f"no threshold reaches precision {args.target} on CV: no head written ({out})")
        return 1
    head = fit_head(
        rows.texts,
        rows.probs,
        membership(rows.items, labels),
        labels,
        threshold=cv["chosen"]["threshold"],
        fallback_tag=inf.fallback_tag,
    )
    head.provenance = {
        "pool_sha256": sha256_file(args.pool),
        "oof_sha256": rows.oof_sha256,
        "cv": cv["chosen"],
        "target": args.target,
        "run": str(out),
    }
    for folder in args.write or [args.model]:
        head.save(folder)
    head.save(out)
    fresh = None
    if args.fresh.is_file():
        fresh = fresh_figures(args.model, head, json.loads(args.fresh.read_text()))
    (out / "metrics.json").write_text(
        json.dumps({"cv": cv, "fresh": fresh["figures"] if fresh else None}, indent=1) + "\n"
    )
    if fresh:
        (out / "fresh_predictions.json").write_text(json.dumps(fresh["records"]) + "\n")
    (out / "report.md").write_text(report_markdown(cv, fresh, str(out / "secondary.json")))
    print((out / "report.md").read_text())
    return 0
