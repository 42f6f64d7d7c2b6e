"""Text as every model sees it: one cleaning (Unicode NFKC, whitespace, invisible characters)
and one way of joining title and description, used by training data, the service and the
benchmarks alike.
"""

from __future__ import annotations

import re
import unicodedata

_INVISIBLE = dict.fromkeys(map(ord, "\u200b\ufeff\u00ad"))
_WS = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Unicode-normalise (NFKC), turn every whitespace run (\\r\\n included) into one space, strip.

    NFKC folds look-alike characters (full-width letters, ligatures) so the same words tokenise the
    same way; emoji survive it. Zero-width spaces and soft hyphens are removed because they split
    words invisibly; before NFKC, so that a letter and an accent they separated are composed too
    and cleaning twice changes nothing (tests/unit/data/test_text_properties.py).
    """
    text = unicodedata.normalize("NFKC", text.translate(_INVISIBLE))
    return _WS.sub(" ", text).strip()


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
