"""Items in, clean splits out: loading, validation, cleaning, de-duplication and splitting.

Everything downstream (baselines, training, evaluation, serving) receives items that went through
this module, so a bad row is caught once, here, with a message a person can act on. Nothing is
dropped silently: invalid rows either stop the job or land in a rejects file, and removed
duplicates are listed in the split manifest.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mltagger.paths import resolve_path

FIELDS = ("id", "created_on", "title", "description", "tag")
DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d")
SUPPORTED_SUFFIXES = (".json", ".jsonl", ".csv")
SPLITS = ("train", "val", "test")


class DataError(Exception):
    """A problem with the user's data or data config; the CLI prints it without a traceback."""


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawRow:
    """One row as read from a file, before validation. `number` is 1-based within the file."""

    number: int
    data: Any
    error: str | None = None


def read_rows(path: str | Path) -> list[RawRow]:
    """Read JSON (a list of objects), JSONL or CSV into raw rows with their row numbers.

    File-level problems (missing file, unknown format, broken JSON list) raise DataError; a broken
    JSONL line is a row-level problem so the other rows are still checked and reported.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a .json, .jsonl or .csv file")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(
            f"{path}: unsupported format {suffix or '(no extension)'}; "
            f"use one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err})") from None

    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of items, got {type(data).__name__}")
        return [RawRow(i, row) for i, row in enumerate(data, start=1)]

    if suffix == ".jsonl":
        rows = []
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(RawRow(i, json.loads(line)))
            except json.JSONDecodeError as err:
                # The line itself is kept, so a rejects file holds what arrived.
                rows.append(RawRow(i, line, f"invalid JSON: {err.msg}"))
        return rows

    reader = csv.DictReader(text.splitlines(keepends=True))
    if reader.fieldnames is None:
        return []
    # Row numbers are the CSV line numbers where each record ends (the header is line 1), which
    # is the line an editor shows for the usual one-line record.
    rows = []
    for record in reader:
        extra = record.pop(None, None)  # cells beyond the header
        row = RawRow(reader.line_num, record)
        if extra:
            row = RawRow(reader.line_num, record, f"{len(extra)} more cells than header columns")
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# Cleaning
# --------------------------------------------------------------------------------------------

_INVISIBLE = dict.fromkeys(map(ord, "\u200b\ufeff\u00ad"))
_WS = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Unicode-normalise (NFKC), turn every whitespace run (\\r\\n included) into one space, strip.

    NFKC folds look-alike characters (full-width letters, ligatures) so the same words tokenise the
    same way; emoji survive it. Zero-width spaces and soft hyphens are removed because they split
    words invisibly.
    """
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE)
    return _WS.sub(" ", text).strip()


def join_text(title: str, description: str) -> str:
    """The single string models read: the title, then the description."""
    if not description:
        return title
    sep = " " if title.endswith((".", "!", "?", ":")) else ". "
    return f"{title}{sep}{description}"


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowProblem:
    """What is wrong with one field of one row, worded for the person who owns the file."""

    row: int
    id: Any
    field: str
    message: str

    def __str__(self) -> str:
        ident = f" (id {self.id})" if self.id is not None else ""
        return f"row {self.row}{ident}: {self.field}: {self.message}"


@dataclass
class ValidationReport:
    """Valid items, rejected rows and every problem found, in file order."""

    source: str
    n_rows: int
    items: list[dict] = field(default_factory=list)
    rejected: list[tuple[RawRow, list[RowProblem]]] = field(default_factory=list)

    @property
    def problems(self) -> list[RowProblem]:
        return [p for _, probs in self.rejected for p in probs]

    @property
    def ok(self) -> bool:
        return not self.rejected

    def tag_counts(self) -> Counter:
        return Counter(item["tag"] for item in self.items if item.get("tag") is not None)

    def format(self, max_problems: int = 200) -> str:
        """The report a person reads: one line per problem, then a summary."""
        lines = []
        problems = self.problems
        if problems:
            lines.append(f"{self.source}: {len(self.rejected)} of {self.n_rows} rows are invalid")
            lines += [f"  {p}" for p in problems[:max_problems]]
            if len(problems) > max_problems:
                lines.append(f"  ... and {len(problems) - max_problems} more problems")
        else:
            lines.append(f"{self.source}: all {self.n_rows} rows are valid")
        lines.append(f"  valid rows: {len(self.items)}")
        counts = self.tag_counts()
        if counts:
            lines.append("  per tag:")
            width = max(map(len, counts))
            lines += [f"    {tag:<{width}}  {n}" for tag, n in counts.most_common()]
        dups = exact_duplicates(self.items)
        lines.append(f"  exact duplicates (same normalised title + description): {len(dups)}")
        return "\n".join(lines)

    def write_rejects(self, path: str | Path) -> Path:
        """Write every rejected row, with its problems, as JSONL (nothing is dropped silently)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as fh:
            for raw, probs in self.rejected:
                record = {
                    "source": self.source,
                    "row": raw.number,
                    "problems": [f"{p.field}: {p.message}" for p in probs],
                    "data": raw.data,
                }
                fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        return path


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _parse_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def parse_date(value: str) -> datetime | None:
    """Parse the platform's date formats; None when none fits."""
    value = value.strip()
    for fmt in DATE_FORMATS:
        try:
            return datetime.strptime(value, fmt)
        except ValueError:
            continue
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def validate_rows(
    rows: Sequence[RawRow],
    tags: Sequence[str],
    *,
    labeled: bool = True,
    source: str = "<rows>",
) -> ValidationReport:
    """Check every row and collect all problems, not only the first.

    labeled=True (training data): id, created_on, title, description and tag are required.
    labeled=False (items to tag): only title is required; a missing id becomes the row number.
    Valid rows come back cleaned, with the original strings kept as title_raw/description_raw.
    """
    report = ValidationReport(source=source, n_rows=len(rows))
    first_row_of_id: dict[int, int] = {}
    for raw in rows:
        item, problems = _check_row(raw, tags, labeled, first_row_of_id)
        if problems:
            report.rejected.append((raw, problems))
        else:
            report.items.append(item)
    return report


def _check_row(
    raw: RawRow, tags: Sequence[str], labeled: bool, first_row_of_id: dict[int, int]
) -> tuple[dict | None, list[RowProblem]]:
    """One row: (cleaned item, []) when valid, else (None, problems). Records its id if new."""
    problems: list[RowProblem] = []

    def bad(field_name: str, message: str, row_id: Any = None) -> None:
        problems.append(RowProblem(raw.number, row_id, field_name, message))

    data = raw.data
    if raw.error:
        bad("row", raw.error)
        return None, problems
    if not isinstance(data, dict):
        bad("row", f"expected an object with fields {', '.join(FIELDS)}, got {_type_name(data)}")
        return None, problems

    # id
    raw_id = data.get("id")
    item_id = _parse_id(raw_id)
    shown_id = item_id if item_id is not None else (raw_id if raw_id not in ("", None) else None)
    if raw_id in (None, ""):
        if labeled:
            bad("id", "missing")
        else:
            item_id = raw.number
    elif item_id is None:
        bad("id", f"must be an integer, got {raw_id!r}", shown_id)
    elif item_id in first_row_of_id:
        bad(
            "id",
            f"duplicate id {item_id} (first seen at row {first_row_of_id[item_id]})",
            shown_id,
        )
    else:
        first_row_of_id[item_id] = raw.number

    # title
    title = data.get("title")
    if title is None:
        bad("title", "missing", shown_id)
    elif not isinstance(title, str):
        bad("title", f"must be a string, got {_type_name(title)}", shown_id)
    elif not clean_text(title):
        bad("title", "empty", shown_id)

    # description (may be empty; the title alone is a valid, short item)
    description = data.get("description")
    if description is None:
        if labeled:
            bad("description", "missing", shown_id)
        description = ""
    elif not isinstance(description, str):
        bad("description", f"must be a string, got {_type_name(description)}", shown_id)

    # created_on
    created_on = data.get("created_on")
    if created_on in (None, ""):
        if labeled:
            bad("created_on", "missing", shown_id)
        created_on = None
    elif not isinstance(created_on, str):
        bad("created_on", f"must be a string, got {_type_name(created_on)}", shown_id)
    elif parse_date(created_on) is None:
        bad(
            "created_on",
            f"unparseable date {created_on!r} (expected YYYY-MM-DD HH:MM:SS)",
            shown_id,
        )

    # tag
    tag = data.get("tag")
    if tag in (None, ""):
        if labeled:
            bad("tag", "missing", shown_id)
        tag = None
    elif not isinstance(tag, str):
        bad("tag", f"must be a string, got {_type_name(tag)}", shown_id)
    elif tag.strip() not in tags:
        bad("tag", f"unknown tag {tag!r}; approved tags: {', '.join(tags)}", shown_id)
    else:
        tag = tag.strip()

    if problems:
        return None, problems
    title_clean, desc_clean = clean_text(title), clean_text(description)
    return {
        "id": item_id,
        "created_on": created_on.strip() if created_on else None,
        "title": title_clean,
        "description": desc_clean,
        "text": join_text(title_clean, desc_clean),
        "tag": tag,
        "title_raw": title,
        "description_raw": description,
    }, []


def load_items(path: str | Path, tags: Sequence[str], *, labeled: bool = True) -> ValidationReport:
    """Read and validate one file (JSON, JSONL or CSV)."""
    return validate_rows(read_rows(path), tags, labeled=labeled, source=str(path))


# --------------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------------


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(path: str | Path, expected: str | None) -> str:
    """Return the file's sha256; stop with a clear message when it differs from the config's."""
    actual = sha256_file(path)
    if expected and actual != expected:
        raise DataError(
            f"{path} was changed: its sha256 is {actual}, the data config expects {expected}. "
            "Restore the shipped file (git checkout -- <file>), or, if the change is intended, "
            "put the new sha256 in the data config so runs record which data they saw."
        )
    return actual


# --------------------------------------------------------------------------------------------
# Duplicates
# --------------------------------------------------------------------------------------------

_NON_WORD = re.compile(r"[^\w]+")


def dedup_key(text: str) -> str:
    """Case-, accent-, punctuation- and whitespace-insensitive form used to spot duplicates."""
    if text.isascii():  # the common case, and the same result: NFKD changes no ASCII text
        return _NON_WORD.sub(" ", text.lower()).strip()
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return _NON_WORD.sub(" ", text).strip()


def exact_duplicates(items: Sequence[dict]) -> list[dict]:
    """Items whose normalised title + description repeat an earlier item's (file order)."""
    first: dict[str, dict] = {}
    dups = []
    for item in items:
        key = dedup_key(item["title"] + " " + item["description"])
        if key in first:
            kept = first[key]
            dups.append(
                {
                    "id": item["id"],
                    "duplicate_of": kept["id"],
                    "tag": item.get("tag"),
                    "kept_tag": kept.get("tag"),
                }
            )
        else:
            first[key] = item
    return dups


def remove_exact_duplicates(items: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """Keep the first of each exact-duplicate set; return (kept, removed records)."""
    removed = exact_duplicates(items)
    drop = {r["id"] for r in removed}
    return [it for it in items if it["id"] not in drop], removed


def near_duplicate_groups(
    items: Sequence[dict], threshold: float = 0.8, same_title_min_chars: int = 12
) -> list[list[int]]:
    """Groups (lists of ids, size > 1) of items that are near-copies of each other.

    Two items are linked when the cosine similarity of their TF-IDF vectors (word 1-2 grams of the
    normalised text) is >= threshold, or when their normalised titles are equal and long enough to
    be specific. Groups are the connected components of those links, so a chain of edits stays in
    one group and therefore in one split.
    """
    if len(items) < 2:
        return []
    from sklearn.feature_extraction.text import TfidfVectorizer

    keys = [dedup_key(it["text"]) for it in items]
    vectors = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(keys)
    sims = (vectors @ vectors.T).tocoo()
    parent = list(range(len(items)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)

    for i, j, s in zip(sims.row, sims.col, sims.data, strict=True):
        if i < j and s >= threshold:
            union(i, j)
    by_title: dict[str, int] = {}
    for i, it in enumerate(items):
        title = dedup_key(it["title"])
        if len(title) >= same_title_min_chars:
            if title in by_title:
                union(i, by_title[title])
            else:
                by_title[title] = i

    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(items)):
        groups[find(i)].append(items[i]["id"])
    return sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: g[0])


# --------------------------------------------------------------------------------------------
# Tags
# --------------------------------------------------------------------------------------------


def fold_rare_tags(
    items: Sequence[dict], min_freq: int, fallback: str
) -> tuple[list[dict], dict[str, int]]:
    """Relabel items whose tag has fewer than min_freq examples as the fallback tag.

    A tag with a handful of examples cannot be learned or measured; folding it into `other`
    (which routes to review) is safer than a confident guess. Returns (items, {tag: count folded}).
    """
    counts = Counter(it["tag"] for it in items)
    rare = {t: n for t, n in counts.items() if t != fallback and n < min_freq}
    if not rare:
        return list(items), {}
    return [{**it, "tag": fallback} if it["tag"] in rare else it for it in items], rare


# --------------------------------------------------------------------------------------------
# Splitting
# --------------------------------------------------------------------------------------------


def group_units(
    items: Sequence[dict], groups: Iterable[Sequence[int]] = ()
) -> dict[str, list[list[int]]]:
    """Units of splitting, by tag: each near-duplicate group (ids present in items) is one unit,
    every other item is its own; a unit's tag is its most common tag. Shared by the split and by
    the cross-validation folds, so neither ever puts a near-copy on both sides."""
    by_id = {it["id"]: it for it in items}
    unit_of: dict[int, int] = {}
    units: list[list[int]] = []
    for group in groups:
        members = [i for i in group if i in by_id and i not in unit_of]
        if members:
            for i in members:
                unit_of[i] = len(units)
            units.append(sorted(members))
    for it in items:
        if it["id"] not in unit_of:
            unit_of[it["id"]] = len(units)
            units.append([it["id"]])
    units_by_tag: dict[str, list[list[int]]] = defaultdict(list)
    for unit in units:
        tag = Counter(by_id[i]["tag"] for i in unit).most_common(1)[0][0]
        units_by_tag[tag].append(unit)
    return units_by_tag


def stratified_group_split(
    items: Sequence[dict],
    *,
    val_size: float,
    test_size: float,
    seed: int,
    groups: Iterable[Sequence[int]] = (),
) -> dict[str, list[dict]]:
    """Split items into train/val/test, stratified by tag, keeping each group in one split.

    Units are the near-duplicate groups plus single items; a unit's tag is its most common tag.
    Within each tag, units are shuffled with `seed` and each goes to the split furthest below its
    target share, so small tags (28 time-series items) still get val and test examples and the
    result depends only on (items, sizes, seed, groups); each tag's assignment depends only on
    its own units.
    """
    if not 0 <= val_size < 1 or not 0 <= test_size < 1 or val_size + test_size >= 1:
        raise DataError(
            f"split sizes must be in [0, 1) and sum below 1, got val={val_size} test={test_size}"
        )
    by_id = {it["id"]: it for it in items}
    units_by_tag = group_units(items, groups)

    fractions = {"test": test_size, "val": val_size, "train": 1 - val_size - test_size}
    assignment: dict[str, list[int]] = {s: [] for s in SPLITS}
    for tag in sorted(units_by_tag):
        tag_units = sorted(units_by_tag[tag], key=lambda u: u[0])
        # One generator per tag: adding a source with a new tag (e.g. `other`) leaves the
        # split of every existing tag unchanged, so six- and seven-class runs share a test set.
        random.Random(f"{seed}:{tag}").shuffle(tag_units)
        total = sum(len(u) for u in tag_units)
        target = {s: fractions[s] * total for s in fractions}
        placed = dict.fromkeys(fractions, 0)
        for unit in tag_units:
            # test, val, train order breaks ties so tiny tags get evaluation items first.
            split = max(
                fractions,
                key=lambda s: (
                    (target[s] - placed[s]) / max(target[s], 1e-9)
                    if target[s] > 0
                    else float("-inf")
                ),
            )
            placed[split] += len(unit)
            assignment[split].extend(unit)
    return {s: sorted((by_id[i] for i in assignment[s]), key=lambda it: it["id"]) for s in SPLITS}


def split_sources_in_order(
    items: Sequence[dict],
    source_order: Sequence[str],
    *,
    val_size: float,
    test_size: float,
    seed: int,
    groups: Iterable[Sequence[int]] = (),
    train_only: Iterable[str] = (),
    dropped: list[dict] | None = None,
) -> dict[str, list[dict]]:
    """Split each source in turn, so adding a source never moves an item of an earlier one.

    Six-topic and six + `other` runs then share their topic test items exactly, which is what
    makes their figures comparable. A near-duplicate of an already placed item (across sources)
    follows it into its split, so no near-copy straddles train and test.

    Sources in `train_only` (weak sources such as the external lists) go to train whole, so the
    val and test splits - and every figure computed on them - stay those of the platform's own
    items; their near-copies of a val/test item are left out (appended to `dropped`).
    """
    groups = [list(g) for g in groups]
    train_only = set(train_only)
    placed: dict[int, str] = {}
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for name in source_order:
        src_items = [it for it in items if it.get("source", name) == name]
        src_ids = {it["id"] for it in src_items}
        follow: dict[int, str] = {}
        for g in groups:
            anchor = next((placed[i] for i in g if i in placed), None)
            if anchor is not None:
                follow.update({i: anchor for i in g if i in src_ids})
        if name in train_only:
            kept = [it for it in src_items if follow.get(it["id"], "train") == "train"]
            if dropped is not None:
                dropped += [
                    {"id": it["id"], "source": name, "near_copy_in": follow[it["id"]]}
                    for it in src_items
                    if follow.get(it["id"], "train") != "train"
                ]
            out["train"].extend(kept)
            placed.update({it["id"]: "train" for it in kept})
            continue
        rest = [it for it in src_items if it["id"] not in follow]
        rest_ids = {it["id"] for it in rest}
        src_groups = [[i for i in g if i in rest_ids] for g in groups]
        part = stratified_group_split(
            rest,
            val_size=val_size,
            test_size=test_size,
            seed=seed,
            groups=[g for g in src_groups if len(g) > 1],
        )
        for it in src_items:
            if it["id"] in follow:
                part[follow[it["id"]]].append(it)
        for split, split_items in part.items():
            out[split].extend(split_items)
            placed.update({it["id"]: split for it in split_items})
    return {s: sorted(v, key=lambda it: it["id"]) for s, v in out.items()}


# --------------------------------------------------------------------------------------------
# The whole pipeline, from a data config
# --------------------------------------------------------------------------------------------


@dataclass
class PreparedData:
    """The splits a job trains and evaluates on, and everything needed to say which data it saw."""

    splits: dict[str, list[dict]]
    tags: list[str]
    fallback_tag: str
    sources: list[dict]
    data_sha256: str
    removed_duplicates: list[dict]
    near_duplicate_groups: list[list[int]]
    folded_tags: dict[str, int]
    rejected: list[ValidationReport]
    split_config: dict
    # What the label-issue layer changed in the train split (empty: shipped labels as they are).
    label_noise: dict = field(default_factory=dict)
    # Labels a person corrected (data.reviewed_labels), applied to every split.
    reviewed_labels: dict = field(default_factory=dict)
    # The fresh evaluation set (data.fresh, mltagger.freshset): 2023-2026 items checked to be
    # new to every training source; evaluated beside test, never trained on. Empty when unset.
    fresh: list[dict] = field(default_factory=list)
    fresh_manifest: dict = field(default_factory=dict)

    def label_names(self) -> list[str]:
        """Tags that appear in training data, in the approved list's order: the model's classes."""
        present = {it["tag"] for it in self.splits["train"]}
        return [t for t in self.tags if t in present]

    def manifest(self) -> dict:
        """What goes into split.json: enough to rebuild and audit the exact split."""
        return {
            "data_sha256": self.data_sha256,
            "sources": self.sources,
            "split": self.split_config,
            "counts": {
                s: dict(sorted(Counter(it["tag"] for it in items).items()))
                for s, items in self.splits.items()
            },
            "ids": {s: [it["id"] for it in items] for s, items in self.splits.items()},
            "removed_exact_duplicates": self.removed_duplicates,
            "near_duplicate_groups": self.near_duplicate_groups,
            "folded_tags": self.folded_tags,
            "rejected_rows": sum(len(r.rejected) for r in self.rejected),
            "label_noise": self.label_noise,
            "reviewed_labels": self.reviewed_labels,
            "fresh": {**self.fresh_manifest, "ids": [it["id"] for it in self.fresh]}
            if self.fresh
            else None,
        }

    def save_manifest(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.manifest(), indent=1, ensure_ascii=False) + "\n")
        return path


def combined_sha256(sources: Sequence[dict]) -> str:
    """One hash for all sources: the file's own sha256 when there is one source."""
    if len(sources) == 1:
        return sources[0]["sha256"]
    joined = "\n".join(f"{s['name']}:{s['sha256']}" for s in sources)
    return hashlib.sha256(joined.encode()).hexdigest()


def apply_reviewed_labels(
    splits: dict[str, list[dict]], path: Path, tags: Sequence[str]
) -> tuple[dict[str, list[dict]], dict]:
    """Labels corrected by a person, applied after splitting (the split does not move).

    Each correction names the shipped tag it expects, so a correction written for other data
    fails loudly instead of silently relabelling the wrong row.
    """
    if not path.exists():
        raise DataError(f"reviewed-labels file {path} not found")
    try:
        corrections = json.loads(path.read_text())["corrections"]
    except (json.JSONDecodeError, KeyError) as err:
        raise DataError(f"{path}: not a reviewed-labels file ({err})") from None
    by_id = {c["id"]: c for c in corrections}
    seen: set = set()
    out = {}
    for name, items in splits.items():
        fixed = []
        for it in items:
            c = by_id.get(it["id"])
            if c is None:
                fixed.append(it)
                continue
            if c["tag"] != it["tag"] or c["corrected"] not in tags:
                raise DataError(
                    f"{path}: correction for id {it['id']} expects tag {c['tag']!r} -> "
                    f"{c['corrected']!r}, but the row is {it['tag']!r} (approved: {list(tags)})"
                )
            seen.add(it["id"])
            fixed.append({**it, "tag": c["corrected"], "tag_shipped": it["tag"]})
        out[name] = fixed
    missing = sorted(set(by_id) - seen)
    if missing:
        raise DataError(f"{path}: corrections for ids not in the data: {missing[:10]}")
    return out, {
        "file": str(path.name),
        "sha256": sha256_file(path),
        "corrected": len(seen),
        "by_split": {n: sum(1 for it in v if "tag_shipped" in it) for n, v in out.items()},
    }


def prepare_data(
    data_cfg: Any,
    root_dir: str | Path | None = None,
    rejects_dir: str | Path | None = None,
    *,
    apply_label_noise: bool = True,
) -> PreparedData:
    """Load every source of a data config (conf/data/*.yaml) and return de-duplicated splits.

    Stops with DataError (checksum changed, invalid rows) unless data_cfg.skip_invalid is set, in
    which case invalid rows are written to <rejects_dir>/rejects_<source>.jsonl. When the config
    has a label-issue layer (data_cfg.label_noise), its action is applied to the train split.
    """
    tags = list(data_cfg.tags)
    fallback = data_cfg.fallback_tag
    if fallback not in tags:
        raise DataError(f"fallback_tag {fallback!r} is not in the approved tags {tags}")
    items: list[dict] = []
    sources: list[dict] = []
    reports: list[ValidationReport] = []
    for src in data_cfg.sources:
        path = resolve_path(src.path, root_dir)
        if not path.exists():
            raise DataError(f"data source {src.name!r}: {path} not found")
        sha = verify_checksum(path, src.get("sha256"))
        report = load_items(path, tags, labeled=True)
        if not report.ok:
            if not data_cfg.get("skip_invalid", False):
                raise DataError(
                    report.format() + "\nFix these rows, or set data.skip_invalid=true "
                    "to drop them into a rejects file."
                )
            if rejects_dir is not None:
                report.write_rejects(Path(rejects_dir) / f"rejects_{src.name}.jsonl")
            reports.append(report)
        seen = {it["id"] for it in items}
        clash = [it["id"] for it in report.items if it["id"] in seen]
        if clash:
            raise DataError(
                f"data source {src.name!r} reuses ids of an earlier source: {clash[:10]}"
            )
        src_items = [{**it, "source": src.name} for it in report.items]
        src_items, capped = cap_per_tag(src_items, src.get("max_per_tag"), src.get("seed", 0))
        weight = float(src.get("weight", 1.0))
        if not 0.0 < weight <= 1.0:
            raise DataError(f"data source {src.name!r}: weight must be in (0, 1], got {weight}")
        if weight != 1.0:  # the loss weight of every row of this source (train split only)
            src_items = [{**it, "weight": weight} for it in src_items]
        items.extend(src_items)
        entry = {"name": src.name, "path": str(src.path), "sha256": sha, "rows": report.n_rows}
        if src.get("split", "all") not in ("all", "train"):
            raise DataError(
                f"data source {src.name!r}: split must be `all` or `train`, got {src.split!r}"
            )
        if src.get("split", "all") == "train":
            entry["split"] = "train"
        if weight != 1.0:
            entry["weight"] = weight
        if capped:
            entry["max_per_tag"] = int(src.max_per_tag)
            entry["used"] = len(src_items)
        sources.append(entry)

    fresh: list[dict] = []
    fresh_manifest: dict = {}
    if data_cfg.get("fresh") and data_cfg.fresh.get("path"):
        from mltagger.freshset import load_fresh

        # Checked against every row of every training source, before any de-duplication.
        fresh, fresh_manifest = load_fresh(
            data_cfg.fresh, root_dir, items, tags, data_cfg.get("near_duplicates")
        )
    items, folded = fold_rare_tags(items, int(data_cfg.get("min_freq", 0)), fallback)
    items, removed = remove_exact_duplicates(items)
    nd = data_cfg.near_duplicates
    groups = near_duplicate_groups(items, nd.threshold, nd.same_title_min_chars)
    sp = data_cfg.split
    near_copies: list[dict] = []
    splits = split_sources_in_order(
        items,
        [src["name"] for src in sources],
        val_size=sp.val_size,
        test_size=sp.test_size,
        seed=sp.seed,
        groups=groups,
        train_only=[s["name"] for s in sources if s.get("split") == "train"],
        dropped=near_copies,
    )
    removed = removed + near_copies
    split_config = {"val_size": sp.val_size, "test_size": sp.test_size, "seed": sp.seed}
    data_sha = combined_sha256(sources)
    reviewed: dict = {}
    if data_cfg.get("reviewed_labels"):
        splits, reviewed = apply_reviewed_labels(
            splits, resolve_path(data_cfg.reviewed_labels, root_dir), tags
        )
    noise_cfg = data_cfg.get("label_noise")
    label_noise: dict = {}
    if apply_label_noise and noise_cfg and noise_cfg.get("action", "keep") != "keep":
        from mltagger.label_issues import apply_layer

        layer_path = resolve_path(noise_cfg.layer, root_dir)
        if not layer_path.exists():
            raise DataError(
                f"label-issue layer {layer_path} not found: build it with `make label-issues` "
                "(or set data.label_noise.action=keep to train on the shipped labels)"
            )
        splits, label_noise = apply_layer(
            splits,
            json.loads(layer_path.read_text()),
            action=noise_cfg.action,
            sources=list(noise_cfg.sources),
            weight=float(noise_cfg.get("weight", 1.0)),
            data_sources=sources,
            split_config=split_config,
        )
        label_noise["layer"] = str(noise_cfg.layer)
        label_noise["layer_sha256"] = sha256_file(layer_path)
    return PreparedData(
        splits=splits,
        tags=tags,
        fallback_tag=fallback,
        sources=sources,
        data_sha256=data_sha,
        removed_duplicates=removed,
        near_duplicate_groups=groups,
        folded_tags=folded,
        rejected=reports,
        split_config=split_config,
        label_noise=label_noise,
        reviewed_labels=reviewed,
        fresh=fresh,
        fresh_manifest=fresh_manifest,
    )


def cap_per_tag(items: list[dict], cap: Any, seed: int = 0) -> tuple[list[dict], bool]:
    """At most `cap` items of each tag (a seeded sample, kept in id order); cap null = all.

    Weak sources can be larger than the platform's own data (the external lists hold ~680
    time-series paper titles against 28 time-series items): a cap keeps one source's style from
    dominating a tag, and training time in budget.
    """
    if cap is None:
        return items, False
    cap = int(cap)
    if cap < 1:
        raise DataError(f"max_per_tag must be a positive number of items, got {cap}")
    by_tag: dict[str, list[dict]] = defaultdict(list)
    for it in items:
        by_tag[it["tag"]].append(it)
    keep: set = set()
    for tag, tag_items in sorted(by_tag.items()):
        ids = sorted(it["id"] for it in tag_items)
        random.Random(f"{seed}:{tag}").shuffle(ids)
        keep.update(ids[:cap])
    return [it for it in items if it["id"] in keep], any(len(v) > cap for v in by_tag.values())


def to_hf_dataset(items: Sequence[dict], label_names: Sequence[str]):
    """The in-memory form handed to training: a datasets.Dataset with an integer `label` column."""
    from datasets import Dataset

    index = {t: i for i, t in enumerate(label_names)}
    return Dataset.from_list(
        [
            {
                "id": it["id"],
                "text": it["text"],
                "title": it["title"],
                "description": it["description"],
                "tag": it["tag"],
                "label": index[it["tag"]],
                # Down-weighted suspect labels (label_issues); 1.0 for every other row.
                "weight": float(it.get("weight", 1.0)),
            }
            for it in items
        ]
    )
