"""Text as every model sees it: one cleaning (Unicode NFKC, whitespace, invisible characters)
and one way of joining title and description, used by training data, the service and the
benchmarks alike.
"""

from __future__ import annotations

import functools
import re
import unicodedata

# Planes that hold control, format and surrogate code points (Unicode 14-16: planes 0, 1 and 14);
# scanning only these keeps the import fast, and a unit test scans all 1.1M code points.
_PLANES = (range(0x0000, 0x20000), range(0xE0000, 0xF0000))
# Letters and symbols that render as nothing: Hangul fillers, the blank Braille pattern.
BLANK_LETTERS = "\u115f\u1160\u3164\uffa0\u2800"


def _scan() -> tuple[dict[int, None], frozenset[int]]:
    """One pass over the planes (about 40 ms): the code points cleaning deletes, and the marks.

    Deleted: control characters that are not whitespace (NUL among them: PostgreSQL cannot
    store it), format characters (zero-width spaces and joiners, soft hyphens, the bidirectional
    overrides that reorder what a reader sees), lone surrogates (no UTF-8 for them) and blank
    letters. Marks: combining marks that take no space of their own (Mn, Me: accents, variation
    selectors), kept by cleaning, since they belong to the letter before them, but no text is
    visible through them alone."""
    removed = dict.fromkeys(map(ord, BLANK_LETTERS))
    marks = []
    for plane in _PLANES:
        for cp in plane:
            ch = chr(cp)
            category = unicodedata.category(ch)
            if category in ("Cf", "Cs") or (category == "Cc" and not ch.isspace()):
                removed[cp] = None
            elif category in ("Mn", "Me"):
                marks.append(cp)
    return removed, frozenset(marks)


_INVISIBLE, _MARKS = _scan()
_WS = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Delete invisible and unstorable characters, Unicode-normalise (NFKC), turn every
    whitespace run (\\r\\n included) into one space, strip.

    NFKC folds look-alike characters (full-width letters, ligatures) so the same words tokenise the
    same way; emoji survive it (a joined emoji sequence loses its zero-width joiner). Invisible
    characters are deleted because they split words invisibly, reorder text (U+202E) or cannot be
    stored (NUL); before NFKC, so that a letter and an accent they separated are composed too,
    and cleaning twice changes nothing (tests/unit/data/test_text_properties.py). NFKC never
    makes one of them (checked over every code point by the same tests).

    Every length or "visible character" rule is checked on this cleaned text, never on the raw
    one: NFKC can make one character eighteen (U+FDFA).
    """
    text = unicodedata.normalize("NFKC", text.translate(_INVISIBLE))
    return _WS.sub(" ", text).strip()


def removed_characters() -> frozenset[int]:
    """The code points `clean_text` deletes (the API states the same set in its schema)."""
    return frozenset(_INVISIBLE)


def mark_characters() -> frozenset[int]:
    """The combining marks `has_visible` does not count (the API's schema states them too)."""
    return _MARKS


@functools.cache
def blank_characters() -> frozenset[int]:
    """The code points that show nothing once cleaned, alone: deleted ones, whitespace, marks,
    and those NFKC makes into whitespace and marks only (U+00A8 DIAERESIS is a space and a
    combining diaeresis). The API's title pattern is the complement of this set."""
    out = set(_INVISIBLE) | _MARKS | {cp for cp in range(0x3001) if chr(cp).isspace()}
    for plane in _PLANES:
        for cp in plane:
            if cp not in out and unicodedata.decomposition(chr(cp)):  # NFKC may change it
                made = unicodedata.normalize("NFKC", chr(cp))
                if all(c.isspace() or ord(c) in _MARKS for c in made):
                    out.add(cp)
    return frozenset(out)


# What no store can hold: PostgreSQL's text refuses NUL. Cleaning deletes it; what is stored as
# sent (the API's fields, a batch's items) refuses it instead, so nothing is silently changed.
UNSTORABLE_CHARACTERS = "\x00"


def has_unstorable(text: str) -> bool:
    return any(c in text for c in UNSTORABLE_CHARACTERS)


def has_visible(cleaned: str) -> bool:
    """Whether cleaned text shows anything: a character that is neither whitespace nor a
    combining mark. (Cleaning already removed what is invisible on its own.)"""
    return any(not c.isspace() and ord(c) not in _MARKS for c in cleaned)


def join_text(title: str, description: str) -> str:
    """The single string models read: the title, then the description (either alone when the
    other is empty, never a dangling separator)."""
    if not description:
        return title
    if not title:
        return description
    sep = " " if title.endswith((".", "!", "?", ":")) else ". "
    return f"{title}{sep}{description}"


def item_text(title: str, description: str | None) -> str:
    """The model's input for a raw title and description: both cleaned, then joined. Training data,
    the service, the behaviour suite and the benchmarks all build text here, so a model never
    sees text prepared differently from what it was trained on."""
    return join_text(clean_text(title), clean_text(description or ""))
