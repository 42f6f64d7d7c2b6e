"""Why a model gave its tag: the words whose removal lowers the tag's probability most (occlusion).

Occlusion needs nothing but a scorer (texts in, class probabilities out), so it explains the
shipped ONNX export exactly as the service runs it, in one batch per item: the text itself and one
copy per word with that word removed. What is explained, so that one item stays one batch:

- a *word* is a lower-cased word type: removing it removes every occurrence, so a word repeated
  in the title and the description counts once;
- stop words ("the", "for", ...) and one-character words are not tried;
- only words the model can see are tried: the model reads the first `max_length` tokens, and a
  word past them cannot move its score;
- at most `max_words` words, the first ones seen (the title comes first).

Importance is the drop in the probability of the explained tag (the model's top tag on the whole
text; it can be negative: the word spoke against the tag). `mltagger explain-eval` measures how
faithful the ranking is (AOPC against random words).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

Scorer = Callable[[Sequence[str]], np.ndarray]  # texts -> probabilities (n, classes)

# Letters or digits, with inner - _ . + # kept (so "pytorch-lightning", "c++", "f#" stay one word).
WORD = re.compile(r"[^\W_](?:[\w.+#-]*[\w+#])?")
_SPACES = re.compile(r"\s{2,}")
# Function words: removing them says little about a topic, and each one costs a forward pass.
STOP_WORDS = frozenset(
    """
    a about above after again all also am an and any are as at be been before being below
    between both but by can could did do does doing down during each few for from further
    had has have having he her here hers him his how i if in into is it its itself just me
    more most my no nor not now of off on once only or other our ours out over own same she
    should so some such than that the their theirs them then there these they this those
    through to too under until up very was we were what when where which while who whom why
    will with would you your via using use used based new
    """.split()  # noqa: SIM905 (a word list reads better as text)
)
MAX_WORDS = 48


@dataclass(frozen=True)
class Span:
    """One occurrence of a word in the text: [start, end) in characters."""

    start: int
    end: int


@dataclass
class Words:
    """The words of one text that an explanation may remove, each with its occurrences."""

    text: str
    names: list[str]  # lower-cased word types, in order of first occurrence
    spans: list[list[Span]]  # the occurrences of each word

    def without(self, drop: Sequence[int]) -> str:
        """The text with every occurrence of the words `drop` (indices into names) removed."""
        cut = sorted((s.start, s.end) for i in drop for s in self.spans[i])
        parts, last = [], 0
        for start, end in cut:
            parts.append(self.text[last:start])
            last = end
        parts.append(self.text[last:])
        return _SPACES.sub(" ", "".join(parts)).strip()

    def only(self, keep: Sequence[int]) -> str:
        """Only the words `keep`, in the order they first appear (sufficiency)."""
        return " ".join(self.names[i] for i in sorted(keep))


def find_words(text: str, visible_chars: int | None = None, max_words: int = MAX_WORDS) -> Words:
    """The words of `text` worth removing: not stop words, longer than one character, starting
    before `visible_chars` (where the model's truncation ends; None: all), at most `max_words`."""
    names: list[str] = []
    spans: list[list[Span]] = []
    index: dict[str, int] = {}
    for m in WORD.finditer(text):
        word = m.group().lower()
        if len(word) < 2 or word in STOP_WORDS:
            continue
        if word in index:
            spans[index[word]].append(Span(m.start(), m.end()))
            continue
        if (visible_chars is not None and m.start() >= visible_chars) or len(names) >= max_words:
            continue
        index[word] = len(names)
        names.append(word)
        spans.append([Span(m.start(), m.end())])
    return Words(text, names, spans)


@dataclass
class Explanation:
    """The explained tag (index into the model's labels), its probability on the whole text, and
    each word's importance (the drop when it is removed), highest first."""

    target: int
    probability: float
    words: Words
    importance: np.ndarray  # one per word of `words`, in the order of words.names
    order: list[int] = field(default_factory=list)  # word indices, most important first

    def top(self, k: int) -> list[tuple[str, float]]:
        return [(self.words.names[i], float(self.importance[i])) for i in self.order[:k]]


def rank(importance: np.ndarray) -> list[int]:
    """Word indices by importance, highest first; ties keep text order (a stable sort)."""
    return [int(i) for i in np.argsort(-np.asarray(importance, dtype=np.float64), kind="stable")]


def occlusion(score: Scorer, words: Words, target: int | None = None) -> Explanation:
    """One batch: the whole text, then the text without each word. `target` None: the tag the
    model ranks first on the whole text."""
    texts = [words.text] + [words.without([i]) for i in range(len(words.names))]
    probs = np.asarray(score(texts), dtype=np.float64)
    if target is None:
        target = int(np.argmax(probs[0]))
    base = float(probs[0, target])
    importance = base - probs[1:, target]
    return Explanation(target, base, words, importance, rank(importance))


def visible_chars(tokenizer, text: str, max_length: int) -> int | None:
    """Where the model's truncation ends in `text` (characters), from the tokenizer's offsets:
    a `tokenizers.Tokenizer` (the export's) or a fast Hugging Face tokenizer (torch folders).
    None when the whole text fits."""
    if hasattr(tokenizer, "encode_batch"):  # tokenizers.Tokenizer: truncation is configured on it
        enc = tokenizer.encode(text)
        ends = [end for _, end in enc.offsets if end]
        full = not enc.overflowing
    else:
        enc = tokenizer(text, truncation=True, max_length=max_length, return_offsets_mapping=True)
        ends = [end for _, end in enc["offset_mapping"] if end]
        full = len(tokenizer(text)["input_ids"]) <= max_length
    if full or not ends:
        return None
    return max(ends)
