"""Intervals over seeds: the mean of K final runs with a Student-t 95 % interval."""

from __future__ import annotations

import math

import numpy as np


def t_interval(values: list[float], level: float = 0.95) -> dict[str, float | int | None]:
    """Mean, sample std and the Student-t confidence interval of the mean over seeds."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    n = len(v)
    if n == 0:
        return {"mean": None, "std": None, "ci_low": None, "ci_high": None, "n": 0}
    mean = float(v.mean())
    if n == 1:
        return {"mean": mean, "std": None, "ci_low": None, "ci_high": None, "n": 1}
    std = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, df=n - 1) * std / math.sqrt(n))
    return {"mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half, "n": n}
