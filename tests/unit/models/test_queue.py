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


# Found by mutating mltagger.models.queue (docs/testing.md): each test below pins a rule that a
# surviving mutant broke without any test noticing.


def test_scores_are_the_documented_quantities():
    two = np.array([[0.7, 0.3]])  # two classes: the margin is defined
    assert queue.margin(two)[0] == pytest.approx(0.4)
    one = np.array([[0.6, 0.4]])
    assert queue.uncertainty("least_confident", one)[0] == pytest.approx(0.4)
    assert queue.uncertainty("breaking_ties", one)[0] == pytest.approx(0.8)
    # every class already labelled: the weights are relative to the rarest, not absolute
    np.testing.assert_allclose(queue.tag_weights({0: 3, 1: 8}, 2), [1.0, np.sqrt(4 / 9)])


def test_diverse_keeps_its_span_and_every_candidate():
    h = np.sqrt(0.5)
    unit = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [h, -h]])  # 3: cosine 0.71 with 0
    # 2 is a copy of 0: skipped while picks are made, then it follows in its order
    assert queue._diverse(np.arange(4), unit, span=3, similar=0.8) == [0, 1, 3, 2]
    # the span is the number of picks: after two, the rest keep their order, copy or not
    assert queue._diverse(np.arange(4), unit, span=2, similar=0.8) == [0, 1, 2, 3]
    # exactly as similar as the bound counts as similar (2 is 0 again: cosine 1.0)
    assert queue._diverse(np.array([0, 2, 1]), unit, span=3, similar=1.0) == [0, 1, 2]


def test_diverse_ties_compares_directions_whatever_the_norms():
    probs = np.array([[0.5, 0.5], [0.5, 0.48], [0.5, 0.49]])  # ranked 0, 2, 1
    angle = np.array([[1.0, 0.0], [0.6, 0.8], [1.0, 0.0]])  # 0 and 2 point the same way
    for scale in (0.1, 10.0):
        got = queue.order("diverse_ties", probs, np.zeros(3), embeddings=angle * scale)
        assert list(got) == [0, 1, 2], scale  # 2 is a copy of 0 and waits; 1 (cosine 0.6) not
    with pytest.raises(UserError, match=r"^the diverse_ties strategy needs the items' embeddings$"):
        queue.order("diverse_ties", probs, np.zeros(3))


def test_the_random_share_stays_within_the_k_positions_asked_for():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=30)
    ages = np.zeros(30)
    plain = list(queue.order("breaking_ties", probs, ages))
    assert list(queue.order("breaking_ties", probs, ages, random_share=0.9, k=0)) == plain
    got = list(queue.order("breaking_ties", probs, ages, random_share=0.9, k=3))
    drawn = set(got[:3])
    assert got[3:] == [i for i in plain if i not in drawn]  # after k: the plain order
    # k positions all taken by overdue items: no room for a random pick
    ages = np.arange(30.0)
    overdue = list(queue.order("breaking_ties", probs, ages, max_age=28, random_share=0.9, k=2))
    assert overdue == list(queue.order("breaking_ties", probs, ages, max_age=28))
    # the default seed is 0, and the empty queue is an empty integer array
    kw = {"random_share": 0.5, "k": 10}
    np.testing.assert_array_equal(
        queue.order("breaking_ties", probs, np.zeros(30), **kw),
        queue.order("breaking_ties", probs, np.zeros(30), seed=0, **kw),
    )
    assert queue.order("oldest", np.zeros((0, 4)), np.zeros(0)).dtype.kind == "i"


def test_a_page_of_one_position_can_still_be_a_random_pick():
    ranked = list(range(50))
    firsts = {queue._with_random_share(ranked, 1, 0.99, seed)[0] for seed in range(5)}
    assert firsts != {0}


def test_overdue_items_of_the_same_age_keep_their_ranked_order():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), size=60)
    ages = rng.integers(5, 8, size=60).astype(float)  # all overdue, many of the same age
    ranked = list(queue.order("breaking_ties", probs, ages))  # no maximum age: by score
    want = sorted(ranked, key=lambda i: -ages[i])  # oldest first, ties in ranked order
    assert list(queue.order("breaking_ties", probs, ages, max_age=1)) == want


def test_the_stopping_point_reads_the_first_window_100_labels_later():
    def w(labels, coverage):
        return {"labels": labels, "coverage": coverage}

    # the window exactly 100 labels later is flat: stop there, whatever comes after it
    flat_then_up = [w(0, 0.2), w(100, 0.2), w(200, 0.6)]
    assert queue.stopping_point(flat_then_up) == 0
    # the next window is 50 labels later (too soon); the first one 100 later is what counts
    assert queue.stopping_point([w(0, 0.2), w(50, 0.9), w(100, 0.2), w(200, 0.9)]) == 0
    # a gain exactly at the bound pays (0.5 -> 0.75 with gain 0.25)
    assert queue.stopping_point([w(0, 0.5), w(100, 0.75)], gain=0.25) is None
