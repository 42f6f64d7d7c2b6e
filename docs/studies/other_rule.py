"""Is a confident `other` an applied tag like any other? Figures from out-of-fold predictions.

    python docs/studies/other_rule.py runs/cv/<id>/oof.json [--target 0.85]

Compares rules for the `other` class, every topic keeping its per-tag threshold at --target,
each judged honestly (thresholds chosen on the other folds' out-of-fold predictions, applied to
the held-out fold, summed over folds):
  same       `other` gets its own threshold by the same pooled lower-bound rule and target;
  review     a predicted `other` always goes to a person (never applied automatically);
  other@T    `other` by the same rule at its own target T (--other-targets, e.g. 0.85 0.80);
  share=S    scores shifted to a stream where `other` makes up S of the items (Bayes' rule);
  two-stage<=H  stage 1 gates on the in-scope score 1 - p(other) (gate chosen on the other
             folds so at most H of their out-of-scope items get a topic), stage 2 as `same`.
For each: topic coverage and precision, topic items lost to a confident `other`, out-of-scope
items answered `other` automatically, out-of-scope items auto-tagged with a topic, and the share
of all items sent to review.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mltagger.evaluation.thresholds import choose_tag_thresholds
from mltagger.models.rule import NEVER, apply_threshold


def prior_shift(p: np.ndarray, k: int, share_from: float, share_to: float) -> np.ndarray:
    """Scores as if class k made up share_to of the items instead of share_from (Bayes' rule:
    its probability reweighted by the ratio of priors, the other classes by theirs, renormalised).
    """
    w = np.full(p.shape[1], (1 - share_to) / (1 - share_from))
    w[k] = share_to / share_from
    q = p * w
    return q / q.sum(axis=1, keepdims=True)


def choose_gate(p, gold, labels, thr, fallback, k_other, harm) -> float:
    """Smallest in-scope gate g (topic auto-applied only when 1 - p(other) >= g) that keeps the
    out-of-scope items auto-tagged with a topic at or below `harm` on these (fit) predictions."""
    tags, _, review = apply_threshold(p, labels, thr, fallback)
    tags = np.array(tags, dtype=object)
    oos = np.array(gold, dtype=object) == fallback
    topic_auto = ~review & (tags != fallback)
    for g in np.linspace(0, 1, 101):
        kept = topic_auto & ((1 - p[:, k_other]) >= g)
        if kept[oos].mean() <= harm:
            return float(g)
    return 1.01


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("oof", type=Path)
    ap.add_argument("--target", type=float, default=0.85)
    ap.add_argument("--other-targets", type=float, nargs="*", default=[0.85, 0.8])
    ap.add_argument("--prior-strength", type=float, default=20.0)
    ap.add_argument(
        "--other-shares",
        type=float,
        nargs="*",
        default=[],
        help="stream shares of `other` to shift the scores to (prior shift, e.g. 0.25 0.35)",
    )
    ap.add_argument(
        "--two-stage",
        type=float,
        nargs="*",
        default=[],
        help="two-stage rule: an in-scope gate on 1 - p(other), chosen on the other folds to "
        "keep out-of-scope items auto-tagged with a topic at or below each value (e.g. 0.02)",
    )
    args = ap.parse_args()
    data = json.loads(args.oof.read_text())
    labels, fallback, rows = (
        data["labels"],
        data["fallback_tag"],
        [r for r in data["oof"] if not r.get("weak")],
    )
    keys = sorted({(r["seed"], r["fold"]) for r in rows})
    totals: dict[str, dict[str, float]] = {}
    k_other = labels.index(fallback)
    train_share = float(np.mean([r["gold"] == fallback for r in rows]))
    rules = ["same", "review", *[f"other@{t:g}" for t in args.other_targets]]
    rules += [f"share={s:g}" for s in args.other_shares]
    rules += [f"two-stage<={h:g}" for h in args.two_stage]
    for rule in rules:
        acc = dict.fromkeys(
            ("topic", "covered", "right", "lost", "oos", "oos_other", "oos_topic", "review", "n"),
            0.0,
        )
        for seed, fold in keys:
            fit = [r for r in rows if r["seed"] == seed and r["fold"] != fold]
            held = [r for r in rows if r["seed"] == seed and r["fold"] == fold]

            def arr(rs, rule=rule):
                p = np.array([[r["scores"][t] for t in labels] for r in rs])
                if rule.startswith("share="):
                    p = prior_shift(p, k_other, train_share, float(rule.split("=")[1]))
                return [r["gold"] for r in rs], p

            g_fit, p_fit = arr(fit)
            thr = choose_tag_thresholds(
                p_fit, g_fit, labels, args.target, prior_strength=args.prior_strength
            )["thresholds"]
            if rule == "review":
                thr[fallback] = NEVER
            elif rule.startswith("other@"):
                thr[fallback] = choose_tag_thresholds(
                    p_fit,
                    g_fit,
                    labels,
                    float(rule.split("@")[1]),
                    prior_strength=args.prior_strength,
                )["thresholds"][fallback]
            gate = None
            if rule.startswith("two-stage"):
                gate = choose_gate(
                    p_fit, g_fit, labels, thr, fallback, k_other, float(rule.split("=")[1])
                )
            gold, probs = arr(held)
            tags, _, review = apply_threshold(probs, labels, thr, fallback)
            if gate is not None:  # stage 1: in scope enough to auto-apply a topic?
                review = review | ((1 - probs[:, k_other]) < gate) & (
                    np.array(tags, dtype=object) != fallback
                )
            gold = np.array(gold, dtype=object)
            tags = np.array(tags, dtype=object)
            auto = ~review
            topic = gold != fallback
            acc["n"] += len(gold)
            acc["topic"] += topic.sum()
            acc["covered"] += (auto & topic & (tags != fallback)).sum()
            acc["right"] += (auto & topic & (tags == gold)).sum()
            acc["lost"] += (auto & topic & (tags == fallback)).sum()
            acc["oos"] += (~topic).sum()
            acc["oos_other"] += (auto & ~topic & (tags == fallback)).sum()
            acc["oos_topic"] += (auto & ~topic & (tags != fallback)).sum()
            acc["review"] += review.sum()
        totals[rule] = acc
    print(
        f"{len(rows)} out-of-fold predictions, {len(keys)} folds, target {args.target}, "
        f"`other` share of these items {train_share:.1%}\n"
    )
    print(
        "| rule for `other` | topic coverage | topic auto-tag precision | topic items lost to a "
        "confident `other` | out-of-scope answered `other` automatically | out-of-scope "
        "auto-tagged with a topic | all items to review |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for rule, a in totals.items():
        prec = a["right"] / a["covered"] if a["covered"] else float("nan")
        print(
            f"| {rule} | {a['covered'] / a['topic']:.1%} | {prec:.1%} | "
            f"{a['lost'] / a['topic']:.1%} | {a['oos_other'] / a['oos']:.1%} | "
            f"{a['oos_topic'] / a['oos']:.1%} | {a['review'] / a['n']:.1%} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
