"""The stream's labels for one cycle: what people decided, what authors said, what is held out,
and what is quarantined, before anything is trained.

- **Gold**: an item's latest review (a queue decision, an audit decision, or a report a reviewer
  confirmed: confirming a report is a review). Reports nobody reviewed are not gold.
- **Weak**: the tag the author chose, on items no person reviewed, weighted by how often authors
  agree with reviewers on the items that have both (measured each cycle, never assumed).
- **Recent window**: the newest `recent` gold labels are this cycle's comparison set and stay out
  of its training; the next cycle trains on them.
- **Left out, counted and named**: labels whose item is gone, labels with a tag outside the
  approved list, and items that repeat a test or fresh-set item (those sets never enter training).
- **Quarantine**: a batch (one reviewer's labels of one day, or all labels of one day) whose
  agreement with an independent witness falls far below every other batch's is held out by
  name; the rest still train. The witness of a label is the author's tag where the item has
  one, else the serving model's top answer. A shuffled reviewer or a day of flipped labels looks
  like that; a reviewer correcting a model that is wrong on a new topic can too, which is why it
  is a quarantine a person can release (`mltagger cycle release BATCH`), not a deletion.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import sqlalchemy as sa

from mltagger.cycle.gates import gate
from mltagger.data.duplicates import dedup_key
from mltagger.data.text import item_text
from mltagger.serving.tables import items, reviews


@dataclass(frozen=True)
class LabelSettings:
    recent: int = 150  # gold labels held out as the recent window
    min_train: int = 30  # new gold labels (beyond the recent window) a cycle needs to train
    min_batch: int = 15  # labels a batch needs before its agreement is judged
    batch_drop: float = 0.15  # quarantine: agreement this far below the other batches'...
    batch_p: float = 0.001  # ...and a one-sided two-proportion test this sure
    max_reviewer_share: float = 0.6  # label gate: one reviewer's share of the new labels
    min_share_labels: int = 40  # ...judged from this many new labels on
    max_shift: float = 0.3  # label gate: total variation between new and earlier labels
    shift_p: float = 0.001
    min_author_overlap: int = 30  # items with both an author tag and a review, to weigh authors


@dataclass
class CycleLabels:
    """What one cycle learns from and is judged on (see the module docstring)."""

    train: list[dict] = field(default_factory=list)  # gold, not recent, not quarantined
    weak: list[dict] = field(default_factory=list)  # author tags, weighted
    recent: list[dict] = field(default_factory=list)
    quarantined: dict[str, dict] = field(default_factory=dict)  # batch name -> figures
    left_out: dict[str, list[int]] = field(default_factory=dict)  # reason -> item ids
    author_weight: float | None = None
    author_overlap: int = 0
    new_gold: int = 0  # gold labels not seen by the previous cycle
    max_review_id: int = 0  # the newest review read, quarantined or not
    batches: list[dict] = field(default_factory=list)

    def sha256(self) -> str:
        """The identity of the label set a challenger learns from (a rolled-back challenger
        is not trained again on the same one)."""
        key = [(r["item_id"], r["tag"], r["weight"]) for r in (*self.train, *self.weak)]
        return hashlib.sha256(json.dumps(sorted(key)).encode()).hexdigest()

    def summary(self) -> dict:
        return {
            "train_gold": len(self.train),
            "train_weak": len(self.weak),
            "recent_window": len(self.recent),
            "new_gold": self.new_gold,
            "author_weight": self.author_weight,
            "author_overlap": self.author_overlap,
            "quarantined": self.quarantined,
            "left_out": {k: len(v) for k, v in self.left_out.items()},
            "left_out_ids": {k: v[:20] for k, v in self.left_out.items()},
            "by_tag": dict(Counter(r["tag"] for r in self.train).most_common()),
        }


def _utc(stamp: datetime) -> datetime:
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def store_rows(engine: sa.Engine) -> tuple[list[dict], list[dict]]:
    """Every review with its item (None fields when the item is gone), oldest first, and the
    unreviewed items that carry an author tag."""
    query = (
        sa.select(
            reviews.c.id.label("review_id"),
            reviews.c.item_id,
            reviews.c.tag,
            reviews.c.reviewer,
            reviews.c.written_by,
            reviews.c.created_at,
            items.c.id.label("found"),
            items.c.title,
            items.c.description,
            items.c.audit,
            items.c.model_tag,
            items.c.author_tag,
            items.c.scores,
            items.c.reason,
        )
        .select_from(reviews.outerjoin(items, items.c.id == reviews.c.item_id))
        .order_by(reviews.c.id)
    )
    reviewed = sa.select(reviews.c.item_id)
    authored = (
        sa.select(
            items.c.id.label("item_id"),
            items.c.title,
            items.c.description,
            items.c.author_tag,
            items.c.model_tag,
            items.c.created_at,
        )
        .where(items.c.author_tag.is_not(None), items.c.id.not_in(reviewed))
        .order_by(items.c.id)
    )
    with engine.connect() as conn:
        revs = [dict(r._mapping) for r in conn.execute(query)]
        auth = [dict(r._mapping) for r in conn.execute(authored)]
    for r in revs + auth:
        r["created_at"] = _utc(r["created_at"])
    return revs, auth


def two_proportion_p(k1: int, n1: int, k2: int, n2: int) -> float:
    """One-sided p-value that proportion 1 is below proportion 2 (pooled z-test)."""
    if n1 == 0 or n2 == 0:
        return 1.0
    p = (k1 + k2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    z = (k1 / n1 - k2 / n2) / se
    return 0.5 * math.erfc(-z / math.sqrt(2))


def chi2_sf(x: float, dof: int) -> float:
    """Survival function of the chi-square distribution (regularised upper gamma, series)."""
    if x <= 0:
        return 1.0
    a, y = dof / 2.0, x / 2.0
    # lower regularised gamma by its series; fine for the small dof used here
    term = total = 1.0 / a
    k = 1
    while term > 1e-12 * total and k < 10_000:
        term *= y / (a + k)
        total += term
        k += 1
    lower = math.exp(-y + a * math.log(y) - math.lgamma(a)) * total
    return max(0.0, min(1.0, 1.0 - lower))


def _top(scores) -> str | None:
    """The serving model's top answer (its tag is the fallback when it sent the item to
    review, so the tag alone says nothing about what it thought)."""
    if isinstance(scores, str):
        scores = json.loads(scores)
    return max(scores, key=scores.get) if isinstance(scores, dict) and scores else None


def batch_names(row: dict) -> tuple[str, str]:
    who = row.get("reviewer") or row.get("written_by") or "unknown"
    day = row["created_at"].strftime("%Y-%m-%d")
    return f"reviewer:{who}@{day}", f"day:{day}"


def find_poisoned(gold: Sequence[dict], s: LabelSettings) -> tuple[dict[str, dict], list[dict]]:
    """Batches whose agreement with each label's witness is far below what the other batches
    lead one to expect.

    The witness is the author's tag where there is one (authors are right most of the time and
    independent of the reviewers), else the serving model's top answer. The two witnesses agree
    with clean labels at different rates, so a batch's expected agreement is the sum, over its
    labels, of the rate the *other* batches show for that label's kind of witness; observed below
    expected by `batch_drop` (a share of the batch) with a one-sided normal test under `batch_p`
    quarantines it. First tried with the model's answer alone: on the review queue's unsure items
    it agrees with clean labels only ~60% of the time, too little to tell a shuffled reviewer's
    day from chance (docs/cycle.md)."""
    groups: dict[str, list[tuple[str, bool]]] = defaultdict(list)
    for r in gold:
        kind = "author" if r.get("author_tag") else "model" if r.get("model_top") else None
        if kind is None:
            continue
        witness = r["author_tag"] if kind == "author" else r["model_top"]
        for name in batch_names(r):
            groups[name].append((kind, r["tag"] == witness))
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # kind -> [agree, n], day batches
    for name, rows in groups.items():
        if name.startswith("day:"):
            for kind, ok in rows:
                totals[kind][0] += ok
                totals[kind][1] += 1
    out, table = {}, []
    for name, rows in sorted(groups.items()):
        n, k = len(rows), sum(ok for _, ok in rows)
        mine = Counter(kind for kind, _ in rows)
        mine_ok = Counter(kind for kind, ok in rows if ok)
        expected = var = 0.0
        for kind, m in mine.items():
            rest_k, rest_n = totals[kind][0] - mine_ok[kind], totals[kind][1] - m
            rate = rest_k / rest_n if rest_n else None
            if rate is None:
                expected = None
                break
            expected += m * rate
            var += m * rate * (1 - rate)
        if expected is None:
            p, drop = 1.0, 0.0
        elif var <= 0:  # the other batches always agree: any miss is a deviation
            p, drop = (0.0 if k < expected else 1.0), (expected - k) / n
        else:
            p = 0.5 * math.erfc(-((k - expected) / math.sqrt(var)) / math.sqrt(2))
            drop = (expected - k) / n
        row = {
            "batch": name,
            "labels": n,
            "agreement": round(k / n, 4) if n else None,
            "expected": round(expected / n, 4) if expected else None,
            "p_value": p,
        }
        table.append(row)
        if n >= s.min_batch and drop >= s.batch_drop and p < s.batch_p:
            out[name] = row
    return out, table


def author_agreement(gold: Sequence[dict], s: LabelSettings) -> tuple[float | None, int]:
    """Share of reviewed items whose author tag the reviewer kept (None: too few to say)."""
    both = [r for r in gold if r.get("author_tag")]
    if len(both) < s.min_author_overlap:
        return None, len(both)
    return sum(r["author_tag"] == r["tag"] for r in both) / len(both), len(both)


def collect(
    engine: sa.Engine,
    approved: Sequence[str],
    *,
    held_out_keys: Iterable[str] = (),
    seen_review_id: int = 0,
    released: Iterable[str] = (),
    settings: LabelSettings | None = None,
) -> CycleLabels:
    """This cycle's labels from the store (see the module docstring). `held_out_keys`: the
    dedup keys of the test split and fresh set; `seen_review_id`: the newest review the previous
    cycle read (what is newer is "new"); `released`: batches a person let through."""
    s = settings or LabelSettings()
    approved = set(approved)
    held = set(held_out_keys)
    released = set(released)
    revs, authored = store_rows(engine)
    out = CycleLabels()
    latest: dict[int, dict] = {}
    for r in revs:  # latest review per item wins
        if r["found"] is None:
            out.left_out.setdefault("item_gone", []).append(int(r["item_id"]))
            continue
        latest[int(r["item_id"])] = r
    gold = []
    for item_id, r in sorted(latest.items(), key=lambda kv: kv[1]["review_id"]):
        if r["tag"] not in approved:
            out.left_out.setdefault("tag_not_approved", []).append(item_id)
            continue
        text = item_text(r["title"], r["description"])
        if dedup_key(f"{r['title']} {r['description'] or ''}") in held:
            out.left_out.setdefault("repeats_test_or_fresh", []).append(item_id)
            continue
        gold.append(
            {
                "item_id": item_id,
                "review_id": int(r["review_id"]),
                "text": text,
                "tag": r["tag"],
                "weight": 1.0,
                "source": "audit" if r["audit"] else "review",
                "reviewer": r["reviewer"] or r["written_by"],
                "created_at": r["created_at"],
                "model_tag": r["model_tag"],
                "model_top": _top(r["scores"]),
                "author_tag": r["author_tag"],
                "scores": r["scores"],
                "reason": r["reason"],
            }
        )
    out.new_gold = sum(r["review_id"] > seen_review_id for r in gold)
    out.max_review_id = max([int(r["review_id"]) for r in revs] + [0])
    poisoned, out.batches = find_poisoned(gold, s)
    out.quarantined = {k: v for k, v in poisoned.items() if k not in released}
    clean = [r for r in gold if not set(batch_names(r)) & set(out.quarantined)]
    if len(out.quarantined) and len(clean) < len(gold):
        out.left_out["quarantined"] = [r["item_id"] for r in gold if r not in clean]
    out.recent = clean[-s.recent :] if len(clean) > s.recent else []
    out.train = clean[: len(clean) - len(out.recent)] if out.recent else []
    out.author_weight, out.author_overlap = author_agreement(clean, s)
    if out.author_weight is not None:
        for r in authored:
            if r["author_tag"] not in approved:
                out.left_out.setdefault("tag_not_approved", []).append(int(r["item_id"]))
                continue
            if dedup_key(f"{r['title']} {r['description'] or ''}") in held:
                out.left_out.setdefault("repeats_test_or_fresh", []).append(int(r["item_id"]))
                continue
            out.weak.append(
                {
                    "item_id": int(r["item_id"]),
                    "text": item_text(r["title"], r["description"]),
                    "tag": r["author_tag"],
                    "weight": round(out.author_weight, 4),
                    "source": "author",
                    "created_at": r["created_at"],
                }
            )
    return out


def label_gates(labels: CycleLabels, earlier_tags: Sequence[str], s: LabelSettings) -> list[dict]:
    """The gates on the label data itself, run before any training: one reviewer supplying
    most of the new labels, and a shift in the tag distribution against the labels of earlier
    cycles. Each returns a gate row (mltagger.cycle.gates.gate)."""
    new = [*labels.train, *labels.recent]
    new = new[-max(labels.new_gold, 0) :] if labels.new_gold else []
    rows = []
    by_reviewer = Counter(r["reviewer"] or "unknown" for r in new)
    if len(new) < s.min_share_labels:
        rows.append(
            gate("labels.one_reviewer", None, f"{len(new)} new labels (< {s.min_share_labels})")
        )
    else:
        who, n = by_reviewer.most_common(1)[0]
        share = n / len(new)
        rows.append(
            gate(
                "labels.one_reviewer",
                share <= s.max_reviewer_share,
                f"{who} gave {share:.0%} of {len(new)} new labels (max {s.max_reviewer_share:.0%})",
                figure=share,
            )
        )
    tags = sorted({*earlier_tags, *(r["tag"] for r in new)})
    if len(new) < s.min_share_labels or len(earlier_tags) < s.min_share_labels:
        rows.append(
            gate(
                "labels.distribution_shift",
                None,
                f"{len(new)} new and {len(earlier_tags)} earlier labels "
                f"(each needs {s.min_share_labels})",
            )
        )
    else:
        a, b = Counter(r["tag"] for r in new), Counter(earlier_tags)
        na, nb = len(new), len(earlier_tags)
        tv = 0.5 * sum(abs(a[t] / na - b[t] / nb) for t in tags)
        chi = 0.0
        for t in tags:
            for cnt, n in ((a[t], na), (b[t], nb)):
                expected = (a[t] + b[t]) * n / (na + nb)
                chi += (cnt - expected) ** 2 / expected if expected else 0.0
        p = chi2_sf(chi, len(tags) - 1)
        rows.append(
            gate(
                "labels.distribution_shift",
                not (tv > s.max_shift and p < s.shift_p),
                f"total variation {tv:.2f} between {na} new and {nb} earlier labels "
                f"(p {p:.1e}; trips above {s.max_shift} at p < {s.shift_p})",
                figure=tv,
            )
        )
    return rows
