"""Online precision after release, from proxy signals, per tag and model version.

After release there are no gold labels, only signals, each biased its own way:

- `audit`: auto-tagged items drawn at random for review (`monitor.audit_share`) and reviewed. The
  only unbiased estimate of auto-tag precision, but small: n is the audited items reviewed.
- `author`: the tag the submitter chose. Plentiful and free, but authors pick loosely (a
  transformer for time series may be filed under NLP) and sometimes strategically, so it
  measures agreement with authors, a lower bound on precision when authors err.
- `reports`: auto-tagged items nobody reported as wrong. Most wrong tags are never reported, so
  this is an upper bound; a fall in it is still an early warning.

Every figure carries its count and a 95% Wilson interval. A candidate under shadow or canary is
scored on its own answers (`items.shadow` holds the answer of the model that did not tag an
item): by author and audit signals only, since nobody saw, and so nobody reported, its answers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from mltagger.evaluation.stats import wilson_bounds
from mltagger.models.rule import AUTO_REASONS, REASON_OUT_OF_SCOPE, REVIEW_REASONS

SIGNALS = ("audit", "author", "reports")
ALL = "all"


def answers(rows: Iterable[dict]) -> list[dict]:
    """One answer per model per item: the shown one (`model_tag`) and, under a rollout, the
    other model's (`shadow`); each with whether it was applied automatically."""
    out = []
    for r in rows:
        base = {
            "author_tag": r.get("author_tag"),
            "review_tag": r.get("review_tag") if r.get("audit") else None,
            "reports": int(r.get("reports") or 0),
        }
        out.append(
            {
                **base,
                "model_version": r.get("model_version") or "unknown",
                "tag": r["model_tag"],
                "auto": r.get("reason") in AUTO_REASONS,
                "shown": True,
            }
        )
        shadow = r.get("shadow")
        if shadow:
            out.append(
                {
                    **base,
                    "model_version": shadow["model_version"],
                    "tag": shadow["tag"],
                    "auto": not shadow["needs_review"],
                    "shown": False,
                }
            )
    return out


def _verdict(answer: dict, signal: str) -> bool | None:
    """Is this auto-applied answer right by this signal? None: the signal says nothing."""
    if not answer["auto"]:
        return None
    if signal == "audit":
        return None if answer["review_tag"] is None else answer["review_tag"] == answer["tag"]
    if signal == "author":
        return None if answer["author_tag"] is None else answer["author_tag"] == answer["tag"]
    if signal == "reports":
        return None if not answer["shown"] else answer["reports"] == 0
    raise ValueError(f"unknown signal {signal!r}; one of {SIGNALS}")


def figure(correct: int, n: int) -> dict:
    """Precision with its 95% Wilson interval (None for all three when n is 0)."""
    if n == 0:
        return {"n": 0, "correct": 0, "precision": None, "ci_low": None, "ci_high": None}
    lo, hi = wilson_bounds(correct, n)
    return {
        "n": n,
        "correct": correct,
        "precision": correct / n,
        "ci_low": float(max(0.0, lo)),
        "ci_high": float(min(1.0, hi)),
    }


def online_precision(rows: Sequence[dict], signals: Sequence[str] = SIGNALS) -> list[dict]:
    """Rows of {signal, model_version, tag, n, correct, precision, ci_low, ci_high}: per model
    version and `all`, per answered tag and `all`."""
    counts: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for a in answers(rows):
        for signal in signals:
            ok = _verdict(a, signal)
            if ok is None:
                continue
            for version in (a["model_version"], ALL):
                if version == ALL and not a["shown"]:
                    continue  # `all` is what users saw
                for tag in (a["tag"], ALL):
                    c = counts[(signal, version, tag)]
                    c[0] += int(ok)
                    c[1] += 1
    return [
        {"signal": s, "model_version": v, "tag": t, **figure(c, n)}
        for (s, v, t), (c, n) in sorted(counts.items())
    ]


def disagreement(rows: Sequence[dict]) -> list[dict]:
    """Under a rollout: how often the shown and the other model tagged an item differently."""
    pairs: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        shadow = r.get("shadow")
        if not shadow:
            continue
        key = (r.get("model_version") or "unknown", shadow["model_version"])
        pairs[key][0] += int(shadow["tag"] != r["model_tag"])
        pairs[key][1] += 1
    return [
        {"shown": a, "other": b, "items": n, "disagree": d, "rate": d / n}
        for (a, b), (d, n) in sorted(pairs.items())
    ]


def review_ratio(rows: Sequence[dict]) -> float | None:
    """Share of the window's model-tagged items the model itself sent to review."""
    shown = [r for r in rows if r.get("reason") is not None]
    if not shown:
        return None
    return sum(r["reason"] in REVIEW_REASONS for r in shown) / len(shown)


def out_of_scope_ratio(rows: Sequence[dict]) -> float | None:
    """Share of the window's model-tagged items the out-of-scope gate stopped (`other`, applied
    without review): a jump means the stream moved, or the gate did."""
    shown = [r for r in rows if r.get("reason") is not None]
    if not shown:
        return None
    return sum(r["reason"] == REASON_OUT_OF_SCOPE for r in shown) / len(shown)


def secondary_shares(rows: Sequence[dict]) -> dict:
    """Secondary tags in a window (issue 35): the share of items the model tagged without review
    that carry one it applied, and the share of items a person decided that carry one the person
    set. A model share far from the reviewers' says the head applies too much or too little."""
    auto = [r for r in rows if r.get("reason") is not None and r["reason"] not in REVIEW_REASONS
            and r.get("tagged_by") != "human"]  # fmt: skip
    human = [r for r in rows if r.get("tagged_by") == "human"]

    def share(part: list[dict]) -> float | None:
        return sum(bool(r.get("secondary_tags")) for r in part) / len(part) if part else None

    return {"auto": share(auto), "auto_items": len(auto), "reviewed": share(human),
            "reviewed_items": len(human)}  # fmt: skip
