"""Properties of the one text cleaning and the duplicate key, over generated text (Hypothesis).

Every model input and every duplicate decision goes through these functions, so what holds for
a few hand-picked strings must hold for any string a user can send: cleaning twice changes
nothing, leaves no whitespace runs or edges, and keeps visible text; the duplicate key ignores
exactly case, accents, punctuation and spacing, and the content hash follows the key.
"""

from __future__ import annotations

import re
import string
import unicodedata

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mltagger.data.duplicates import content_hash, dedup_key
from mltagger.data.text import (
    BLANK_LETTERS,
    blank_characters,
    clean_text,
    has_visible,
    item_text,
    join_text,
    mark_characters,
    removed_characters,
)

FAST = settings(max_examples=100, deadline=None)

# Any text, surrogates aside (they cannot be encoded, no request or file carries them), and
# texts dense in what normalisation acts on: letters, accents and invisible characters between
# them, and upper-case look-alikes (mathematical and black-letter capitals, symbols).
ANY_TEXT = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=60),
    st.text(st.sampled_from("aenAEN \u0301\u0303\u0308\u0327\u200b\ufeff\u00ad"), max_size=20),
    st.text(st.characters(whitelist_categories=("Lu", "Lt", "So", "Nl")), max_size=20),
)
# Whitespace of every kind the cleaning folds, and the invisible characters it drops.
SPACES = st.text(st.sampled_from(" \t\r\n\x0b\x0c\u00a0\u2003\u3000\u2028\u200b\ufeff\u00ad"))
VISIBLE = st.characters(categories=("L", "N", "P", "S")).filter(
    lambda c: ord(c) not in blank_characters()
)
# Words of letters and digits (accented ones too) and separators of punctuation and spacing,
# as dedup_key defines them (\W: anything but letters, digits and "_").
LETTERS = string.ascii_letters + string.digits + "éèàçñöüåøßÉÀÇÑÖÜÅØ"
WORDS = st.lists(st.text(st.sampled_from(LETTERS), min_size=1, max_size=8), min_size=1, max_size=6)
SEPARATORS = st.text(
    st.sampled_from(" \t\n.,;:!?-—–…()[]{}'\"«»“”’/\\|*&%$#@+=<>~^`·¡¿"), min_size=1, max_size=4
)
HEX64 = re.compile(r"[0-9a-f]{64}")


@FAST
@given(ANY_TEXT)
@example("e\u00ad\u0301")  # a soft hyphen between a letter and its accent (it was not idempotent)
def test_cleaning_is_idempotent_and_leaves_no_whitespace_runs_or_edges(text):
    cleaned = clean_text(text)
    assert clean_text(cleaned) == cleaned
    assert unicodedata.is_normalized("NFKC", cleaned)
    assert cleaned == cleaned.strip()
    assert "  " not in cleaned
    assert all(c == " " or not c.isspace() for c in cleaned)  # tabs, newlines... became " "
    assert not {ord(c) for c in cleaned} & removed_characters()


@FAST
@given(SPACES, st.lists(VISIBLE, min_size=1, max_size=10), SPACES)
def test_visible_text_survives_cleaning_and_blank_text_does_not(before, chars, after):
    text = before + "".join(chars) + after
    assert has_visible(clean_text(text))  # the validation calls a title without one "empty"
    assert clean_text(before + after) == ""


def test_the_removed_and_mark_sets_cover_every_code_point_and_nfkc_makes_none():
    """What `clean_text` deletes (controls, format characters, surrogates) and what
    `has_visible` skips (Mn, Me marks) is computed over Unicode's planes 0, 1 and 14 at import;
    checked here over all 1.1M code points. NFKC never turns a kept character into a deleted
    one, so cleaning deletes before NFKC and is still idempotent."""
    import sys

    removed, marks = removed_characters(), mark_characters()
    missed = []
    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        category = unicodedata.category(ch)
        deleted = category in ("Cf", "Cs") or (category == "Cc" and not ch.isspace())
        if deleted != (cp in removed) and ch not in BLANK_LETTERS:
            missed.append(hex(cp))
        if (category in ("Mn", "Me")) != (cp in marks):
            missed.append(hex(cp))
        if cp not in removed and category != "Cs":
            made = unicodedata.normalize("NFKC", ch)
            if made != ch and any(ord(c) in removed for c in made):
                missed.append(f"NFKC {cp:x}")
    assert missed == []


@FAST
@given(ANY_TEXT, ANY_TEXT)
@example("", "a description")  # no title: the text is the description, not ". a description"
def test_item_text_is_clean_and_reads_title_then_description(title, description):
    text = item_text(title, description)
    assert clean_text(text) == text  # a model never sees uncleaned text
    t, d = clean_text(title), clean_text(description)
    assert text.startswith(t) and text.endswith(d)
    assert text == join_text(t, d)
    if not d:
        assert text == t
    if not t:
        assert text == d
    if t and d:
        assert text in (f"{t} {d}", f"{t}. {d}")


# What the key makes of each letter of LETTERS: lower case, no accent ("ß" folds to "ss").
FOLDED = {c: c.lower() for c in string.ascii_letters + string.digits} | {
    **dict.fromkeys("éèÉ", "e"),
    **dict.fromkeys("àåÀÅ", "a"),
    **dict.fromkeys("çÇ", "c"),
    **dict.fromkeys("ñÑ", "n"),
    **dict.fromkeys("öÖ", "o"),
    **dict.fromkeys("üÜ", "u"),
    **dict.fromkeys("øØ", "ø"),
    "ß": "ss",
}


def spelled(words: list[str], seps: list[str], case) -> str:
    """The words with separators before, between and after them, each letter cased by `case`."""
    text = seps[0]
    for word, sep in zip(words, seps[1:], strict=True):
        text += "".join(case(c) for c in word) + sep
    return text


@FAST
@given(WORDS, st.data())
def test_dedup_key_is_the_folded_words_whatever_the_case_punctuation_or_spacing(words, data):
    expected = " ".join("".join(FOLDED[c] for c in w) for w in words)
    seps = data.draw(st.lists(SEPARATORS, min_size=len(words) + 1, max_size=len(words) + 1))
    case = data.draw(st.sampled_from([str.lower, str.upper, str.swapcase]))
    assert dedup_key(spelled(words, [" "] * (len(words) + 1), lambda c: c)) == expected
    assert dedup_key(spelled(words, seps, case)) == expected
    # The key keeps every word (folded), so texts whose folded words differ never share one.
    other = data.draw(WORDS)
    assert dedup_key(" ".join(other)) == " ".join("".join(FOLDED[c] for c in w) for w in other)


@FAST
@given(ANY_TEXT)
@example("ℌello")  # NFKD turns the black-letter H into a capital H
@example("𝐀bc")  # so do the mathematical letters
def test_dedup_key_is_a_fixed_point_without_upper_case(text):
    key = dedup_key(text)
    assert dedup_key(key) == key
    assert key == key.strip() and "  " not in key
    assert key.casefold() == key  # case-insensitive: no case left to fold


@FAST
@given(ANY_TEXT, ANY_TEXT, ANY_TEXT, ANY_TEXT)
def test_content_hash_is_stable_and_equal_exactly_when_the_keys_are(t1, d1, t2, d2):
    h1, h2 = content_hash(t1, d1), content_hash(t2, d2)
    assert HEX64.fullmatch(h1) and h1 == content_hash(t1, d1)
    assert (h1 == h2) == (dedup_key(f"{t1} {d1}") == dedup_key(f"{t2} {d2}"))


@FAST
@given(WORDS, WORDS, SEPARATORS)
def test_content_hash_ignores_case_punctuation_and_spacing(title, description, noise):
    t, d = " ".join(title), " ".join(description)
    assert content_hash(t, d) == content_hash(f"{noise}{t.upper()}{noise}", f"{d}{noise}")
