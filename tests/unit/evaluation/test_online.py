"""Online precision from proxy signals, on rows worked out by hand."""

import pytest

from mltagger.evaluation.online import answers, disagreement, figure, online_precision, review_ratio


def row(tag, *, version="m1", auto=True, author=None, audit=False, review=None, reports=0,
        shadow=None):  # fmt: skip
    return {
        "model_tag": tag, "model_version": version,
        "reason": "classifier" if auto else "low_confidence",
        "author_tag": author, "audit": audit, "review_tag": review, "reports": reports,
        "shadow": shadow,
    }  # fmt: skip


def pick(rows, signal, version="all", tag="all"):
    return next(
        r for r in online_precision(rows)
        if (r["signal"], r["model_version"], r["tag"]) == (signal, version, tag)
    )  # fmt: skip


def test_each_signal_counts_only_the_auto_applied_items_it_speaks_for():
    rows = [
        row("nlp", author="nlp", audit=True, review="nlp"),
        row("nlp", author="cv", audit=True, review="cv", reports=1),
        row("cv", author="cv"),
        row("cv", auto=False, author="nlp", audit=True, review="nlp", reports=2),  # not applied
        row("mlops"),  # no author, not audited, not reported
    ]
    audit = pick(rows, "audit")
    assert (audit["correct"], audit["n"]) == (1, 2)  # an unaudited review says nothing
    author = pick(rows, "author")
    assert (author["correct"], author["n"]) == (2, 3)
    reports = pick(rows, "reports")
    assert (reports["correct"], reports["n"]) == (3, 4)  # every shown auto-tag; one reported
    assert pick(rows, "author", tag="nlp")["n"] == 2 and pick(rows, "author", tag="cv")["n"] == 1


def test_a_shadow_answer_is_scored_for_its_own_model_but_never_by_reports():
    shadow = {"model_version": "m2", "tag": "cv", "confidence": 0.9, "needs_review": False}
    rows = [row("nlp", author="cv", reports=1, shadow=shadow)]
    assert pick(rows, "author", version="m1")["correct"] == 0
    assert pick(rows, "author", version="m2")["correct"] == 1
    assert pick(rows, "author")["n"] == 1  # `all` is what users saw: the shown answer only
    assert not any(r["model_version"] == "m2" for r in online_precision(rows)
                   if r["signal"] == "reports")  # fmt: skip
    assert len(answers(rows)) == 2
    assert disagreement(rows) == [
        {"shown": "m1", "other": "m2", "items": 1, "disagree": 1, "rate": 1.0}
    ]


def test_figures_carry_a_wilson_interval_and_nothing_for_no_items():
    f = figure(8, 10)
    assert f["precision"] == 0.8 and f["ci_low"] == pytest.approx(0.490, abs=1e-3)
    assert f["ci_high"] == pytest.approx(0.943, abs=1e-3)
    assert figure(0, 0)["precision"] is None


def test_review_ratio_is_the_share_the_model_sent_to_review():
    assert review_ratio([row("a"), row("b", auto=False)]) == 0.5
    assert review_ratio([]) is None


def test_an_item_the_gate_stopped_waits_for_review_and_is_counted_apart():
    from mltagger.evaluation.online import out_of_scope_ratio

    gated = {**row("other", author="natural-language-processing"), "reason": "out_of_scope"}
    rows = [row("a", author="a"), row("b", auto=False), gated, gated]
    assert review_ratio(rows) == 0.75
    assert out_of_scope_ratio(rows) == 0.5 and out_of_scope_ratio([]) is None
    # not applied, so the author's disagreement says nothing about automatic precision
    author = pick(rows, "author")
    assert (author["correct"], author["n"]) == (1, 1)


def test_secondary_shares_split_the_models_from_the_peoples():
    from mltagger.evaluation.online import secondary_shares

    rows = [
        {"reason": "classifier", "tagged_by": "model", "secondary_tags": ["mlops"]},
        {"reason": "classifier", "tagged_by": "model", "secondary_tags": None},
        {"reason": "low_confidence", "tagged_by": "model", "secondary_tags": None},
        {"reason": "low_confidence", "tagged_by": "human", "secondary_tags": ["time-series"]},
    ]
    assert secondary_shares(rows) == {
        "auto": 0.5, "auto_items": 2, "reviewed": 1.0, "reviewed_items": 1,
    }  # fmt: skip
    assert secondary_shares([])["auto"] is None
