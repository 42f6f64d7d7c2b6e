"""The hourly batch job: `mltagger ingest DROP.jsonl` (or .csv/.json) from the discovery pipeline.

Every row ends somewhere: stored (tagged), stored but held as a likely near duplicate (status
`duplicate`, `duplicate_of` set, in the review queue), skipped as an exact copy (the same text or
link as a stored item or an earlier row: the content already is in the store), or written to the
rejects file with its problems. Nothing is dropped on a guess: `dedup.on_duplicate=reject` applies
to POST /items only. Running the job twice on one file adds nothing the second time.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tqdm.auto import tqdm

from mltagger.data.validation import load_items, sha256_file
from mltagger.serving.service import OUTCOMES, Tagger, prepare


def default_rejects_path(path: Path) -> Path:
    return path.with_name(path.stem + ".rejects.jsonl")


def ingest_file(
    tagger: Tagger,
    path: str | Path,
    *,
    rejects: str | Path | None = None,
    chunk_size: int = 64,
    progress: bool = True,
) -> dict:
    """Validate, screen, tag and store one drop; returns the summary (also stored in the DB)."""

    path = Path(path)
    sha = sha256_file(path) if path.is_file() else None
    report = load_items(path, tagger.predictor.inference.approved_tags, labeled=False)
    rejects_path = None
    if report.rejected:
        rejects_path = report.write_rejects(rejects or default_rejects_path(path))
    seen_before = tagger.store.ingest_history(sha) if sha else []
    stored_tags: Counter = Counter()
    dup_kinds: Counter = Counter()
    outcomes: Counter = Counter({o: 0 for o in OUTCOMES})
    needs_review = stored = 0
    # A drop's `tag` is the one its author chose (the platform's field); `author_tag` says so too.
    items = [
        prepare(
            it["title"], it["description"], it.get("url"), it.get("author_tag") or it.get("tag")
        )
        for it in report.items
    ]
    bar = tqdm(total=len(items), desc=f"ingest {path.name}", unit="item", disable=not progress)
    for start in range(0, len(items), chunk_size):
        chunk = items[start : start + chunk_size]
        for out in tagger.add(chunk, source=f"ingest:{path.name}", written_by="cli"):
            outcomes[out.outcome] += 1
            if out.duplicate is not None:
                how = f"_{out.duplicate.how}" if out.duplicate.how else ""
                dup_kinds[out.duplicate.kind + how] += 1
            if out.stored:
                stored += 1
                stored_tags[out.prediction["tag"]] += 1
                needs_review += bool(out.prediction["needs_review"])
        bar.update(len(chunk))
    bar.close()
    tagger.wait_for_shadow()  # a batch job ends when the candidate's answers are stored too
    summary = {
        "file": str(path),
        "sha256": sha,
        "rows": report.n_rows,
        "valid": len(items),
        "rejected": len(report.rejected),
        "rejects_file": str(rejects_path) if rejects_path else None,
        "stored": stored,
        "outcomes": dict(outcomes),
        "duplicates_skipped": outcomes["skipped_exact_copy"],
        "duplicates_stored_held": outcomes["stored_held_duplicate"],
        "duplicates_by_kind": dict(dup_kinds),
        "needs_review": needs_review,
        "stored_by_tag": dict(stored_tags.most_common()),
        "previous_runs_of_this_file": len(seen_before),
    }
    tagger.store.record_ingest(str(path), sha or "", summary)
    return summary


def format_summary(s: dict) -> str:
    lines = [
        f"{s['file']}: {s['rows']} rows, {s['valid']} valid, {s['rejected']} rejected"
        + (f" (-> {s['rejects_file']})" if s["rejects_file"] else ""),
        f"  stored {s['stored']} (needs_review {s['needs_review']}), of which held as likely "
        f"duplicates {s['duplicates_stored_held']}; exact copies skipped "
        f"{s['duplicates_skipped']}",
    ]
    if s["duplicates_by_kind"]:
        lines.append(
            "  duplicates by kind: "
            + ", ".join(f"{k} {v}" for k, v in sorted(s["duplicates_by_kind"].items()))
        )
    for tag, n in s["stored_by_tag"].items():
        lines.append(f"  {tag:<28} {n}")
    if s["previous_runs_of_this_file"]:
        lines.append(
            f"  this file was ingested {s['previous_runs_of_this_file']} time(s) before; "
            "its items were already stored"
        )
    return "\n".join(lines)
