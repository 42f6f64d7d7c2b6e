"""The flat metric keys every job writes and reads (`Metric`).

Apart from `metrics` (which needs scikit-learn) so that the config checks can name the metrics a
job may monitor or optimise without importing it: a refused `trainer.monitor` costs a second.
"""

from __future__ import annotations


class Metric:
    """Flat metric keys (`summary_metrics`), shared by train, sweep, report and tests."""

    ACCURACY = "accuracy"
    PRECISION_MACRO = "precision_macro"
    RECALL_MACRO = "recall_macro"
    F1_MACRO = "f1_macro"
    PRECISION_WEIGHTED = "precision_weighted"
    RECALL_WEIGHTED = "recall_weighted"
    F1_WEIGHTED = "f1_weighted"
    THRESHOLD = "threshold"
    AUTO_PRECISION = "auto_precision"  # precision of auto-applied tags at the threshold
    COVERAGE = "coverage"  # share of items auto-tagged at the threshold
    ECE = "ece"
    NUM_SAMPLES = "num_samples"
    # With out-of-scope items in the data (gold `other`): figures on topic items only, and the
    # harmful case, out-of-scope items auto-tagged with a topic.
    TOPIC_F1_WEIGHTED = "topic_f1_weighted"
    TOPIC_AUTO_PRECISION = "topic_auto_precision"
    TOPIC_COVERAGE = "topic_coverage"
    OOS_AUTO_TOPIC = "oos_auto_topic_rate"
    # The same apart for out-of-scope items that are not ML at all and for out-of-scope ML
    # (only on data that marks them, `non_ml`: the fresh set).
    OOS_AUTO_TOPIC_NOT_ML = "oos_auto_topic_rate_not_ml"
    OOS_AUTO_TOPIC_ML = "oos_auto_topic_rate_ml"
    # The product's promise is per tag: the lowest precision among the tags applied
    # automatically (at least once), and the lower end of its 95% interval.
    LOWEST_TAG_AUTO_PRECISION = "lowest_tag_auto_precision"
    LOWEST_TAG_AUTO_PRECISION_LOW = "lowest_tag_auto_precision_low"

    ALL = (
        ACCURACY,
        PRECISION_MACRO,
        RECALL_MACRO,
        F1_MACRO,
        PRECISION_WEIGHTED,
        RECALL_WEIGHTED,
        F1_WEIGHTED,
        THRESHOLD,
        AUTO_PRECISION,
        COVERAGE,
        ECE,
        NUM_SAMPLES,
        TOPIC_F1_WEIGHTED,
        TOPIC_AUTO_PRECISION,
        TOPIC_COVERAGE,
        OOS_AUTO_TOPIC,
        OOS_AUTO_TOPIC_NOT_ML,
        OOS_AUTO_TOPIC_ML,
        LOWEST_TAG_AUTO_PRECISION,
        LOWEST_TAG_AUTO_PRECISION_LOW,
    )
