"""Human labels from the store into the next training set: `mltagger dataset build`.

Writes `data/feedback/v<N>.json` (items whose tag a person set in review, and, unless
`--reviewed-only`, items reported wrong with the reported tag), its sha256, a changelog line,
and `conf/data/feedback_v<N>.yaml`: the base data config plus this file as one more source, so
`make train ARGS="data=feedback_v<N>"` trains on the shipped data and the human labels. The new
source comes last: splitting goes source by source, so no shipped item changes split and the
label-issue layer of the shipped sources stays valid.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mltagger.core.errors import DataError
from mltagger.core.paths import conf_dir, resolve_path
from mltagger.data.duplicates import dedup_key
from mltagger.data.validation import load_items, sha256_file
from mltagger.serving.store import Store

# Store ids become training ids above every shipped id, so the sources never clash.
ID_OFFSET = 10_000_000
SOURCE_NAME = "feedback"
_VERSION = re.compile(r"^v(\d+)\.json$")


def _created_on(stamp: str) -> str:
    return datetime.fromisoformat(stamp).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def training_row(r: dict) -> dict:
    """One human-labelled store item as a row of the next training set."""
    second = _secondary(r)
    return {
        "id": ID_OFFSET + int(r["id"]),
        "created_on": _created_on(r["created_at"]),
        "title": r["title"],
        "description": r["description"] or "",
        "tag": r["tag"],
        # a reviewer's secondary tags (issue 35): the first is the row's `also`, the field the
        # pool's secondary-tag labels use; all of them are kept
        "also": second[0] if second else "",
        "secondary_tags": second,
        "label_source": r["label_source"],
        "store_id": r["id"],
    }


def _secondary(row: dict) -> list[str]:
    """The secondary tags a person set: the reviewer's, or the reporter's for an unreviewed
    report (`Store.human_labels` hands each row the person's own; a model's are not labels)."""
    return [t for t in row.get("secondary_tags") or [] if t != row["tag"]]


def next_version(out_dir: Path) -> int:
    found = [int(m.group(1)) for p in out_dir.glob("v*.json") if (m := _VERSION.match(p.name))]
    return max(found, default=0) + 1


def build(
    store_url: str,
    data_cfg: Any,
    root_dir: str | Path,
    *,
    out_dir: str | Path | None = None,
    config_dir: str | Path | None = None,
    reviewed_only: bool = False,
) -> dict:
    """Write the next versioned human-label file and its data config; returns what was written."""
    root_dir = Path(root_dir)
    out_dir = Path(out_dir) if out_dir else root_dir / "data" / SOURCE_NAME
    config_dir = Path(config_dir) if config_dir else conf_dir() / "data"
    store = Store(store_url)
    try:
        labelled = store.human_labels(include_unreviewed_feedback=not reviewed_only)
    finally:
        store.close()
    if not labelled:
        raise DataError(
            "the store has no human-labelled items yet (review decisions"
            + ("" if reviewed_only else " or wrong-tag feedback")
            + "): nothing to add; review items first (make serve, then /ui/review)"
        )
    tags = list(data_cfg.tags)
    shipped: dict[str, tuple[int, str]] = {}
    for src in data_cfg.sources:
        if src.name == SOURCE_NAME:
            continue
        for it in load_items(resolve_path(src.path, root_dir), tags).items:
            shipped.setdefault(
                dedup_key(it["title"] + " " + it["description"]), (it["id"], it["tag"])
            )
    rows, repeats = [], []
    for r in labelled:
        key = dedup_key(r["title"] + " " + (r["description"] or ""))
        if key in shipped:
            repeats.append({"store_id": r["id"], "shipped_id": shipped[key][0], "tag": r["tag"]})
            continue
        rows.append(training_row(r))
    if not rows:
        raise DataError(
            f"all {len(repeats)} human-labelled items repeat shipped items (the shipped label "
            "is kept): nothing new to add"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(out_dir)
    previous = out_dir / f"v{version - 1}.json"
    if previous.is_file() and json.loads(previous.read_text()) == rows:
        raise DataError(f"no new human labels since {previous} (same {len(rows)} rows)")
    path = out_dir / f"v{version}.json"
    path.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    report = load_items(path, tags)  # the file must load like any shipped source
    if not report.ok:
        path.unlink()
        raise DataError("the built file does not validate:\n" + report.format())
    sha = sha256_file(path)
    name = f"{SOURCE_NAME}_v{version}"
    try:
        rel = path.resolve().relative_to(root_dir.resolve())
    except ValueError:
        rel = path.resolve()
    base_sources = [
        {"name": s.name, "path": str(s.path), "sha256": s.get("sha256")}
        for s in data_cfg.sources
        if s.name != SOURCE_NAME
    ]
    sources = [*base_sources, {"name": SOURCE_NAME, "path": str(rel), "sha256": sha}]
    by_source = Counter(r["label_source"] for r in rows)
    by_tag = Counter(r["tag"] for r in rows)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    config = config_dir / f"{name}.yaml"
    config_dir.mkdir(parents=True, exist_ok=True)
    config.write_text(
        f"# Generated by `mltagger dataset build` on {stamp}: the {data_cfg.name} data plus\n"
        f"# {len(rows)} human-labelled items from the store ({path.name}, sha256 {sha[:12]}…).\n"
        f'#   make train ARGS="data={name}"\n'
        "defaults:\n"
        f"  - {data_cfg.name}\n"
        "  - _self_\n\n"
        f"name: {name}\n"
        "sources:\n"
        + "".join(
            f"  - name: {s['name']}\n    path: {s['path']}\n    sha256: {s['sha256']}\n"
            for s in sources
        )
    )
    changelog = out_dir / "CHANGELOG.md"
    if not changelog.is_file():
        changelog.write_text("# Human-labelled training data built from the store\n\n")
    with changelog.open("a") as fh:
        fh.write(
            f"- v{version} ({stamp}): {len(rows)} items "
            f"({by_source.get('review', 0)} reviewed, {by_source.get('feedback', 0)} from "
            f"feedback not yet reviewed); tags {dict(by_tag.most_common())}; "
            f"{len(repeats)} repeating shipped items left out; sha256 {sha}; "
            f"config conf/data/{name}.yaml\n"
        )
    return {
        "version": version,
        "file": str(path),
        "sha256": sha,
        "rows": len(rows),
        "by_label_source": dict(by_source),
        "by_tag": dict(by_tag),
        "repeats_shipped": repeats,
        "config": str(config),
        "data_name": name,
        "changelog": str(changelog),
    }
