"""The fresh evaluation set: 2023-2026 items, never trained on, judged beside the test split.

The test split is 2020 content from the same platform as the training data, and its small tags
hold 5-10 items; it cannot say how the model does on what the stream carries today. The fresh
set (`data/eval/fresh.json`, provenance in `data/SOURCE.md`) is labelled by reading each item,
cites a checkable reference per item, and is checked here before any figure is computed on it:
the usual row checks plus its own fields, and no item may be an exact or near copy of a training
source (an item the model has seen measures nothing).

A bad file stops with every bad row listed (DataError; `mltagger validate --fresh` exits 1).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mltagger.core.errors import DataError
from mltagger.core.paths import resolve_path
from mltagger.data.duplicates import dedup_key, near_duplicate_groups
from mltagger.data.validation import (
    RawRow,
    RowProblem,
    parse_date,
    parse_id,
    read_rows,
    validate_rows,
    verify_checksum,
)

FRESH_FIELDS = ("id", "created_on", "title", "description", "tag", "kind", "reference")
KINDS = (
    "paper",
    "library",
    "post",
    "tutorial",
    "talk",
    "course",
    "dataset",
    "model",
    "news",
    "spam",
)
FIRST_YEAR, LAST_YEAR = 2023, 2026


@dataclass
class FreshReport:
    """The checked fresh set: valid items, and every problem found (all rows, not the first)."""

    source: str
    n_rows: int
    items: list[dict] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_if_bad(self, path: str | Path, validate_option: str) -> None:
        """One line for a file that failed its checks: how many rows, the first problem, and
        the `mltagger validate` call that lists them all."""
        if self.ok:
            return
        bad_rows = len({p.row for p in self.problems})
        raise DataError(
            f"{path}: {bad_rows} of {self.n_rows} rows are invalid, first {self.problems[0]} "
            f"(`mltagger validate {validate_option} {path}` lists them all)"
        )

    def format(self, max_problems: int = 500) -> str:
        bad_rows = len({p.row for p in self.problems})
        lines = [
            f"{self.source}: {bad_rows} of {self.n_rows} rows are invalid"
            if self.problems
            else f"{self.source}: all {self.n_rows} rows are valid"
        ]
        lines += [f"  {p}" for p in self.problems[:max_problems]]
        if len(self.problems) > max_problems:
            lines.append(f"  ... and {len(self.problems) - max_problems} more problems")
        if self.items:
            lines.append("  " + describe(self.items))
        return "\n".join(lines)


def describe(items: Sequence[dict]) -> str:
    """One line: counts per tag, libraries, non-ML items."""
    tags = Counter(it["tag"] for it in items)
    libs = sum(1 for it in items if it.get("kind") == "library")
    non_ml = sum(1 for it in items if it.get("non_ml"))
    per_tag = ", ".join(f"{t} {n}" for t, n in sorted(tags.items()))
    return f"{len(items)} items ({per_tag}); libraries {libs}; not ML at all {non_ml}"


def _extra_problems(raw: RawRow, item_id: Any) -> list[RowProblem]:
    """The fresh set's own fields: kind, reference, a 2023-2026 date, optional note/non_ml."""

    data, out = raw.data, []

    def bad(name: str, message: str) -> None:
        out.append(RowProblem(raw.number, item_id, name, message))

    if not isinstance(data, dict):
        return out
    kind = data.get("kind")
    if kind in (None, ""):
        bad("kind", "missing")
    elif kind not in KINDS:
        bad("kind", f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    ref = data.get("reference")
    if ref in (None, ""):
        bad("reference", "missing (a package==version, arXiv id, venue and year, or site)")
    elif not isinstance(ref, str):
        bad("reference", "must be a string")
    created = data.get("created_on")
    when = parse_date(created) if isinstance(created, str) else None
    if when is not None and not FIRST_YEAR <= when.year <= LAST_YEAR:
        bad("created_on", f"{created!r} is outside {FIRST_YEAR}-{LAST_YEAR}")
    for name, kind_ in (("note", str), ("non_ml", bool), ("second_label", str)):
        if name in data and not isinstance(data[name], kind_):
            bad(name, f"must be a {kind_.__name__}")
    return out


def overlaps(
    fresh: Sequence[dict],
    training: Sequence[dict],
    threshold: float = 0.7,
    same_title_min_chars: int = 12,
) -> dict[Any, dict]:
    """Fresh items that are exact or near copies of a training item: {fresh id: match}.

    Same measures as the split's near-duplicate grouping (mltagger.data.duplicates): TF-IDF
    cosine of the normalised title + description at or above `threshold`, or the same normalised
    title when it is long enough to be specific; exact = same normalised title + description.
    """
    if not fresh or not training:
        return {}
    from sklearn.feature_extraction.text import TfidfVectorizer

    fkeys = [dedup_key(it["text"]) for it in fresh]
    tkeys = [dedup_key(it["text"]) for it in training]
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(fkeys + tkeys)
    sims = (vec.transform(fkeys) @ vec.transform(tkeys).T).toarray()
    exact = {k: i for i, k in enumerate(tkeys)}
    titles: dict[str, int] = {}
    for i, it in enumerate(training):
        t = dedup_key(it["title"])
        if len(t) >= same_title_min_chars:
            titles.setdefault(t, i)
    out: dict[Any, dict] = {}
    for i, it in enumerate(fresh):
        j, how = None, ""
        title = dedup_key(it["title"])
        if fkeys[i] in exact:
            j, how = exact[fkeys[i]], "exact copy"
        elif len(title) >= same_title_min_chars and title in titles:
            j, how = titles[title], "same title"
        elif sims.shape[1] and sims[i].max() >= threshold:
            j = int(sims[i].argmax())
            how = f"near copy (cosine {sims[i, j]:.2f})"
        if j is not None:
            out[it["id"]] = {"training_id": training[j]["id"], "how": how}
    return out


def check_fresh(
    path: str | Path,
    tags: Sequence[str],
    training: Sequence[dict] = (),
    *,
    near_threshold: float = 0.7,
    same_title_min_chars: int = 12,
) -> FreshReport:
    """Every check on a fresh-set file; the report lists all problems of all rows."""
    rows = read_rows(path)
    base = validate_rows(rows, tags, labeled=True, source=str(path))
    report = FreshReport(source=str(path), n_rows=len(rows))
    report.problems.extend(base.problems)
    for raw in rows:
        data = raw.data if isinstance(raw.data, dict) else {}
        report.problems.extend(_extra_problems(raw, data.get("id")))
    # The first row of each id: a repeated id's later rows are the invalid ones.
    by_id: dict = {}
    for raw in rows:
        if isinstance(raw.data, dict):
            by_id.setdefault(parse_id(raw.data.get("id")), raw)
    bad_rows = {p.row for p in report.problems}
    valid = []
    for it in base.items:
        raw = by_id[it["id"]]
        if raw.number in bad_rows:
            continue
        d = raw.data
        valid.append(
            {
                **it,
                "kind": d["kind"],
                "reference": d["reference"],
                "note": d.get("note", ""),
                "non_ml": bool(d.get("non_ml", False)),
                "source": "fresh",
            }
        )
    for fid, match in overlaps(valid, training, near_threshold, same_title_min_chars).items():
        raw = by_id[fid]
        report.problems.append(
            RowProblem(
                raw.number,
                fid,
                "title",
                f"{match['how']} of training item {match['training_id']}: "
                "a fresh item must be new to the model",
            )
        )

    # Within the set too: two entries about the same thing would count one item twice.
    for group in near_duplicate_groups(valid, near_threshold, same_title_min_chars):
        for fid in group[1:]:
            report.problems.append(
                RowProblem(
                    by_id[fid].number,
                    fid,
                    "title",
                    f"near copy of fresh item {group[0]}: each item must be counted once",
                )
            )
    bad_rows = {p.row for p in report.problems}
    report.items = [it for it in valid if by_id[it["id"]].number not in bad_rows]
    report.problems.sort(key=lambda p: (p.row, p.field))
    return report


def load_fresh(
    fresh_cfg: Any,
    root_dir: str | Path | None,
    training: Sequence[dict],
    tags: Sequence[str],
    near_cfg: Any = None,
) -> tuple[list[dict], dict]:
    """The checked fresh items and a manifest entry (path, sha256, counts); DataError if bad."""
    path = resolve_path(fresh_cfg.path, root_dir)
    if not path.exists():
        raise DataError(f"fresh evaluation set {path} not found (data.fresh.path)")
    sha = verify_checksum(path, fresh_cfg.get("sha256"))
    report = check_fresh(
        path,
        tags,
        training,
        near_threshold=float(near_cfg.threshold) if near_cfg is not None else 0.7,
        same_title_min_chars=int(near_cfg.same_title_min_chars) if near_cfg is not None else 12,
    )
    if not report.ok:
        raise DataError(report.format())
    manifest = {
        "path": str(fresh_cfg.path),
        "sha256": sha,
        "rows": report.n_rows,
        "counts": dict(sorted(Counter(it["tag"] for it in report.items).items())),
    }
    return report.items, manifest
