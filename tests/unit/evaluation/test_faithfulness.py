"""AOPC and sufficiency on a scorer whose answer is known: the right ranking beats random words,
the reversed one does not, and an item without words gives nothing."""

from __future__ import annotations

import numpy as np

from mltagger.evaluation.faithfulness import faithfulness, summarise
from mltagger.models.explain import find_words, occlusion
from tests.unit.models.test_explain import graph_scorer

TEXT = "Node classification on a graph with message passing and many more words here"


def test_occlusion_ranking_beats_random_and_the_reversed_ranking_does_not():
    words = find_words(TEXT)
    exp = occlusion(graph_scorer, words)
    good = faithfulness(graph_scorer, words, exp.order, 0, np.random.default_rng(0))
    bad = faithfulness(graph_scorer, words, exp.order[::-1], 0, np.random.default_rng(0))
    assert good.beats_random and not bad.beats_random
    # "graph" is removed at every k: the drop is 0.6 (0.65 once "node" goes too, k >= 2)
    assert np.isclose(good.aopc, (0.6 + 4 * 0.65) / 5)
    assert good.sufficiency > good.random_sufficiency
    assert np.isclose(bad.aopc, 0.0)


def test_the_random_draws_are_seeded():
    words = find_words(TEXT)
    a = faithfulness(graph_scorer, words, [0, 1], 0, np.random.default_rng(3))
    b = faithfulness(graph_scorer, words, [0, 1], 0, np.random.default_rng(3))
    assert a == b


def test_a_text_without_words_gives_none_and_counts_as_not_beating_random():
    words = find_words("the of and")
    assert faithfulness(graph_scorer, words, [], 0, np.random.default_rng(0)) is None
    good = faithfulness(graph_scorer, find_words(TEXT), [2, 0], 0, np.random.default_rng(0))
    got = summarise([good, None])
    assert got["items"] == 2 and got["items_with_words"] == 1
    assert got["beats_random_share"] == 0.5


def test_explain_eval_refuses_a_folder_that_is_no_model_in_one_line(tmp_path, capsys):
    import pytest

    from mltagger.evaluation.explain_eval import main

    with pytest.raises(SystemExit) as stop:
        main(["--model", str(tmp_path), "--no-ig"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith(
        f"{tmp_path} is not a model folder (no labels.json); run make train / make export"
    )
