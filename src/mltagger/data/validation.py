"""Reading and validating item files (JSON, JSONL, CSV): every bad row is reported with its row
number, field and problem, nothing is dropped silently, and invalid rows can be written to a
rejects file. Also the sha256 checks that pin shipped data files.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mltagger.core.errors import DataError
from mltagger.data.duplicates import exact_duplicates
from mltagger.data.links import is_http_url
from mltagger.data.text import clean_text, has_unstorable, has_visible, join_text

FIELDS = ("id", "created_on", "title", "description", "tag")
_INT = re.compile(r"-?\d+")  # decimal digits of any script, which int() reads
DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d")
SUPPORTED_SUFFIXES = (".json", ".jsonl", ".csv")


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


def parse_id(value: Any) -> int | None:
    """An integer id from an int or a string of digits (CSV cells are strings); else None.

    A full match of decimal digits, not str.isdigit: "²" and "--5" pass isdigit (after
    lstrip("-")) but int() refuses them, which crashed the whole validation instead of
    reporting one row.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT.fullmatch(value.strip()):
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
    item_id = parse_id(raw_id)
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
    elif not labeled and has_unstorable(title):  # items to store; training text is cleaned
        bad("title", "holds U+0000 (NUL), which cannot be stored", shown_id)
    elif not has_visible(clean_text(title)):
        bad("title", "empty", shown_id)

    # description (may be empty; the title alone is a valid, short item)
    description = data.get("description")
    if description is None:
        if labeled:
            bad("description", "missing", shown_id)
        description = ""
    elif not isinstance(description, str):
        bad("description", f"must be a string, got {_type_name(description)}", shown_id)
    elif not labeled and has_unstorable(description):
        bad("description", "holds U+0000 (NUL), which cannot be stored", shown_id)

    # url (items to tag only; optional): only a link people may follow is taken. Training
    # rows never use a link, and some curated lists hold relative ones.
    url = None if labeled else data.get("url")
    if url not in (None, "") and not is_http_url(url):
        shown = url if isinstance(url, str) else _type_name(url)
        bad("url", f"{str(shown)[:80]!r} is not an http(s) link in printable ASCII", shown_id)

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

    def approved(field_name: str, required: bool) -> str | None:
        """An approved tag, stripped; None when absent (a problem if required)."""
        value = data.get(field_name)
        if value in (None, ""):
            if required:
                bad(field_name, "missing", shown_id)
            return None
        if not isinstance(value, str):
            bad(field_name, f"must be a string, got {_type_name(value)}", shown_id)
        elif value.strip() not in tags:
            bad(field_name, f"unknown tag {value!r}; approved tags: {', '.join(tags)}", shown_id)
        else:
            return value.strip()
        return None

    tag = approved("tag", labeled)
    # author_tag: the tag the submitter chose (optional; an approved tag)
    author_tag = approved("author_tag", False)

    if problems:
        return None, problems
    title_clean, desc_clean = clean_text(title), clean_text(description)
    item = {
        "id": item_id,
        "created_on": created_on.strip() if created_on else None,
        "title": title_clean,
        "description": desc_clean,
        "text": join_text(title_clean, desc_clean),
        "tag": tag,
        "title_raw": title,
        "description_raw": description,
    }
    if author_tag is not None:  # only where given: training items stay as they were
        item["author_tag"] = author_tag
    if url not in (None, ""):
        item["url"] = url
    return item, []


def load_items(path: str | Path, tags: Sequence[str], *, labeled: bool = True) -> ValidationReport:
    """Read and validate one file (JSON, JSONL or CSV)."""
    return validate_rows(read_rows(path), tags, labeled=labeled, source=str(path))


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


def combined_sha256(sources: Sequence[dict]) -> str:
    """One hash for all sources: the file's own sha256 when there is one source."""
    if len(sources) == 1:
        return sources[0]["sha256"]
    joined = "\n".join(f"{s['name']}:{s['sha256']}" for s in sources)
    return hashlib.sha256(joined.encode()).hexdigest()
