"""Whether an explanation's top words are the words the model needs: AOPC and sufficiency against
random words, one item at a time (what `mltagger explain-eval` averages).

- Deletion (AOPC, the area over the perturbation curve): for k = 1..5, the drop in the explained
  tag's probability when the top k words are removed, averaged over k. The same for `draws`
  random sets of k words (seeded), averaged over the draws. An item *beats random* when its top
  words' AOPC is higher than the random words' AOPC.
- Sufficiency: the tag's probability on a text of only the top k words, against only k random
  words, averaged over k the same way (higher: the top words alone carry the tag).

An item with fewer words than k uses all of them for that k, so an item with a single word ties
with random at every k and never beats it: the share that beats random is over every item, these
included. Every text of one item is scored in one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from mltagger.models.explain import Scorer, Words

KS = (1, 2, 3, 4, 5)
DRAWS = 10


@dataclass
class Faithfulness:
    """One item's figures (probabilities of the explained tag)."""

    words: int
    aopc: float
    random_aopc: float
    sufficiency: float
    random_sufficiency: float

    @property
    def beats_random(self) -> bool:
        return self.aopc > self.random_aopc

    def to_dict(self) -> dict:
        return asdict(self) | {"beats_random": self.beats_random}


def random_sets(n: int, ks: Sequence[int], draws: int, rng: np.random.Generator) -> list:
    """For each k, `draws` random sets of min(k, n) word indices (without repetition)."""
    return [[rng.choice(n, min(k, n), replace=False).tolist() for _ in range(draws)] for k in ks]


def faithfulness(
    score: Scorer,
    words: Words,
    order: Sequence[int],
    target: int,
    rng: np.random.Generator,
    ks: Sequence[int] = KS,
    draws: int = DRAWS,
) -> Faithfulness | None:
    """AOPC and sufficiency of the ranking `order` (word indices, most important first) for the
    class `target`, against random words; None when the text has no word to remove."""
    n = len(words.names)
    if n == 0:
        return None
    randoms = random_sets(n, ks, draws, rng)
    tops = [list(order[: min(k, n)]) for k in ks]
    texts = [words.text]
    for make in (words.without, words.only):
        for top, drawn in zip(tops, randoms, strict=True):
            texts.append(make(top))
            texts.extend(make(d) for d in drawn)
    p = np.asarray(score(texts), dtype=np.float64)[:, target]
    per_k = 1 + draws
    deletion = p[1 : 1 + len(ks) * per_k].reshape(len(ks), per_k)
    keeping = p[1 + len(ks) * per_k :].reshape(len(ks), per_k)
    return Faithfulness(
        words=n,
        aopc=float(np.mean(p[0] - deletion[:, 0])),
        random_aopc=float(np.mean(p[0] - deletion[:, 1:].mean(axis=1))),
        sufficiency=float(np.mean(keeping[:, 0])),
        random_sufficiency=float(np.mean(keeping[:, 1:].mean(axis=1))),
    )


def summarise(rows: Sequence[Faithfulness | None]) -> dict:
    """The figures over items: the share that beats random (over every item; an item without
    words counts as not beating it), mean AOPC and sufficiency, top words and random ones."""
    got = [r for r in rows if r is not None]
    if not got:
        return {"items": len(rows), "items_with_words": 0}
    mean = lambda key: float(np.mean([getattr(r, key) for r in got]))  # noqa: E731
    return {
        "items": len(rows),
        "items_with_words": len(got),
        "beats_random_share": sum(r.beats_random for r in got) / len(rows),
        "beats_random_share_2plus_words": _share([r for r in got if r.words >= 2]),
        "aopc": mean("aopc"),
        "random_aopc": mean("random_aopc"),
        "sufficiency": mean("sufficiency"),
        "random_sufficiency": mean("random_sufficiency"),
        "sufficiency_beats_random_share": sum(r.sufficiency > r.random_sufficiency for r in got)
        / len(rows),
    }


def _share(rows: Sequence[Faithfulness]) -> float | None:
    return sum(r.beats_random for r in rows) / len(rows) if rows else None
