"""Naming clusters: class-based TF-IDF keywords and a kebab-case name made from them.

c-TF-IDF treats all the texts of one cluster as one document: a term scores high for a cluster
when it is frequent there (term frequency within the cluster, normalised by the cluster's length)
and rare across clusters (idf = log(1 + mean words per cluster / the term's count over all
clusters)). Ordinary TF-IDF over single items would reward words that are rare in one title;
here a keyword must be shared by the cluster, which is what a tag name should be.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

# Words every ML item uses: they say nothing about which subject a cluster is.
DOMAIN_STOP_WORDS = (
    "ai", "based", "data", "deep", "framework", "learning", "library", "machine", "model",
    "models", "open", "python", "source", "tool", "toolkit", "using", "package", "implementation",
)  # fmt: skip


def class_tfidf(
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    top_k: int = 8,
    ngram_range: tuple[int, int] = (1, 2),
    min_df: int = 2,
) -> dict[int, list[str]]:
    """The `top_k` keywords of each cluster label (noise, -1, takes part in the idf so its words
    are not mistaken for a cluster's own, but gets no keywords)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

    labels = np.asarray(labels)
    classes = sorted({int(c) for c in labels})
    docs = [" ".join(t for t, c in zip(texts, labels, strict=True) if c == k) for k in classes]
    vec = CountVectorizer(
        stop_words=sorted(ENGLISH_STOP_WORDS | set(DOMAIN_STOP_WORDS)),
        ngram_range=ngram_range,
        min_df=1,
        token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z0-9+-]+\b",
    )
    counts = vec.fit_transform(docs).toarray().astype(float)
    # min_df over items, not over the per-cluster documents: a keyword must occur in that many
    # items of the window, so one odd title cannot name a cluster.
    item_df = (vec.transform(texts) > 0).sum(axis=0).A1
    counts[:, item_df < min_df] = 0.0
    terms = vec.get_feature_names_out()
    scores = c_tfidf_scores(counts)
    out: dict[int, list[str]] = {}
    for row, k in enumerate(classes):
        if k < 0:
            continue
        order = np.argsort(-scores[row], kind="stable")
        out[k] = [str(terms[j]) for j in order[:top_k] if scores[row, j] > 0]
    return out


def c_tfidf_scores(counts: np.ndarray) -> np.ndarray:
    """c-TF-IDF of a clusters x terms count matrix: tf (counts over the cluster's words) times
    log(1 + mean words per cluster / the term's total count)."""
    counts = np.asarray(counts, dtype=float)
    words = counts.sum(axis=1, keepdims=True)
    tf = counts / np.maximum(words, 1.0)
    total = counts.sum(axis=0)
    idf = np.log1p(words.mean() / np.maximum(total, 1.0))
    return tf * idf[None, :]


def kebab_name(keywords: Sequence[str], max_words: int = 3) -> str:
    """A tag-like name from the top keywords: their words in order, each once, at most
    `max_words`, lower case joined by hyphens ("recommender systems", "ranking" ->
    "recommender-systems-ranking"). "unnamed" when there are no keywords."""
    words: list[str] = []
    for kw in keywords:
        for w in re.findall(r"[a-z0-9]+", kw.lower()):
            if w not in words and len(words) < max_words:
                words.append(w)
    return "-".join(words) or "unnamed"
