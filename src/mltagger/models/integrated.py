"""Integrated gradients in torch, for the reports (`mltagger explain-eval`): each word's share of
the explained tag's logit, from the gradients along a straight path from a baseline input to the
text's own input embeddings.

Written here in a few lines of torch rather than taken from captum (not installed; the method
is short). The path runs over the word embeddings only (positions and segments are the model's
own at every step); the baseline puts the [PAD] embedding at every token but [CLS] and [SEP].
The token attributions (embedding difference times the path-mean gradient, summed over the
hidden size; midpoint rule, `steps` points in one batch) are summed into the same words that
occlusion removes (`models.explain.find_words`), so the two rankings are compared word for word.
Completeness (the attributions sum to logit(text) - logit(baseline)) holds up to the
discretisation error; `ig_words` returns that gap so a report can show it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mltagger.models.explain import Words

STEPS = 24


@dataclass
class TokenAttribution:
    """Per-token attributions to one class's logit, with each token's character offsets."""

    target: int
    scores: np.ndarray  # (tokens,)
    offsets: list[tuple[int, int]]
    logit: float  # the target's logit on the text
    baseline_logit: float  # ... and on the baseline


def integrated_gradients(
    model, tokenizer, text: str, max_length: int, target: int | None = None, steps: int = STEPS
) -> TokenAttribution:
    """IG of `target` (None: the top class on the text) for a Hugging Face sequence classifier
    and its fast tokenizer."""
    import torch

    enc = tokenizer(
        text,
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_tensors="pt",
    )
    ids, mask = enc["input_ids"], enc["attention_mask"]
    embed = model.get_input_embeddings()
    with torch.no_grad():
        x = embed(ids)  # (1, tokens, hidden)
        pad = embed(torch.tensor([[tokenizer.pad_token_id or 0]]))
        special = enc["special_tokens_mask"][0].bool()[None, :, None]
        x0 = torch.where(special, x, pad.expand_as(x))
        ends = model(inputs_embeds=torch.cat([x, x0]), attention_mask=mask.repeat(2, 1)).logits
    if target is None:
        target = int(ends[0].argmax())
    alphas = (torch.arange(steps, dtype=x.dtype) + 0.5) / steps
    path = (x0 + alphas[:, None, None] * (x - x0)).detach().requires_grad_(True)
    logits = model(inputs_embeds=path, attention_mask=mask.repeat(steps, 1)).logits
    (grad,) = torch.autograd.grad(logits[:, target].sum(), path)
    scores = ((x - x0)[0] * grad.mean(dim=0)).sum(dim=-1)
    return TokenAttribution(
        target,
        scores.detach().float().numpy(),
        [tuple(map(int, o)) for o in enc["offset_mapping"][0].tolist()],
        float(ends[0, target]),
        float(ends[1, target]),
    )


def word_scores(attr: TokenAttribution, words: Words) -> np.ndarray:
    """The token attributions summed into the words of `words` (a token belongs to the word
    occurrence its characters fall in; tokens of no listed word count for none)."""
    out = np.zeros(len(words.names))
    for i, occurrences in enumerate(words.spans):
        for span in occurrences:
            for (start, end), score in zip(attr.offsets, attr.scores, strict=True):
                if end > start and start >= span.start and end <= span.end:
                    out[i] += float(score)
    return out


def ig_words(
    model, tokenizer, words: Words, max_length: int, target: int | None = None, steps: int = STEPS
) -> tuple[int, np.ndarray, float]:
    """(target, each word's attribution, the completeness gap |sum - (logit - baseline)| over
    all tokens) for the text of `words`."""
    attr = integrated_gradients(model, tokenizer, words.text, max_length, target, steps)
    gap = abs(float(attr.scores.sum()) - (attr.logit - attr.baseline_logit))
    return attr.target, word_scores(attr, words), gap
