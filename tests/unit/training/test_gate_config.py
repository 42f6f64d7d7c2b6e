"""eval.gate_threshold as the rule reads it: auto, null or a probability, and never a gate
without its model."""

from __future__ import annotations

import pytest

from mltagger.core.config import compose_config
from mltagger.core.errors import ConfigError
from mltagger.training.decision import check_gate_config


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], "auto"),  # the default data names negatives: the gate is chosen on CV
        (["eval.gate_threshold=0.4"], 0.4),
        (["eval.gate_threshold=0"], 0.0),
        (["eval.gate_threshold=null"], None),
        (["data=projects"], None),  # no negatives, no gate: by configuration
    ],
)
def test_the_gate_setting_the_rule_reads(overrides, expected):
    assert check_gate_config(compose_config("train", overrides)) == expected


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["data=projects", "eval.gate_threshold=0.5"], "the gate has no model"),
        (["eval.gate_threshold=1.5"], "a probability in [0, 1]"),
        (["eval.gate_threshold=true"], "a probability in [0, 1]"),
    ],
)
def test_a_gate_threshold_out_of_range_or_without_its_model_is_refused(overrides, says):
    cfg = compose_config("train", overrides)
    with pytest.raises(ConfigError) as err:
        check_gate_config(cfg)
    assert says in str(err.value) and "\n" not in str(err.value)
