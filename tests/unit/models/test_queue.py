"""The review-queue strategies: what each puts first, and the rules every strategy keeps."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mltagger.core.errors import UserError
from mltagger.models import queue

P = np.array(
    [
        [0.90, 0.05, 0.05],  # 0: confident
        [0.50, 0.45, 0.05],  # 1: a near tie
        [0.40, 0.30, 0.30],  # 2: least confident, wider margin than 1
        [0.70, 0.29, 0.01],  # 3
    ]
)
AGES = np.array([1.0, 2.0, 3.0, 4.0])


def test_least_confident_and_breaking_ties_differ_where_they_should():
    assert list(queue.order("least_confident", P, AGES)) == [2, 1, 3, 0]
    assert list(queue.order("breaking_ties", P, AGES)) == [1, 2, 3, 0]
    assert list(queue.order("oldest", P, AGES)) == [3, 2, 1, 0]


def test_margin_is_top_minus_second():
    assert queue.margin(P) == pytest.approx([0.85, 0.05, 0.10, 0.41])
    assert queue.margin(np.array([[1.0]])) == pytest.approx([1.0])


def test_ties_go_to_the_item_that_waited_longer():
    same = np.tile([[0.5, 0.5]], (3, 1))
    assert list(queue.order("breaking_ties", same, np.array([1.0, 5.0, 3.0]))) == [1, 2, 0]


def test_overdue_items_go_first_oldest_first_under_every_strategy():
    ages = np.array([10.0, 2.0, 30.0, 4.0])
    for name in queue.STRATEGIES:
        got = queue.order(name, P, ages, max_age=10.0, embeddings=np.eye(4), label_counts={0: 5})
        assert list(got[:2]) == [2, 0], name


def test_rare_tags_lifts_items_whose_top_tag_has_few_labels():
    p = np.array([[0.55, 0.45, 0.0], [0.0, 0.58, 0.42]])
    ages = np.zeros(2)
    assert list(queue.order("breaking_ties", p, ages)) == [0, 1]
    # class 0 has many labels, class 1 none: the class-1 item comes first despite its margin
    got = queue.order("rare_tags", p, ages, label_counts={0: 99, 1: 0})
    assert list(got) == [1, 0]
    assert queue.tag_weights([99, 0, 3], 3) == pytest.approx([0.1, 1.0, 0.5])


def test_diverse_ties_skips_a_copy_of_an_item_already_picked():
    p = np.array([[0.5, 0.5], [0.51, 0.49], [0.6, 0.4], [0.9, 0.1]])
    emb = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.7, 0.7]])
    ages = np.zeros(4)
    assert list(queue.order("breaking_ties", p, ages, k=2)) == [0, 1, 2, 3]
    # 1 is nearly the same text as 0: the batch takes 2 and 3 first, and 1 waits
    assert list(queue.order("diverse_ties", p, ages, embeddings=emb, k=2)) == [0, 2, 3, 1]
    with pytest.raises(UserError, match="embeddings"):
        queue.order("diverse_ties", p, ages)


def test_the_random_share_is_seeded_and_a_longer_page_starts_with_the_shorter_one():
    n = 400
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=n)
    ages = np.zeros(n)
    plain = queue.order("least_confident", p, ages, k=n)
    mixed = queue.order("least_confident", p, ages, k=n, random_share=0.25, seed=3)
    assert list(mixed) == list(queue.order("least_confident", p, ages, k=n, random_share=0.25,
                                           seed=3))  # fmt: skip
    assert sorted(mixed) == list(range(n))
    # about a quarter of the positions are random picks: those out of the plain ranking's turn
    rank = {int(i): r for r, i in enumerate(plain)}
    taken: set[int] = set()
    off_turn = 0
    for i in mixed[:200]:
        expected = next(j for j in plain if int(j) not in taken)
        off_turn += int(i) != int(expected)
        taken.add(int(i))
    assert 30 <= off_turn <= 70
    assert rank[int(mixed[0])] >= 0
    # a small page (a day's budget of 8) gets random picks too, on some days
    small = [queue.order("least_confident", p, ages, k=8, random_share=0.1, seed=d)[:8]
             for d in range(40)]  # fmt: skip
    assert sum(list(s) != list(plain[:8]) for s in small) >= 10
    # pages agree: the first 10 of a k=10 order are the first 10 of the k=50 one
    for name in ("least_confident", "diverse_ties"):
        emb = rng.normal(size=(n, 4))
        short = queue.order(name, p, ages, k=10, random_share=0.3, seed=5, embeddings=emb)
        long = queue.order(name, p, ages, k=50, random_share=0.3, seed=5, embeddings=emb)
        assert list(short[:10]) == list(long[:10]), name
    assert list(mixed) != list(plain)


def test_bad_names_and_shares_are_one_line_errors():
    with pytest.raises(UserError, match="unknown review strategy 'smart'; one of oldest, "):
        queue.order("smart", P, AGES)
    with pytest.raises(UserError, match=r"random_share must be in \[0, 1\)"):
        queue.order("oldest", P, AGES, random_share=1.0)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 25),
    name=st.sampled_from(sorted(queue.STRATEGIES)),
    share=st.sampled_from([0.0, 0.1, 0.5]),
    k=st.integers(0, 30),
    seed=st.integers(0, 5),
)
def test_every_order_is_a_permutation_with_overdue_items_first(n, name, share, k, seed):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(4), size=n)
    ages = rng.integers(0, 10, size=n).astype(float)
    got = queue.order(
        name,
        p,
        ages,
        max_age=8.0,
        random_share=share,
        embeddings=rng.normal(size=(n, 5)),
        label_counts={1: 3},
        k=k,
        seed=seed,
    )
    assert sorted(got.tolist()) == list(range(n))
    overdue = int((ages >= 8).sum())
    assert all(ages[i] >= 8 for i in got[:overdue])


def test_labels_stop_paying_when_100_labels_leave_coverage_flat():
    rising = [{"coverage": 0.1 * k, "labels": 50 * k} for k in range(6)]
    assert queue.stopping_point(rising) is None
    flat = rising + [{"coverage": 0.505, "labels": 300 + 50 * k} for k in range(1, 4)]
    # after 250 labels (coverage 0.5) the next 100 labels bring 0.005: stopped there
    assert queue.stopping_point(flat) == 250
    short = [{"coverage": 0.5, "labels": 250}, {"coverage": 0.5, "labels": 300}]
    assert queue.stopping_point(short) is None  # not yet 100 labels after the flat start
    assert queue.stopping_point([]) is None


@pytest.mark.parametrize("ours,theirs", [("least_confident", "LeastConfidence"),
                                         ("breaking_ties", "BreakingTies")])  # fmt: skip
def test_the_uncertainty_orders_pick_what_small_text_picks(ours, theirs):
    """small-text (the maintained library) as the oracle: the same top-n on the same scores."""
    import small_text

    rng = np.random.default_rng(11)
    p = rng.dirichlet(np.ones(5), size=60)

    class Scores:  # small-text asks its classifier for probabilities of the whole dataset
        def predict_proba(self, _dataset):
            return p

    picked = getattr(small_text, theirs)().query(
        Scores(), None, np.arange(60), np.array([], dtype=int), np.array([], dtype=int), n=12
    )
    assert set(queue.order(ours, p, np.zeros(60))[:12].tolist()) == set(picked.tolist())
