"""Occlusion on a scorer whose answer is known: the probability of tag 0 rises with one word
("graph"), so occlusion must rank that word first, and the words it tries are the ones the
module's docstring promises (no stop words, one entry per word type, only the visible ones)."""

from __future__ import annotations

import numpy as np

from mltagger.models.explain import find_words, occlusion, rank


def graph_scorer(texts):
    """Two classes; p(class 0) = 0.9 with the word "graph", 0.3 without; "node" adds 0.05."""
    out = []
    for t in texts:
        low = t.lower().split()
        p = (0.9 if "graph" in low else 0.3) + (0.05 if "node" in low else 0.0)
        out.append([p, 1.0 - p])
    return np.array(out)


def test_occlusion_ranks_the_word_the_score_depends_on_first():
    words = find_words("Node classification on a graph with message passing")
    got = occlusion(graph_scorer, words)
    assert got.target == 0
    assert got.top(2)[0][0] == "graph"
    assert np.isclose(got.top(2)[0][1], 0.6)
    assert got.top(2)[1][0] == "node"
    assert np.isclose(got.probability, 0.95)
    # every other word moves nothing
    assert sorted(np.round(got.importance, 6))[:-2] == [0.0] * (len(words.names) - 2)


def test_a_repeated_word_is_one_word_and_removing_it_removes_every_copy():
    words = find_words("Graph nets. A survey of graph methods for the graph")
    assert words.names == ["graph", "nets", "survey", "methods"]
    assert len(words.spans[0]) == 3
    assert words.without([0]) == "nets. A survey of methods for the"
    assert occlusion(graph_scorer, words).order[0] == 0


def test_stop_words_and_words_past_the_visible_part_are_not_tried():
    text = "The graph of the model and some late words"
    words = find_words(text, visible_chars=text.index("late"))
    assert words.names == ["graph", "model"]
    assert find_words(text, max_words=1).names == ["graph"]


def test_only_keeps_the_chosen_words_in_text_order():
    words = find_words("Forecasting energy demand with transformers")
    assert words.only([3, 0]) == "forecasting transformers"


def test_rank_puts_the_largest_drop_first_and_keeps_text_order_on_ties():
    assert rank(np.array([0.1, 0.5, 0.1, -0.2])) == [1, 0, 2, 3]
