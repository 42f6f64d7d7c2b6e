"""Does the TF-IDF out-of-scope gate improve the shipped rule on cross-validation? (issue 32)

The shipped per-tag thresholds are chosen on the default recipe's out-of-fold predictions
(`data/cv/minilm_default.json`). Here the gate is cross-fitted on the same folds (fitted on the
other folds' items and the registry negatives, scored on the fold), and the rule chosen again
the same way (pooled per-tag lower bounds, target 0.92) in three forms:

- `softmax`: today's rule, no gate;
- `with_gate`: topic probabilities times the gate's in-scope probability, `other` the rest
  (`mltagger.models.rule.with_gate`), thresholds chosen on the gated probabilities;
- `veto@q`: the item goes to `other` when the gate's score is below the q-quantile of the
  topic items' scores (q = 1%, 2%, 5%), thresholds chosen after the veto.

Reported on the out-of-fold items that choose thresholds (not the weak train-only rows): topic
coverage, topic auto-tag precision, out-of-scope items auto-tagged with a topic (harm), and the
AUROC of each in-scope signal. The fresh set is not read.

    python docs/studies/gate_on_oof.py
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from sklearn.metrics import roc_auc_score

from mltagger.core.config import compose_config
from mltagger.core.errors import user_errors
from mltagger.core.paths import resolve_path
from mltagger.data.negatives import load_checked_negatives
from mltagger.data.prepare import prepare_data
from mltagger.evaluation.thresholds import choose_tag_thresholds
from mltagger.models.rule import apply_threshold, with_gate
from mltagger.training.gate import fit_gate


def figures(probs: np.ndarray, gold: np.ndarray, labels: list[str]) -> dict:
    """The rule chosen on these probabilities, and what it does to them."""
    chosen = choose_tag_thresholds(probs, list(gold), labels, 0.92, rule="pooled")
    tags, _, review = apply_threshold(probs, labels, chosen["thresholds"], "other")
    tags, auto, topic = np.array(tags), ~review, gold != "other"
    applied = auto & (tags != "other")
    return {
        "topic_coverage": float((applied & topic).sum() / topic.sum()),
        "topic_precision": float(((tags == gold) & applied).sum() / max(applied.sum(), 1)),
        "oos_harm": float((applied & ~topic).sum() / (~topic).sum()),
        "thresholds": {t: round(float(v), 3) for t, v in chosen["thresholds"].items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--oof", default="data/cv/minilm_default.json")
    ap.add_argument("--output", default="runs/studies/gate_on_oof.json")
    args = ap.parse_args(argv)
    cfg = compose_config("train", [])
    root = cfg.paths.root_dir
    data = prepare_data(cfg.data, root)
    negatives = load_checked_negatives(resolve_path(cfg.data.gate_negatives.path, root),
                                       cfg.data, root)  # fmt: skip
    oof = json.loads(resolve_path(args.oof, root).read_text())
    labels, other = oof["labels"], oof["labels"].index("other")
    by_id = {it["id"]: it for split in data.splits.values() for it in split}
    rows = oof["oof"]
    texts = np.array([by_id[r["id"]]["text"] for r in rows], dtype=object)
    gold = np.array([r["gold"] for r in rows])
    fold = np.array([r["fold"] for r in rows])
    keep = ~np.array([bool(r.get("weak")) for r in rows])
    probs = np.array([[r["scores"][t] for t in labels] for r in rows])
    neg = [it["text"] for it in negatives]
    p_in = np.zeros(len(rows))
    for f in np.unique(fold):
        rest = fold != f
        gate = fit_gate([*texts[rest], *neg], [*(gold[rest] != "other")] + [False] * len(neg))
        p_in[fold == f] = gate.in_scope(texts[fold == f])
    topic = gold[keep] != "other"
    out = {
        "rows": int(keep.sum()),
        "auroc": {
            "softmax": float(roc_auc_score(topic, 1 - probs[keep][:, other])),
            "tfidf_gate": float(roc_auc_score(topic, p_in[keep])),
        },
        "softmax": figures(probs[keep], gold[keep], labels),
        "with_gate": figures(with_gate(probs, p_in, other)[keep], gold[keep], labels),
    }
    for q in (0.01, 0.02, 0.05):
        cut = np.quantile(p_in[keep][topic], q)
        vetoed = probs.copy()
        vetoed[p_in < cut] = np.eye(len(labels))[other]
        out[f"veto@{q:.2f}"] = figures(vetoed[keep], gold[keep], labels)
    path = resolve_path(args.output, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{out['rows']} out-of-fold items; AUROC softmax {out['auroc']['softmax']:.3f}, "
          f"TF-IDF gate {out['auroc']['tfidf_gate']:.3f}")  # fmt: skip
    print("| rule | topic coverage | topic auto precision | out-of-scope harm |")
    print("|---|---:|---:|---:|")
    for name, r in out.items():
        if isinstance(r, dict) and "topic_coverage" in r:
            print(f"| {name} | {r['topic_coverage']:.3f} | {r['topic_precision']:.3f} | "
                  f"{r['oos_harm']:.3f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    with user_errors():  # a wrong --model or file: one line, exit 2
        raise SystemExit(main())
