"""Exact and near duplicates inside a dataset: the normalised key, exact repeats (kept once), and
near-duplicate groups (TF-IDF cosine) that must stay on one side of every split so that test
items are not copies of training items.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import defaultdict
from collections.abc import Sequence

_NON_WORD = re.compile(r"[^\w]+")


def dedup_key(text: str) -> str:
    """Case-, accent-, punctuation- and whitespace-insensitive form used to spot duplicates.

    NFKD runs before case folding as well as after: it turns look-alikes such as the black-letter
    H or the mathematical bold A into capital letters, which must be folded too ("ℌello" and
    "hello" are one text). The key is then its own key and has no case left to fold.
    """
    if text.isascii():  # the common case, and the same result: NFKD changes no ASCII text
        return _NON_WORD.sub(" ", text.lower()).strip()
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
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


def content_hash(title: str, description: str) -> str:
    """The exact-duplicate key: equal for texts that differ only in case/punctuation/spacing."""
    return hashlib.sha256(dedup_key(f"{title} {description}").encode("utf-8")).hexdigest()
