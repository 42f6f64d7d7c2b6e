"""What `mltagger export` (conf/export.yaml) may hold.

Checked before the data is prepared and before any model is loaded: a teacher folder that does
not exist, batch size 0 or a negative F1 bound used to fail only after the torch model had been
evaluated on every split.
"""

from __future__ import annotations

from omegaconf import DictConfig

from mltagger.core.checks import (
    check_config,
    config_root,
    flag,
    integer,
    number,
    path,
    sequence,
    text,
)
from mltagger.data.config_rules import check_data_config
from mltagger.evaluation.config_rules import EVAL_RULES
from mltagger.export.variants import check_variants

EXPORT_RULES = {
    "task_name": text(),
    "teacher": path("model folder", hint="train one with `make train`, or give teacher=FOLDER"),
    "student": path("model folder", nullable=True, optional=True, hint="make one: make distill"),
    "opset": integer(9),
    "quantize": flag(),
    "quantization.per_channel": flag(),
    "quantization.reduce_range": flag(),
    "quantization.variants": sequence(text()),
    "quantization.calibration_items": integer(1),
    "quantization.static_reduce_range": flag(),
    "latency.rounds": integer(1),
    "latency.calls": integer(1),
    "latency.batch_items": integer(1),
    "latency.threads": integer(1, nullable=True),
    "ship_rule.max_val_f1_drop": number(0, 1),
    "ship_rule.min_val_agreement": number(0, 1),
    "ship_rule.max_batch_diff": number(0, 1),
    "batch_size": integer(1),
    # Shares of test items; a bound above 1 can never be met, which stops every export (the
    # export tests use it to see the stop).
    "parity.min_agreement.fp32": number(0),
    "parity.min_agreement.int8": number(0),
    "ship": text(),
    "max_f1_drop": number(0, 1),
}


def check_export_config(cfg: DictConfig) -> None:
    """`mltagger export`: the model folders, the export settings, the data and the evaluation."""
    root = config_root(cfg)
    check_config(cfg, EXPORT_RULES, root=root)
    check_variants(list(cfg.quantization.variants))
    check_data_config(cfg.data, root)
    check_config(cfg.eval, EVAL_RULES, root=root, prefix="eval")
