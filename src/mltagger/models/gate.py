"""The out-of-scope gate's scorer: whether an item belongs to any of the six topics at all, apart
from the topic softmax (issue 32).

A small separate text model: word (1-2) and character (3-5, inside word boundaries) TF-IDF
features, each L2-normalised, and a logistic head. It was the best in-scope signal of those
compared on the stream pool (docs/evaluation.md, "The out-of-scope gate: which signal"). It is
fitted with scikit-learn (`mltagger.training.gate`) and scored here in plain Python and numpy, so
the service stays free of the training stack (the serving-light import rule); a test holds the
two to the same numbers.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mltagger.models.modelio import GATE_FILE

_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token pattern
_SPACES = re.compile(r"\s\s+")


def word_ngrams(text: str, n_max: int = 2) -> list[str]:
    """Lower-cased word tokens of two or more characters, and their n-grams up to n_max."""
    tokens = _TOKEN.findall(text.lower())
    out = list(tokens)
    for n in range(2, n_max + 1):
        out += [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return out


def char_ngrams(text: str, n_min: int = 3, n_max: int = 5) -> list[str]:
    """Character n-grams inside word boundaries, each word padded with one space a side; a
    word shorter than n counts once, whole."""
    out: list[str] = []
    for word in _SPACES.sub(" ", text.lower()).split():
        w = f" {word} "
        for n in range(n_min, n_max + 1):
            if len(w) <= n:
                out.append(w)
                break
            out += [w[i : i + n] for i in range(len(w) - n + 1)]
    return out


@dataclass
class Block:
    """One TF-IDF block: vocabulary (term -> column), idf per column, and its analyzer."""

    analyzer: str  # "word" or "char_wb"
    ngram_range: tuple[int, int]
    vocabulary: dict[str, int]
    idf: np.ndarray

    def terms(self, text: str) -> list[str]:
        if self.analyzer == "word":
            return word_ngrams(text, self.ngram_range[1])
        return char_ngrams(text, *self.ngram_range)

    def vector(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(columns, values) of the L2-normalised sublinear TF-IDF vector of one text."""
        counts = Counter(t for t in self.terms(text) if t in self.vocabulary)
        if not counts:
            return np.zeros(0, dtype=int), np.zeros(0)
        cols = np.fromiter((self.vocabulary[t] for t in counts), dtype=int, count=len(counts))
        tf = np.fromiter((1.0 + math.log(c) for c in counts.values()), float, len(counts))
        values = tf * self.idf[cols]
        return cols, values / np.linalg.norm(values)


@dataclass
class TextGate:
    """P(in scope) of a text: sigmoid(word block . w_word + char block . w_char + b)."""

    blocks: list[Block]
    coef: list[np.ndarray]  # one weight vector per block
    intercept: float

    def in_scope(self, texts: Iterable[str]) -> np.ndarray:
        """The in-scope probability of each text (`mltagger.data.text.item_text` form)."""
        out = []
        for text in texts:
            z = self.intercept
            for block, w in zip(self.blocks, self.coef, strict=True):
                cols, values = block.vector(text)
                z += float(values @ w[cols])
            out.append(1.0 / (1.0 + math.exp(-z)))
        return np.asarray(out, dtype=float)

    def to_dict(self) -> dict:
        return {
            "kind": "tfidf",
            "intercept": self.intercept,
            "blocks": [
                {
                    "analyzer": b.analyzer,
                    "ngram_range": list(b.ngram_range),
                    # terms in column order: the vocabulary is their positions
                    "terms": sorted(b.vocabulary, key=b.vocabulary.__getitem__),
                    "idf": b.idf.tolist(),
                    "coef": w.tolist(),
                }
                for b, w in zip(self.blocks, self.coef, strict=True)
            ],
        }

    @classmethod
    def from_dict(cls, raw: dict) -> TextGate:
        if raw.get("kind") != "tfidf":
            raise ValueError(f"gate kind {raw.get('kind')!r}: this version reads tfidf")
        blocks, coef = [], []
        for b in raw["blocks"]:
            terms: Sequence[str] = b["terms"]
            if not (len(terms) == len(b["idf"]) == len(b["coef"])):
                raise ValueError("gate block: terms, idf and coef differ in length")
            blocks.append(
                Block(
                    analyzer=b["analyzer"],
                    ngram_range=(int(b["ngram_range"][0]), int(b["ngram_range"][1])),
                    vocabulary={t: i for i, t in enumerate(terms)},
                    idf=np.asarray(b["idf"], dtype=float),
                )
            )
            coef.append(np.asarray(b["coef"], dtype=float))
        return cls(blocks=blocks, coef=coef, intercept=float(raw["intercept"]))

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / GATE_FILE
        path.write_text(json.dumps(self.to_dict()))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> TextGate:
        return cls.from_dict(json.loads((Path(folder) / GATE_FILE).read_text()))
