"""The Wilson score bound, the one formula behind every precision promise: the interval reported
per tag, the `lower_bound` threshold rule and the per-tag operating points all call it, so they
cannot drift apart."""

from __future__ import annotations

import numpy as np

Z95 = 1.96  # two-sided 95%


def wilson_bounds(successes, n, z: float = Z95):
    """Lower and upper ends of the Wilson score interval of successes / n (scalars or arrays,
    n > 0), not clipped to [0, 1]."""
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return centre - half, centre + half
