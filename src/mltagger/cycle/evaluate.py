"""Champion and challenger on the same items: answers, figures and the paired comparison."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mltagger.data.text import item_text


def with_text(rows: Sequence[dict]) -> list[dict]:
    return [
        r if r.get("text") else {**r, "text": item_text(r["title"], r.get("description"))}
        for r in rows
    ]


def answers(predictor, rows: Sequence[dict]) -> dict:
    """The decision rule as the service runs it: top answer, whether it is applied
    automatically, and the stored form."""
    rows = with_text(rows)
    if not rows:
        return {"tag": np.array([], dtype=object), "auto": np.zeros(0, dtype=bool), "top": []}
    preds = list(predictor.predict_iter([{"text": r["text"]} for r in rows], progress=False))
    probs = np.array([[p["scores"][t] for t in predictor.labels] for p in preds])
    top = [predictor.labels[i] for i in probs.argmax(axis=1)]
    return {
        "tag": np.array([p["tag"] for p in preds], dtype=object),
        "auto": np.array([not p["needs_review"] for p in preds], dtype=bool),
        "top": top,
    }


def figures(gold: Sequence[str], ans: dict, fallback: str = "other") -> dict:
    """Coverage (share applied automatically), precision of what was applied, the topic
    coverage, the out-of-scope harm (gold `other` given a topic automatically) and the top-1
    accuracy."""
    gold = np.asarray(gold, dtype=object)
    tag, auto, top = ans["tag"], ans["auto"], np.asarray(ans["top"], dtype=object)
    n = len(gold)
    topic = gold != fallback
    oos = ~topic
    auto_topic = auto & (tag != fallback)
    right = auto & (tag == gold)
    return {
        "n": int(n),
        "coverage": float(auto.mean()) if n else None,
        "precision": float(right.sum() / auto.sum()) if auto.any() else None,
        "auto": int(auto.sum()),
        "topic_coverage": float((auto_topic & topic).sum() / topic.sum()) if topic.any() else None,
        "oos_items": int(oos.sum()),
        "oos_harm": float((auto_topic & oos).sum() / oos.sum()) if oos.any() else None,
        "top1": float((top == gold).mean()) if n else None,
    }
