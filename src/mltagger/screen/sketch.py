"""What one item looks like to the duplicate screen: its normalised text, its sketch, and the
sets the pair features read. Lexical and independent of the classifier.

Why lexical: a copy people make (a repost, a typo fix, a cut description, a reworded title) keeps
most of its characters; a genuinely new item on the same topic shares words but not strings. A
classifier's hidden layer is trained to put same-tag items together, and a sentence encoder to
put same-meaning items together, so both bring a new item close to its neighbours in a big store
of the same topics (measured in docs/dedup.md). The screen therefore has its own representation,
its own version (`VERSION`) and its own calibration (`data/dedup/screen.json`): promoting a new
classifier changes nothing here and never re-embeds the store.

The sketch is a 256-dimension signed hash of the text's distinct 4-grams (unit length), searched
in the stored items' `mltagger.screen.index.ScreenIndex`; the `Profile` sets feed the pair
features of `mltagger.screen.pairs`. All of it is numpy and the standard library: no model
forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from mltagger.core.errors import UserError
from mltagger.data.duplicates import dedup_key

# Bump when the sketch or the pair features (`mltagger.screen.pairs.FEATURES`) change: stored
# sketches of another version are rebuilt, and a calibration of another version is refused.
VERSION = "lexical-1"
SKETCH_DIM = 256


class ScreenError(UserError):
    """The screen cannot run as configured (missing or mismatched calibration)."""


def _grams4(text: str) -> frozenset[str]:
    padded = f" {text} "
    return frozenset({padded[i : i + 4] for i in range(len(padded) - 3)})


@dataclass(frozen=True)
class Profile:
    """What the features need from one item, computed once per item: sets, so that every
    similarity is a C-level set intersection (the screen's cost budget is a fraction of a
    millisecond per item)."""

    title_key: str
    text: str
    title: frozenset[str]
    description: frozenset[str]
    full: frozenset[str]
    words: frozenset[str]


def normalised(title: str, description: str | None) -> str:
    """The text the sketch and the features read: `dedup_key` of title, then description."""
    return f"{dedup_key(title)} {dedup_key(description or '')}".strip()


@dataclass(frozen=True)
class Text:
    """Just the normalised text: all `sketch` needs."""

    text: str


class LazyProfiles:
    """Profiles of a batch's items, each made the first time a candidate needs it: most new
    items have no candidate above the floor and never need theirs."""

    def __init__(self, items: Sequence[dict]) -> None:
        self._items = items
        self._cache: dict[int, Profile] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, j: int) -> Profile:
        if j not in self._cache:
            it = self._items[j]
            self._cache[j] = profile(it["title"], it["description"])
        return self._cache[j]


def profile(title: str, description: str | None) -> Profile:
    """The sets the pair features read, computed once per item (`Profile`)."""
    t, d = dedup_key(title), dedup_key(description or "")
    full = f"{t} {d}".strip()
    tokens = full.split()
    words = frozenset(tokens) | frozenset(map(" ".join, pairwise(tokens)))
    title4 = _grams4(t)
    desc4 = _grams4(d) if d else frozenset()
    # the whole text's grams: the title's and the description's (the few grams that would span
    # the join are left out; nothing depends on them)
    return Profile(t, full, title4, desc4, title4 | desc4, words)


_MULT = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: spreads 4-byte windows over buckets


def sketch_counts(profiles: Sequence[Profile | Text]) -> np.ndarray:
    """The sketches before they are scaled to unit length: float32 (n, SKETCH_DIM) of small
    whole numbers (each bucket's sum of +1/-1). Kept apart from `sketch` so that a cache of
    many sketches can store them as int8 and rebuild the unit sketches bit for bit
    (`unit_sketches`). Each distinct 4-byte window adds +1 or -1 to one bucket, both chosen by
    a fixed multiplicative hash (stable across processes and machines, unlike `hash`). One numpy
    pass over the whole batch (a Python loop per text cost more than the search)."""
    n = len(profiles)
    out = np.zeros((n, SKETCH_DIM), dtype=np.float32)
    if not n:
        return out
    texts = [f" {p.text} ".encode() for p in profiles]
    lengths = np.array([len(t) for t in texts], dtype=np.int64)
    raw = np.frombuffer(b"".join(texts), dtype=np.uint8).astype(np.uint64)
    if len(raw) < 4:
        return out
    row = np.repeat(np.arange(n, dtype=np.uint64), lengths)
    ends = np.repeat(np.cumsum(lengths), lengths)
    start = np.arange(len(raw) - 3)
    inside = start + 4 <= ends[: len(start)]  # the window does not run into the next text
    ids = raw[:-3] << np.uint64(24) | raw[1:-2] << np.uint64(16) | raw[2:-1] << np.uint64(8)
    ids |= raw[3:]
    keys = np.unique((row[: len(start)] << np.uint64(32) | ids)[inside])
    rows, ids = (keys >> np.uint64(32)).astype(np.int64), keys & np.uint64(0xFFFFFFFF)
    h = ids * _MULT
    sign = np.where((h >> np.uint64(20)) & np.uint64(1), 1.0, -1.0)
    bucket = (h >> np.uint64(64 - int(math.log2(SKETCH_DIM)))).astype(np.int64)
    flat = np.bincount(rows * SKETCH_DIM + bucket, weights=sign, minlength=n * SKETCH_DIM)
    out[:] = flat.reshape(n, SKETCH_DIM)
    return out


def _to_unit(out: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


def unit_sketches(counts: np.ndarray) -> np.ndarray:
    """`sketch_counts` (any dtype, e.g. a cache's int8) scaled to unit length: float32, equal
    bit for bit to `sketch` of the same texts; a row of zeros stays zero."""
    return _to_unit(np.asarray(counts).astype(np.float32).reshape(-1, SKETCH_DIM))


def sketch(profiles: Sequence[Profile | Text]) -> np.ndarray:
    """Unit float32 sketches (n, SKETCH_DIM) of each text's distinct 4-byte windows
    (`sketch_counts`, scaled to unit length). The inner product of two sketches estimates the
    cosine of their 4-gram sets, which is what candidates are ranked by."""
    return _to_unit(sketch_counts(profiles))
