"""Integrated gradients on the tiny BERT fixture (a real Hugging Face classifier, random
weights): the attributions add up to the logit's change from the baseline (completeness), the
explained class is the top one, and the token attributions are summed into the right words."""

from __future__ import annotations

import numpy as np
import pytest

from mltagger.models.explain import find_words
from mltagger.models.integrated import integrated_gradients, word_scores

TEXT = "Graph networks forecast demand. A survey of graph methods for time series"


@pytest.fixture(scope="module")
def classifier(tiny_model_dir):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(1)
    # a wide initialisation, so the logits move visibly with the input
    config = BertConfig.from_pretrained(tiny_model_dir, num_labels=7, initializer_range=0.5)
    model = BertForSequenceClassification(config).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def test_attributions_add_up_to_the_logit_change_from_the_baseline(classifier):
    model, tokenizer = classifier
    attr = integrated_gradients(model, tokenizer, TEXT, max_length=64, steps=64)
    change = attr.logit - attr.baseline_logit
    assert abs(change) > 1e-3  # otherwise the check below says nothing
    assert abs(attr.scores.sum() - change) <= 0.05 * abs(change) + 1e-4
    import torch

    with torch.no_grad():
        logits = model(**tokenizer(TEXT, return_tensors="pt")).logits[0]
    assert attr.target == int(logits.argmax())
    assert np.isclose(attr.logit, float(logits[attr.target]), atol=1e-4)


def test_a_chosen_class_is_explained_and_tokens_are_summed_into_their_words(classifier):
    model, tokenizer = classifier
    attr = integrated_gradients(model, tokenizer, TEXT, max_length=64, target=3, steps=8)
    assert attr.target == 3
    words = find_words(TEXT)
    scores = word_scores(attr, words)
    graph = words.names.index("graph")
    # "graph" occurs twice: its score is the sum of its two tokens' attributions
    tokens = [k for k, (s, e) in enumerate(attr.offsets) if e > s and TEXT[s:e].lower() == "graph"]
    assert len(tokens) == 2
    assert np.isclose(scores[graph], attr.scores[tokens].sum())
    # the special tokens and the stop words belong to no word
    assert abs(scores.sum()) <= abs(attr.scores).sum()
