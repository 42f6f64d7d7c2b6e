"""Micro-batching on a real exported model (the tiny BERT's ONNX fp32 export): items of 5 to 128
tokens answered in shared passes get the tag, reason and `needs_review` they get alone, and
scores within 1e-4 (the padding to the batch's longest text is masked out)."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from mltagger.models.predict import Predictor
from mltagger.serving.batching import BatchSettings, MicroBatcher
from mltagger.serving.service import prepare
from tests.conftest import make_items


def mixed_length_items(tokenizer, n: int = 48) -> list[dict]:
    """Items whose token counts spread from 5 to 128 (truncation), from the tiny vocabulary."""
    words = " ".join(it["title"] + " " + it["description"] for it in make_items()).split()
    rng = random.Random(0)
    out = []
    for k in range(n):
        size = 2 + (k * 140) // n  # words: a few to past the 128-token limit
        title = " ".join(rng.choice(words) for _ in range(max(1, size // 3)))
        out.append(prepare(title, " ".join(rng.choice(words) for _ in range(size))))
    lengths = [len(tokenizer.encode(it["text"]).ids) for it in out]
    assert min(lengths) <= 8 and max(lengths) == 128, lengths
    return out


def test_shared_passes_answer_every_item_as_alone(exported):
    folder = exported[0] / "export" / "models" / "teacher-fp32"
    predictor = Predictor(folder, threads=1)
    items = mixed_length_items(predictor.tokenizer)
    alone = [predictor.encode([it["text"]])[0] for it in items]
    passes: list[int] = []
    batcher = MicroBatcher(BatchSettings(max_batch=16), lambda n, _w: passes.append(n))
    with ThreadPoolExecutor(16) as pool:
        shared = list(pool.map(lambda it: batcher.encode(predictor, [it["text"]])[0], items))
    batcher.close()
    assert max(passes) > 1, passes  # passes were shared, or this test proves nothing
    p_alone = predictor.probabilities(np.concatenate(alone))
    p_shared = predictor.probabilities(np.concatenate(shared))
    assert np.abs(p_alone - p_shared).max() <= 1e-4
    keys = ("tag", "reason", "needs_review")
    got = [{k: d[k] for k in keys} for d in predictor.decide(items, p_shared)]
    want = [{k: d[k] for k in keys} for d in predictor.decide(items, p_alone)]
    assert got == want
