"""What the evaluation config (conf/eval, `eval.*` of the training, baseline and export jobs) may
hold, and the metric names a job may monitor or optimise.

A precision target of 1.5 or a threshold rule with a typo would otherwise be found only when the
first evaluation runs, after the training it was meant to judge.
"""

from __future__ import annotations

from mltagger.core.checks import Rule, flag, integer, number, one_of, sequence, text
from mltagger.evaluation.metric_names import Metric
from mltagger.evaluation.thresholds import TAG_RULES, THRESHOLD_RULES

# What trainer.monitor and sweep.metric may name: a metric the loop writes for val.
VAL_METRICS = tuple(sorted(f"val/{k}" for k in Metric.ALL))
DECISIONS = ("auto", "per_tag", "global")

EVAL_RULES = {
    "precision_target": number(above=0, high=1),
    "threshold_rule": one_of(THRESHOLD_RULES, optional=True),
    "decision": one_of(DECISIONS, optional=True),
    "oof": text(nullable=True, optional=True),
    "tag_rule": one_of(TAG_RULES, optional=True),
    "prior_strength": number(0, optional=True),
    "tag_precision_target": number(above=0, high=1, optional=True),
    "min_slice_size": integer(0),
    "calibration_bins": integer(1),
    "operating_points": sequence(number(above=0, high=1), optional=True),
    "behavior": flag(optional=True),
    "recheck_tolerance": number(0, optional=True),
    # auto, null or a calibrated probability (the gate's in-scope probability) in [0, 1].
    "gate_threshold": Rule(
        "auto, null or a probability in [0, 1]",
        lambda v: (
            v == "auto" or (isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1)
        ),
        nullable=True,
        optional=True,
    ),
    "gate_max_harm": number(0, high=1, optional=True),
}
