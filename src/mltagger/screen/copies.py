"""Synthetic copies of real items (format changes, typos, truncation, rewording, repost
prefixes) and the labelled pairs built from them: the edited-copy half of the duplicate-screen
benchmark.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

import numpy as np

from mltagger.data.duplicates import dedup_key, near_duplicate_groups

# Rewordings a person reposting an item might make; applied as whole words.
_SYNONYMS = {
    "using": "with",
    "with": "using",
    "model": "network",
    "models": "networks",
    "network": "model",
    "networks": "models",
    "learning": "training",
    "simple": "basic",
    "implementation": "code",
    "tutorial": "guide",
    "guide": "tutorial",
    "paper": "article",
    "dataset": "data set",
    "images": "pictures",
    "image": "picture",
    "build": "create",
    "train": "fit",
    "fast": "quick",
    "large": "big",
    "new": "novel",
    "method": "approach",
    "approach": "method",
    "library": "package",
    "framework": "toolkit",
    "based": "built",
    "how": "ways",
    "a": "one",
    "the": "this",
}
_WORD = re.compile(r"\w+|\W+")
REPOST_PREFIXES = ("[P] ", "Project: ", "New: ", "Show ML: ", "Repost - ")
REPOST_SUFFIXES = (" (code included)", " — updated", " [2nd edition]", " (with notebook)")
KINDS = ("format", "typos", "truncated", "reworded", "reposted")


def _typos(text: str, rng: random.Random, rate: float = 0.06) -> str:
    words = text.split(" ")
    for k, w in enumerate(words):
        if len(w) > 3 and rng.random() < rate:
            i = rng.randrange(len(w) - 1)
            op = rng.choice(("swap", "drop", "double"))
            if op == "swap":
                w = w[:i] + w[i + 1] + w[i] + w[i + 2 :]
            elif op == "drop":
                w = w[:i] + w[i + 1 :]
            else:
                w = w[:i] + w[i] + w[i:]
            words[k] = w
    return " ".join(words)


def _reword(text: str, rng: random.Random, rate: float = 0.5) -> str:
    out = []
    for tok in _WORD.findall(text):
        low = tok.lower()
        if low in _SYNONYMS and rng.random() < rate:
            new = _SYNONYMS[low]
            out.append(new.capitalize() if tok[:1].isupper() else new)
        else:
            out.append(tok)
    return "".join(out)


def make_duplicate(item: dict, kind: str, rng: random.Random) -> dict:
    """An edited copy of `item` of the given kind (title and description)."""
    title, desc = item["title"], item["description"]
    if kind == "format":  # only case, punctuation and spacing: the exact stage must catch it
        title = title.upper() if rng.random() < 0.5 else title.lower()
        desc = "  " + desc.replace(", ", " , ").replace(". ", "... ") + " !"
    elif kind == "typos":
        title, desc = _typos(title, rng, 0.1), _typos(desc, rng)
    elif kind == "truncated":
        words = desc.split()
        keep = max(1, int(len(words) * rng.uniform(0.5, 0.75)))
        desc = " ".join(words[:keep]) + ("..." if keep < len(words) else "")
    elif kind == "reworded":
        title, desc = _reword(title, rng), _reword(desc, rng)
    elif kind == "reposted":
        title = rng.choice(REPOST_PREFIXES) + title + rng.choice(REPOST_SUFFIXES)
    else:
        raise ValueError(f"unknown duplicate kind {kind!r}; choose from {KINDS}")
    return {"title": title, "description": desc}


def build_eval_pairs(items: Sequence[dict], seed: int = 0) -> list[dict]:
    """Labelled pairs from real items: one edited copy per item (kinds in rotation) plus two
    distinct pairs per item, one random and one hard (same tag, most similar TF-IDF wording,
    excluding items the data module already groups as near-duplicates of each other).

    Each pair: {a: {title, description}, b: {...}, duplicate: bool, kind}.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    rng = random.Random(seed)
    items = list(items)
    group_of: dict = {}
    for g, ids in enumerate(near_duplicate_groups(items)):
        for i in ids:
            group_of[i] = g
    keys = [dedup_key(it["text"]) for it in items]
    tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(keys)
    sims = (tfidf @ tfidf.T).toarray()

    def distinct(i: int, j: int) -> bool:
        a, b = items[i], items[j]
        same_group = group_of.get(a["id"], -1) == group_of.get(b["id"], -2)
        return i != j and not same_group and keys[i] != keys[j]

    def side(it: dict) -> dict:
        return {"title": it["title"], "description": it["description"]}

    pairs = []
    for i, it in enumerate(items):
        kind = KINDS[i % len(KINDS)]
        pairs.append(
            {"a": side(it), "b": make_duplicate(it, kind, rng), "duplicate": True, "kind": kind}
        )
        j = rng.randrange(len(items))
        if distinct(i, j):
            pairs.append({"a": side(it), "b": side(items[j]), "duplicate": False, "kind": "random"})
        same_tag = [
            k
            for k in np.argsort(-sims[i])
            if items[k].get("tag") == it.get("tag") and distinct(i, k)
        ]
        if same_tag:
            k = int(same_tag[0])
            pairs.append(
                {"a": side(it), "b": side(items[k]), "duplicate": False, "kind": "hard_negative"}
            )
    return pairs
