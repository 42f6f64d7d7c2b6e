"""Written relabelling rules for weak sources (`data.relabel`, e.g. data/mappings/llmops.yaml).

Why: the weak sources (external lists, package pool) were labelled by section names and keyword
votes, and for some kinds of item they teach the opposite of the labelling guide - LLM serving,
gateways and observability land under NLP although the guide calls them mlops. A person writes
the rule once, in a file that is read and checked like data: each rule names the tags it may
change (`from`), the tag it gives (`to`) and regular expressions that must all match (`all_of`)
or must not (`none_of`) on title + description. Every changed row keeps its shipped tag
(`tag_weak`) and the rule's name (`relabel_rule`), the label-issue layer leaves those rows alone,
and the split manifest counts the changes per rule and source. The rules file's sha256 is part of
the data's fingerprint, so a changed rule invalidates the teacher and out-of-fold files.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from mltagger.core.errors import DataError

RULES_VERSION = 1


@dataclass(frozen=True)
class RelabelRule:
    """One written rule: rows tagged one of `from_tags` whose text matches become `to`."""

    name: str
    from_tags: tuple[str, ...]
    to: str
    all_of: tuple[re.Pattern, ...]
    none_of: tuple[re.Pattern, ...]

    def matches(self, item: dict) -> bool:
        """True when this rule changes the row (its tag is in `from`, and the text fits)."""
        if item["tag"] not in self.from_tags or item["tag"] == self.to:
            return False
        text = f"{item.get('title', '')} {item.get('description', '')}"
        return all(p.search(text) for p in self.all_of) and not any(
            p.search(text) for p in self.none_of
        )


def _patterns(raw: object, where: str) -> tuple[re.Pattern, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(p, str) and p for p in raw):
        raise DataError(f"{where}: expected a list of regular expressions")
    out = []
    for p in raw:
        try:
            out.append(re.compile(p, re.IGNORECASE))
        except re.error as e:
            raise DataError(f"{where}: {p!r} is not a regular expression ({e})") from None
    return tuple(out)


def load_rules(path: str | Path, tags: Sequence[str]) -> tuple[list[RelabelRule], str]:
    """The rules of a mapping file and the file's sha256; DataError (one line) when the file is
    not a mapping this module can apply: unknown version, a tag outside `tags`, a rule without
    patterns, a bad regular expression or two rules with one name."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"relabel rules {path}: no such file")
    raw = path.read_bytes()
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise DataError(f"relabel rules {path}: not YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict) or doc.get("version") != RULES_VERSION:
        raise DataError(f"relabel rules {path}: expected `version: {RULES_VERSION}` and `rules:`")
    rules_raw = doc.get("rules")
    if not isinstance(rules_raw, list) or not rules_raw:
        raise DataError(f"relabel rules {path}: `rules` must be a non-empty list")
    rules: list[RelabelRule] = []
    for i, r in enumerate(rules_raw):
        where = f"relabel rules {path}, rule {i + 1}"
        if not isinstance(r, dict) or not isinstance(r.get("name"), str) or not r["name"]:
            raise DataError(f"{where}: every rule needs a `name`")
        where = f"relabel rules {path}, rule {r['name']!r}"
        from_tags = r.get("from")
        if not isinstance(from_tags, list) or not from_tags:
            raise DataError(f"{where}: `from` must be a non-empty list of tags")
        bad = [t for t in [*from_tags, r.get("to")] if t not in tags]
        if bad:
            raise DataError(f"{where}: {bad[0]!r} is not one of the approved tags {list(tags)}")
        all_of = _patterns(r.get("all_of"), f"{where}, all_of")
        if not all_of:
            raise DataError(f"{where}: `all_of` needs at least one pattern")
        rules.append(
            RelabelRule(
                name=r["name"],
                from_tags=tuple(from_tags),
                to=r["to"],
                all_of=all_of,
                none_of=_patterns(r.get("none_of"), f"{where}, none_of"),
            )
        )
    names = Counter(r.name for r in rules)
    dup = [n for n, c in names.items() if c > 1]
    if dup:
        raise DataError(f"relabel rules {path}: rule name {dup[0]!r} is used twice")
    return rules, hashlib.sha256(raw).hexdigest()


def apply_rules(
    items: Sequence[dict], rules: Sequence[RelabelRule], sources: Sequence[str]
) -> tuple[list[dict], dict]:
    """Rows of `sources` relabelled by the first rule that matches; other rows as they are.

    Returns the rows and a summary: changes per rule, per source and per (from -> to)."""
    sources = set(sources)
    out: list[dict] = []
    per_rule: Counter = Counter()
    per_source: Counter = Counter()
    moves: Counter = Counter()
    for it in items:
        rule = (
            next((r for r in rules if r.matches(it)), None) if it.get("source") in sources else None
        )
        if rule is None:
            out.append(it)
            continue
        out.append({**it, "tag": rule.to, "tag_weak": it["tag"], "relabel_rule": rule.name})
        per_rule[rule.name] += 1
        per_source[it["source"]] += 1
        moves[f"{it['tag']} -> {rule.to}"] += 1
    summary = {
        "relabelled": sum(per_rule.values()),
        "per_rule": dict(per_rule),
        "per_source": dict(per_source),
        "moves": dict(moves),
    }
    return out, summary
