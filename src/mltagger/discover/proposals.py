"""Clusters become proposals: size, growth, rank, examples, a name, and the report.

Growth compares the two halves of the window: (items created in the later half - items created in
the earlier half) / the cluster's size, so it lies in [-1, 1]: 1 = every item arrived in the
later half, 0 = as many in each, -1 = none lately. The window's own growth (all its items) is
reported beside it, since a stream that doubled its volume lifts every cluster.

Rank: by the items a cluster received in the later half of the window, which is
size x (1 + growth) / 2, so a large cluster and a fast-growing one both rise; ties go to the
larger cluster. A proposal is a suggestion for the approved list (the store's proposals table,
one click for an admin), never a tag applied by itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from mltagger.discover.keywords import kebab_name

# The exact keys of a proposal, in order (the store's proposals table reads these).
PROPOSAL_KEYS = ("name", "keywords", "size", "growth", "examples", "window")


@dataclass(frozen=True)
class Window:
    """The stretch of the stream that was clustered: [start, end) as aware datetimes."""

    start: datetime
    end: datetime

    @property
    def middle(self) -> datetime:
        return self.start + (self.end - self.start) / 2

    def as_dict(self) -> dict:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def growth(created: Sequence[datetime], window: Window) -> float:
    """(later-half items - earlier-half items) / items, in [-1, 1]; 0.0 for no items."""
    if not created:
        return 0.0
    later = sum(1 for c in created if c >= window.middle)
    return (2 * later - len(created)) / len(created)


def examples(embeddings: np.ndarray, rows: Sequence[dict], n: int) -> list[dict]:
    """The `n` items nearest the cluster's mean (its most typical), as {"id", "title"}."""
    x = np.asarray(embeddings, dtype=np.float64)
    centre = x.mean(axis=0)
    order = np.argsort(-(x @ centre), kind="stable")[:n]
    return [{"id": int(rows[i]["id"]), "title": str(rows[i]["title"])} for i in order]


def build_proposals(
    rows: Sequence[dict],
    labels: np.ndarray,
    embeddings: np.ndarray,
    keywords: dict[int, list[str]],
    window: Window,
    *,
    n_examples: int = 5,
) -> list[dict]:
    """One proposal per cluster (noise, -1, is none), best ranked first. `rows` carry `id`,
    `title` and `created_at` (an aware datetime), aligned with `labels` and `embeddings`."""
    labels = np.asarray(labels)
    out = []
    for k in sorted({int(v) for v in labels if v >= 0}):
        idx = np.nonzero(labels == k)[0]
        members = [rows[i] for i in idx]
        kws = keywords.get(k, [])
        out.append(
            {
                "name": kebab_name(kws),
                "keywords": list(kws),
                "size": len(idx),
                "growth": round(growth([r["created_at"] for r in members], window), 4),
                "examples": examples(embeddings[idx], members, n_examples),
                "window": window.as_dict(),
            }
        )
    return rank(out)


def rank(proposals: list[dict]) -> list[dict]:
    """Best first: most items in the later half (size x (1 + growth) / 2), then larger, then by
    name so the order is stable."""
    return sorted(
        proposals,
        key=lambda p: (-round(p["size"] * (1 + p["growth"]) / 2, 6), -p["size"], p["name"]),
    )


def markdown_report(proposals: Sequence[dict], summary: dict) -> str:
    """The human-readable companion of proposals.json."""
    w = summary["window"]
    lines = [
        "# Tags the stream asks for (`mltagger discover`)",
        "",
        f"Window {w['start']} .. {w['end']}: {summary['items']} items tagged `other` or waiting "
        f"for review; {summary['clustered']} fell into {len(proposals)} clusters, "
        f"{summary['noise']} into none. The window's own growth: {summary['window_growth']:+.2f}.",
        "",
        f"Clustering: `{summary['params']}`; encoder `{summary['encoder']}`.",
        "",
        "| rank | name | size | growth | keywords |",
        "|---:|---|---:|---:|---|",
    ]
    for i, p in enumerate(proposals, 1):
        kws = ", ".join(p["keywords"][:6])
        lines.append(f"| {i} | {p['name']} | {p['size']} | {p['growth']:+.2f} | {kws} |")
    for i, p in enumerate(proposals, 1):
        lines += ["", f"## {i}. {p['name']}", ""]
        lines += [f"- #{e['id']} {e['title']}" for e in p["examples"]]
    return "\n".join(lines) + "\n"
