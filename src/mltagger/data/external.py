"""The external weak source: curated lists of ML resources turned into training items.

The shipped training data are 2020 items; seven public, licensed "awesome" lists (copied raw into
`data/external/raw/`, provenance in `data/external/SOURCE.md`) name thousands of 2021-2026
libraries and papers, each under a section that says its topic. `make data-external` turns them
into `data/external.json`:

1. every raw file is checked against the sha256 recorded in the mapping config (a changed or
   missing file stops the build with its name: the labels below were decided for those bytes);
2. each list is parsed in its own style (markdown links, bold paper titles, plain paper titles,
   best-of-ml-python's HTML summaries) into entries with their heading path;
3. an entry's tag comes from the innermost heading the mapping names (`conf/external/mapping.yaml`);
   entries under headings the mapping does not name are dropped and listed in the build report,
   never guessed;
4. exact and near copies of every item of the shipped sources and the fresh evaluation set are
   removed (the same measure as the fresh-set check, `mltagger.data.fresh.overlaps`), then copies
   across lists (the first list wins).

The result is a weak source: labels from section names, library/paper style rather than user
posts. Training reads it as a train-only source (`data=with_external`) with its own loss weight.

Over 400 lines because the four Markdown list styles, the mapping of headings to tags and the
build report are one parser; each function is short.
"""

from __future__ import annotations

import argparse
import html
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mltagger.core.errors import DataError
from mltagger.core.paths import resolve_path
from mltagger.data.duplicates import dedup_key, near_duplicate_groups
from mltagger.data.fresh import overlaps
from mltagger.data.text import clean_text, item_text
from mltagger.data.validation import load_items, sha256_file

STYLES = ("link", "bold", "paper", "bestof")
FIRST_ID = 200001

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[*-]\s+(.*)$")
_LINK = re.compile(r"\[([^\]]*)\]\(([^)]*)\)")
_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_TAG = re.compile(r"<[^>]+>")
_BESTOF = re.compile(
    r'<b><a href="([^"]+)">([^<]+)</a></b>\s*\([^)]*\)\s*(?:-\s*(.*?))?\s*(?:<code>|</summary>|$)'
)
_VENUE = re.compile(r"\s*\((?:[^()]*\d{4}[^()]*)\)\s*$")


@dataclass(frozen=True)
class Entry:
    """One parsed list entry, before mapping: what it is called, what it says, where it sits."""

    list: str
    file: str
    line: int
    section: tuple[str, ...]
    title: str
    description: str
    url: str


def _plain(text: str) -> str:
    """Markdown/HTML fragment -> plain text (links keep their text, images and tags go)."""
    text = _IMAGE.sub(" ", text)
    text = _LINK.sub(lambda m: m.group(1), text)
    text = _TAG.sub(" ", text)
    text = html.unescape(text).replace("**", "").replace("`", "").replace("\\", "")
    return clean_text(text)


def _heading_text(raw: str) -> str:
    return _plain(raw).strip(" :")


def _describe(rest: str) -> str:
    """The description after an entry's name: shields and link lists removed, separator cut."""
    text = _plain(rest)
    text = re.sub(r"^[\s|:–—-]+", "", text)
    return text.strip()


def parse_markdown(text: str, *, list_name: str, file: str, style: str) -> list[Entry]:
    """Entries of one markdown file, each with the heading path above it (level-1 title left out).

    style: `link` - a bullet that opens with a markdown link names the entry; the text after it
    (minus shields) describes it. `bold` - a bullet that opens with **Title**. `paper` - a bullet
    whose text up to its first link is a paper title. `bestof` - best-of-ml-python's HTML
    summaries. Nested bullets under an entry (authors, sub-links) are not entries in the `bold`
    and `paper` styles.
    """
    if style not in STYLES:
        raise DataError(
            f"external list {list_name!r}: unknown style {style!r}; use one of {STYLES}"
        )
    stack: list[tuple[int, str]] = []
    out: list[Entry] = []
    for number, line in enumerate(text.splitlines(), start=1):
        h = _HEADING.match(line)
        if h:
            level = len(h.group(1))
            stack = [(lv, t) for lv, t in stack if lv < level]
            stack.append((level, _heading_text(h.group(2))))
            continue
        section = tuple(t for lv, t in stack if lv > 1)
        entry = _parse_line(line, style)
        if entry is None:
            continue
        title, description, url = entry
        title = _VENUE.sub("", title) if style in ("bold", "paper") else title
        title = clean_text(title).strip(" .:-")
        if len(title) < 2 or url.startswith("#"):
            continue
        out.append(Entry(list_name, file, number, section, title, description, url))
    return out


def _parse_line(line: str, style: str) -> tuple[str, str, str] | None:
    if style == "bestof":
        m = _BESTOF.search(line)
        if not m:
            return None
        desc = _plain(m.group(3) or "").rstrip(".").strip()
        return html.unescape(m.group(2)).strip(), desc, m.group(1)
    b = _BULLET.match(line)
    if not b:
        return None
    indent, body = len(b.group(1).expandtabs(4)), b.group(2).strip()
    if style == "link":
        m = re.match(r"\[([^\]]+)\]\(([^)]*)\)(.*)$", body)
        if not m or not _plain(m.group(1)):
            return None
        return _plain(m.group(1)), _describe(m.group(3)), m.group(2).strip()
    if indent > 0:  # authors and sub-links under a paper
        return None
    if style == "bold":
        m = re.match(r"\*\*(.+?)\*\*(.*)$", body)
        if not m:
            return None
        return _plain(m.group(1)), "", ""
    # paper: the plain text before the first link is the title
    head = re.split(r"\s*\[", body, maxsplit=1)[0]
    urls = re.findall(r"\]\(([^)]+)\)", body)
    if not _plain(head):
        return None
    return _plain(head), "", urls[0] if urls else ""


def map_entries(
    entries: Sequence[Entry], sections: dict[str, str], tags: Sequence[str]
) -> tuple[list[tuple[Entry, str, str]], Counter]:
    """(entry, tag, the mapping key that decided it) for mapped entries; dropped paths counted.

    Keys are heading paths ("Software / Object Detection"): the longest key that is a prefix of
    an entry's heading path decides, so a list can map a whole part ("Software") and still drop
    one of its subsections (map it to `drop`). The key `*` maps every entry under any heading of
    the list (for single-topic lists); entries above the first heading never map.
    """
    bad = sorted({t for t in sections.values() if t not in (*tags, "drop")})
    if bad:
        raise DataError(f"external mapping names tags that are not approved: {bad}")
    mapped: list[tuple[Entry, str, str]] = []
    dropped: Counter = Counter()
    for e in entries:
        prefixes = [" / ".join(e.section[:k]) for k in range(len(e.section), 0, -1)]
        decided = next((p for p in prefixes if p in sections), None)
        if decided is None and e.section and "*" in sections:
            decided = "*"
        if decided is None:
            dropped[" / ".join(e.section) or "(no heading)"] += 1
        elif sections[decided] == "drop":
            dropped[f"{' / '.join(e.section)} (dropped on purpose)"] += 1
        else:
            mapped.append((e, sections[decided], decided))
    return mapped, dropped


def _read_mapping(path: Path) -> dict:

    if not path.exists():
        raise DataError(f"external mapping {path} not found")
    cfg = yaml.safe_load(path.read_text())
    if not isinstance(cfg, dict) or not isinstance(cfg.get("lists"), list):
        raise DataError(f"{path}: expected a mapping with a `lists:` list")
    return cfg


def _check_files(cfg: dict, root: Path) -> list[str]:
    """Every raw file present with its recorded sha256; else every problem, one per line."""
    problems = []
    for lst in cfg["lists"]:
        for f in lst["files"]:
            path = root / lst["folder"] / f["path"]
            if not path.is_file():
                problems.append(f"{lst['name']}: {path} is missing")
            elif sha256_file(path) != f["sha256"]:
                problems.append(
                    f"{lst['name']}: {path} changed (sha256 {sha256_file(path)[:12]}…, expected "
                    f"{f['sha256'][:12]}…); re-check its sections and update the mapping"
                )
        lic = root / lst["folder"] / lst["licence_file"]
        if not lic.is_file():
            problems.append(f"{lst['name']}: licence file {lic} is missing")
    return problems


def _reference_items(cfg: dict, root: Path, tags: Sequence[str]) -> list[dict]:
    """Every item of the shipped sources and the fresh set: what the build must not copy."""
    out = []
    for ref in cfg["exclude_copies_of"]:
        report = load_items(resolve_path(ref, root), tags, labeled=True)
        out += [{**it, "ref": ref} for it in report.items]
    return out


def build(mapping_path: str | Path, root: str | Path | None = None) -> tuple[list[dict], dict]:
    """The external items (JSON-ready, ids from FIRST_ID) and the build report."""

    root = Path(resolve_path(".", root))
    mapping_path = resolve_path(mapping_path, root)
    cfg = _read_mapping(mapping_path)
    tags = list(cfg["tags"])
    raw_root = resolve_path(cfg["raw_dir"], root)
    problems = _check_files(cfg, raw_root)
    if problems:
        raise DataError("make data-external: " + "; ".join(problems))
    excluded = set(cfg.get("excluded_lists") or [])

    candidates: list[dict] = []
    report: dict[str, Any] = {"lists": {}, "excluded_lists": sorted(excluded)}
    for lst in cfg["lists"]:
        name = lst["name"]
        if name in excluded:
            report["lists"][name] = {"excluded": True}
            continue
        entries: list[Entry] = []
        for f in lst["files"]:
            text = (raw_root / lst["folder"] / f["path"]).read_text(encoding="utf-8")
            prefix = tuple(f.get("section_prefix") or ())
            parsed = parse_markdown(text, list_name=name, file=f["path"], style=lst["style"])
            entries += [
                Entry(e.list, e.file, e.line, prefix + e.section, e.title, e.description, e.url)
                for e in parsed
            ]
        mapped, dropped = map_entries(entries, lst["sections"], tags)
        report["lists"][name] = {
            "parsed": len(entries),
            "mapped": len(mapped),
            "by_tag": dict(Counter(t for _, t, _ in mapped).most_common()),
            "dropped_sections": dict(dropped.most_common()),
        }
        for e, tag, decided in mapped:
            candidates.append(
                {
                    "title": e.title,
                    "description": e.description,
                    "tag": tag,
                    "created_on": f"{lst['date']} 00:00:00",
                    "list": name,
                    "section": " / ".join(e.section),
                    "mapped_by": decided,
                    "licence": lst["licence"],
                    "url": e.url,
                    "line": e.line,
                    "file": e.file,
                }
            )

    for c in candidates:
        c["text"] = item_text(c["title"], c["description"])
    # Copies of evaluation (and shipped) items go first: an item the model has seen measures
    # nothing, and the fresh set would refuse the source at load time.
    refs = _reference_items(cfg, root, tags)
    for i, c in enumerate(candidates):
        c["id"] = i
    nd = cfg["near_duplicates"]
    hits = overlaps(candidates, refs, nd["threshold"], nd["same_title_min_chars"])
    ref_by_id = {r["id"]: r for r in refs}
    removed = [
        {
            "title": c["title"],
            "list": c["list"],
            "copy_of": hits[c["id"]]["training_id"],
            "in": ref_by_id[hits[c["id"]]["training_id"]]["ref"],
            "how": hits[c["id"]]["how"],
        }
        for c in candidates
        if c["id"] in hits
    ]
    kept = [c for c in candidates if c["id"] not in hits]
    # Then copies across lists and within a list: the first occurrence wins, and an entry
    # listed under two different tags is dropped entirely (its section names disagree).
    kept, cross = _dedup_within(kept, nd)

    items = []
    for n, c in enumerate(kept):
        c.pop("text")
        items.append({"id": FIRST_ID + n, **{k: v for k, v in c.items() if k != "id"}})
    report.update(
        {
            "candidates": len(candidates),
            "removed_copies_of_reference": len(removed),
            "removed_copies_of_reference_by_file": dict(Counter(r["in"] for r in removed)),
            "removed_within_external": cross,
            "items": len(items),
            "by_tag": dict(Counter(it["tag"] for it in items).most_common()),
            "by_list": dict(Counter(it["list"] for it in items).most_common()),
            "removed_examples": removed[:30],
        }
    )
    return items, report


def _dedup_within(items: list[dict], nd: dict) -> tuple[list[dict], dict]:

    for i, it in enumerate(items):
        it["id"] = i
    groups = near_duplicate_groups(items, nd["threshold"], nd["same_title_min_chars"])
    drop: set[int] = set()
    conflicts = 0
    for g in groups:
        g = sorted(g)
        if len({items[i]["tag"] for i in g}) > 1:
            drop.update(g)
            conflicts += 1
        else:
            drop.update(g[1:])
    exact: dict[str, int] = {}
    for i, it in enumerate(items):
        key = dedup_key(it["text"])
        if key in exact and i not in drop:
            drop.add(i)
        exact.setdefault(key, i)
    kept = [it for i, it in enumerate(items) if i not in drop]
    return kept, {"dropped": len(drop), "groups_with_conflicting_tags": conflicts}


def write(items: list[dict], report: dict, out: Path, report_path: Path) -> str:
    """Write the source and its report; return the source's sha256."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(items, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    sha = sha256_file(out)
    report = {"file": str(out.name), "sha256": sha, **report}
    report_path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    return sha


def render(report: dict) -> str:
    """What `make data-external` prints: per list mapped/parsed, per tag, what was dropped."""
    lines = []
    for name, r in report["lists"].items():
        if r.get("excluded"):
            lines.append(f"{name}: excluded whole (the fresh set drew from it)")
            continue
        lines.append(f"{name}: {r['mapped']} of {r['parsed']} entries mapped {r['by_tag']}")
        top = list(r["dropped_sections"].items())
        for sec, n in top[:6]:
            lines.append(f"    dropped {n:>4}  {sec[:90]}")
        if len(top) > 6:
            lines.append(f"    dropped {sum(n for _, n in top[6:]):>4}  in {len(top) - 6} more")
    lines.append(
        f"candidates {report['candidates']}; copies of shipped/fresh items removed "
        f"{report['removed_copies_of_reference']} {report['removed_copies_of_reference_by_file']};"
        f" copies within the lists removed {report['removed_within_external']['dropped']}"
    )
    lines.append(f"items {report['items']}: {report['by_tag']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """`make data-external`: build data/external.json (and its report) from the raw lists."""

    parser = argparse.ArgumentParser(prog="mltagger data-external", description=main.__doc__)
    parser.add_argument("--mapping", default="conf/external/mapping.yaml")
    parser.add_argument("--out", default="data/external.json")
    parser.add_argument("--report", default="data/external/build_report.json")
    args = parser.parse_args(argv)
    try:
        items, report = build(args.mapping)
    except DataError as err:
        print(f"error: {err}")
        return 1
    out, rep = resolve_path(args.out, None), resolve_path(args.report, None)
    sha = write(items, report, out, rep)
    print(render(report))
    print(f"wrote {out} ({len(items)} items, sha256 {sha}) and {rep}")
    print("update data.sources[external].sha256 in conf/data/with_external.yaml if it changed")
    return 0
