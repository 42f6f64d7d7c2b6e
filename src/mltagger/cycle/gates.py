"""The cycle's gates: each a named rule whose figure goes into the cycle's report.

A gate is `pass`, `fail`, or `not_enough_evidence` (too few items to say; never passed
silently). A challenger goes to shadow only when no gate failed; a tag without enough evidence
is named in the report, and the promise of the tags that have it still has to hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mltagger.evaluation.paired import mcnemar, paired_bootstrap
from mltagger.evaluation.stats import wilson_bounds

PASS, FAIL, UNKNOWN = "pass", "fail", "not_enough_evidence"


def gate(name: str, passed: bool | None, why: str, *, figure: float | None = None) -> dict:
    """One gate row: None means not enough evidence."""
    status = UNKNOWN if passed is None else PASS if passed else FAIL
    out = {"name": name, "status": status, "why": why}
    if figure is not None:
        out["figure"] = round(float(figure), 4)
    return out


def failed(rows: Sequence[dict]) -> list[str]:
    return [r["name"] for r in rows if r["status"] == FAIL]


@dataclass(frozen=True)
class GateSettings:
    tag_floor: float = 0.85  # per-tag precision lower bound (95% Wilson)
    # a tag needs this many auto-tags before its bound is judged: 22 right out of 22 is the
    # fewest with a lower bound above 0.85
    min_tag_items: int = 22
    oos_margin: float = 0.01  # out-of-scope harm: no worse than the champion's + 1 point
    parity_agreement: float = 0.99  # export: top answers equal on this share of texts
    parity_max_diff: float = 1e-3  # ...and no probability further than this
    behaviour_drop: float = 0.05  # a behavioural family's pass rate may fall this much
    paired_alpha: float = 0.05
    n_boot: int = 2000


def tag_precision(
    name: str,
    answers: Sequence[str],
    auto: np.ndarray,
    gold: Sequence[str],
    tags: Sequence[str],
    s: GateSettings,
) -> tuple[dict, list[dict]]:
    """Every topic tag's auto-tag precision and its lower bound; the gate fails when a tag with
    enough evidence has its bound under the floor."""
    rows, low_tags, unknown = [], [], []
    answers, gold, auto = np.asarray(answers), np.asarray(gold), np.asarray(auto, dtype=bool)
    for tag in tags:
        mask = auto & (answers == tag)
        n, k = int(mask.sum()), int((mask & (gold == tag)).sum())
        low = float(wilson_bounds(k, n)[0]) if n else None
        enough = n >= s.min_tag_items
        rows.append(
            {
                "tag": tag,
                "auto": n,
                "right": k,
                "precision": k / n if n else None,
                "lower": low,
                "evidence": enough,
            }
        )
        if not enough:
            unknown.append(tag)
        elif low < s.tag_floor:
            low_tags.append(f"{tag} {low:.3f}")
    judged = len(tags) - len(unknown)
    why = (
        f"{judged} tags judged, lower bound >= {s.tag_floor}"
        + (f"; below it: {', '.join(low_tags)}" if low_tags else "")
        + (
            f"; not enough evidence (< {s.min_tag_items} auto-tags): {', '.join(unknown)}"
            if unknown
            else ""
        )
    )
    return gate(name, None if judged == 0 else not low_tags, why), rows


def paired_recent(
    gold: Sequence[str],
    champion: tuple[Sequence[str], np.ndarray],
    challenger: tuple[Sequence[str], np.ndarray],
    s: GateSettings,
    seed: int = 0,
    tops: tuple[Sequence[str], Sequence[str]] | None = None,
) -> tuple[dict, dict]:
    """The recent window, both models on the same items: the challenger must not be worse
    (McNemar on the top answers, the bootstrap intervals of the precision and coverage
    differences) and must be better
    somewhere it can be measured (coverage difference above zero, or McNemar on the top answers
    in its favour)."""
    gold = np.asarray(gold)
    a_tag, a_auto = np.asarray(champion[0]), np.asarray(champion[1], dtype=bool)
    b_tag, b_auto = np.asarray(challenger[0]), np.asarray(challenger[1], dtype=bool)
    # McNemar on the top answers (`tops`: each model's best tag, whether applied or not); the
    # bootstrap on what the decision rule did with them
    a_top, b_top = (np.asarray(t) for t in tops) if tops is not None else (a_tag, b_tag)
    mc = mcnemar(a_top == gold, b_top == gold)
    boot = paired_bootstrap(gold, a_tag, a_auto, b_tag, b_auto, n_boot=s.n_boot, seed=seed)
    figures = {"mcnemar": mc, "bootstrap": boot, "n": len(gold)}
    if len(gold) == 0:
        return gate("recent.paired", None, "no recent window"), figures
    worse_top = mc["b_only"] < mc["a_only"] and mc["p_value"] < s.paired_alpha
    better_top = mc["b_only"] > mc["a_only"] and mc["p_value"] < s.paired_alpha
    prec = boot["precision"]
    cov = boot["coverage"]
    worse_prec = prec.get("high") is not None and prec["high"] < 0
    # sending measurably more to review is not better, whatever the top answers do
    worse_cov = cov.get("high") is not None and cov["high"] < 0
    better_cov = cov.get("low") is not None and cov["low"] > 0
    passed = not (worse_top or worse_prec or worse_cov) and (better_cov or better_top)
    why = (
        f"{len(gold)} items: coverage {cov['a']:.3f} -> {cov['b']:.3f} "
        f"(difference {cov['difference']:+.3f}, 95% [{cov['low']:+.3f}, {cov['high']:+.3f}]); "
        f"precision {_f(prec.get('a'))} -> {_f(prec.get('b'))} "
        f"(95% [{_f(prec.get('low'), '+.3f')}, {_f(prec.get('high'), '+.3f')}]); "
        f"McNemar {mc['a_only']} vs {mc['b_only']} discordant, p {mc['p_value']:.3g}"
    )
    return gate("recent.paired", passed, why, figure=cov["difference"]), figures


def _f(x, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def oos_harm(champion: float | None, challenger: float | None, n: int, s: GateSettings) -> dict:
    """Share of out-of-scope items given a topic automatically: no worse than the champion's
    plus the margin."""
    if not n or champion is None or challenger is None:
        return gate("oos.harm", None, "no out-of-scope items to measure on")
    return gate(
        "oos.harm",
        challenger <= champion + s.oos_margin,
        f"{challenger:.3f} on {n} out-of-scope items (champion {champion:.3f} + {s.oos_margin})",
        figure=challenger,
    )


def export_parity(par: dict | None, s: GateSettings, why_missing: str = "") -> dict:
    if par is None:
        return gate("export.parity", False, f"no export: {why_missing}")
    ok = par["label_agreement"] >= s.parity_agreement and par["max_prob_diff"] <= s.parity_max_diff
    return gate(
        "export.parity",
        ok,
        f"ONNX fp32 vs torch on {par['num_samples']} texts: top answers equal on "
        f"{par['label_agreement']:.4f}, largest probability difference {par['max_prob_diff']:.2e}",
        figure=par["label_agreement"],
    )


def behaviour(champion: dict, challenger: dict, s: GateSettings) -> dict:
    """Each behavioural family's pass rate may not fall by more than `behaviour_drop`."""
    drops = {
        k: champion[k] - challenger.get(k, 0.0)
        for k in champion
        if champion[k] - challenger.get(k, 0.0) > s.behaviour_drop
    }
    rates = ", ".join(f"{k.split('/')[-1]} {v:.2f}" for k, v in sorted(challenger.items()))
    return gate(
        "behaviour.suite",
        not drops and bool(challenger),
        f"pass rates {rates}"
        + (f"; fell more than {s.behaviour_drop}: {sorted(drops)}" if drops else ""),
    )
