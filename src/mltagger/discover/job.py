"""`mltagger discover`: the subjects piling up in `other` and in review, as tag proposals.

Reads the model-tagged items of a window of the store (created in the last `discover.days`
days, or since `--since`) whose tag is `other` (the model's, the review fallback's or a
reviewer's) or that still wait for review, and leaves out held-back duplicates. They are embedded
with the base sentence encoder, clustered (`clusters`), named by class-based TF-IDF keywords
(`keywords`) and ranked by size and growth (`proposals`). Writes runs/discover/<time>/
proposals.json and report.md, and stores the proposals as `open` in the store's proposals table
(the health page shows them; an admin accepts one as a `pending` tag, never this job).

A window with fewer than `discover.min_items` such items says so in one line and exits 0,
writing nothing: clusters of a handful of items would be noise presented as a trend.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

from mltagger.core.config import compose_config
from mltagger.core.errors import UserError, user_errors
from mltagger.core.paths import resolve_path
from mltagger.data.text import item_text
from mltagger.discover.clusters import ClusterParams, cluster
from mltagger.discover.keywords import class_tfidf
from mltagger.discover.proposals import Window, build_proposals, growth, markdown_report
from mltagger.models.encoder import Embedder, sentence_embedder
from mltagger.serving.store import Store
from mltagger.serving.tag_proposals import add_proposals, list_proposals

FALLBACK = "other"


def parse_when(text: str, what: str) -> datetime:
    """A date or datetime given on the command line, as an aware UTC datetime (naive = UTC)."""
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"{what} {text!r} is not a date (YYYY-MM-DD or an ISO datetime)") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def window_of(
    days: float, since: str | None = None, until: str | None = None, now: datetime | None = None
) -> Window:
    """[since or until - days, until or now)."""
    end = parse_when(until, "--until") if until else (now or datetime.now(timezone.utc))
    start = parse_when(since, "--since") if since else end - timedelta(days=float(days))
    if start >= end:
        raise UserError(f"the window is empty: {start.isoformat()} is not before {end.isoformat()}")
    return Window(start, end)


def asks_for_a_tag(row: dict) -> bool:
    """An item the approved list may not cover: tagged `other`, or still waiting for review."""
    return row["status"] != "duplicate" and (row["tag"] == FALLBACK or bool(row["needs_review"]))


def window_rows(store: Store, window: Window) -> list[dict]:
    """The window's candidate items, oldest first, `created_at` as an aware datetime."""
    out = []
    for r in store.monitor_rows(since=window.start):
        created = parse_when(r["created_at"], "created_at")
        if created < window.end and asks_for_a_tag(r):
            out.append({**r, "created_at": created})
    return out


def discover(rows: Sequence[dict], window: Window, d, embed: Embedder) -> tuple[list[dict], dict]:
    """Proposals of the window's rows and the summary the report opens with (`d`: the
    `discover` config node)."""
    texts = [item_text(r["title"], r.get("description") or "") for r in rows]
    x = embed(texts)
    params = ClusterParams.from_config(d.cluster)
    labels = cluster(x, params)
    keywords = class_tfidf(texts, labels, top_k=int(d.keywords))
    proposals = build_proposals(rows, labels, x, keywords, window, n_examples=int(d.examples))
    summary = {
        "window": window.as_dict(),
        "items": len(rows),
        "clustered": int((labels >= 0).sum()),
        "noise": int((labels < 0).sum()),
        "window_growth": round(growth([r["created_at"] for r in rows], window), 4),
        "params": params.as_dict(),
        "encoder": str(d.encoder),
    }
    return proposals, summary


def run(
    cfg,
    *,
    days: float | None = None,
    since: str | None = None,
    until: str | None = None,
    output: str | None = None,
    embed: Embedder | None = None,
) -> int:
    """The job behind `mltagger discover`; `embed` replaces the configured encoder (tests)."""
    d = cfg.discover
    window = window_of(days if days is not None else float(d.days), since, until)
    store = Store(str(cfg.store.url))
    try:
        rows = window_rows(store, window)
    finally:
        store.close()
    need = int(d.min_items)
    if len(rows) < need:
        print(f"{len(rows)} items tagged {FALLBACK} or waiting for review between "
              f"{window.start:%Y-%m-%d %H:%M} and {window.end:%Y-%m-%d %H:%M}; discover needs at "
              f"least {need} (discover.min_items): nothing written")  # fmt: skip
        return 0
    embed = embed or sentence_embedder(str(d.encoder), max_length=int(d.max_length))
    proposals, summary = discover(rows, window, d, embed)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    out = Path(output) if output else resolve_path(f"runs/discover/{stamp}", cfg.paths.root_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "proposals.json").write_text(json.dumps(proposals, indent=1) + "\n")
    (out / "report.md").write_text(markdown_report(proposals, summary))
    print(f"{summary['items']} items, {len(proposals)} proposals "
          f"({summary['noise']} items in no cluster)")  # fmt: skip
    for p in proposals[:10]:
        print(f"  {p['name']}: {p['size']} items, growth {p['growth']:+.2f}")
    print(f"proposals: {out / 'proposals.json'}")
    stored, skipped = store_proposals(str(cfg.store.url), proposals)
    print(f"stored {len(stored)} as open proposals on the health page (/ui/health)"
          + (f", {skipped} already open under the same name" if skipped else "")
          + "; nothing is added to the tag list until an admin accepts one")  # fmt: skip
    return 0


def store_proposals(url: str, proposals: Sequence[dict]) -> tuple[list[int], int]:
    """Put the proposals in the store's proposals table, skipping names already open there (a
    rerun over an overlapping window must not list a subject twice). Never touches the list."""
    store = Store(url)
    try:
        open_names = {p["name"] for p in list_proposals(store.engine, limit=10_000)}
        new = [p for p in proposals if p["name"] not in open_names]
        return add_proposals(store.engine, new), len(proposals) - len(new)
    finally:
        store.close()


def main(argv: Sequence[str] | None = None) -> int:
    """`mltagger discover [--days D | --since DATE] [--until DATE] [overrides]`."""
    p = argparse.ArgumentParser(prog="mltagger discover", description=__doc__.split("\n")[0])
    p.add_argument("--days", type=float, help="the window: the last D days (default discover.days)")
    p.add_argument("--since", help="instead: from this date (YYYY-MM-DD or ISO datetime, UTC)")
    p.add_argument("--until", help="the window's end (default now)")
    p.add_argument("--output", help="run folder (default runs/discover/<time>)")
    p.add_argument(
        "overrides", nargs="*", help="config overrides, e.g. store.url=... discover.min_items=50"
    )
    args = p.parse_args(argv)
    with user_errors():
        if args.days is not None and args.since:
            raise UserError("give --days or --since, not both")
        if args.days is not None and args.days <= 0:
            raise UserError(f"--days must be positive, got {args.days:g}")
        cfg = compose_config("discover", args.overrides)
        ClusterParams.from_config(cfg.discover.cluster)
        return run(cfg, days=args.days, since=args.since, until=args.until, output=args.output)
