"""Confidence intervals for the evaluation numbers: bootstrap over prompts, Wilson for proportions."""

from __future__ import annotations

import math

import numpy as np


def bootstrap_ci(values: list[float], seed: int = 0, resamples: int = 2000, level: float = 0.95) -> list[float] | None:
    """Percentile bootstrap interval of the mean; prompts are the unit resampled, so ties (0.5) need no special case."""
    if not values:
        return None
    x = np.asarray(values, dtype=float)
    means = x[np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)  # (resamples,)
    tail = (1 - level) / 2 * 100
    return [round(float(np.percentile(means, tail)), 4), round(float(np.percentile(means, 100 - tail)), 4)]


def wilson_ci(successes: int, n: int, level: float = 0.95) -> list[float] | None:
    """Wilson score interval of a proportion: sensible at 0, 1 and small n, unlike the normal approximation."""
    if n == 0:
        return None
    z = {0.9: 1.6449, 0.95: 1.96, 0.99: 2.5758}[level]
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def mean_ci(values: list[float], level: float = 0.95) -> list[float] | None:
    """Normal interval of a mean (mean ± z·sd/√n), for quantities like KL that are not proportions."""
    if len(values) < 2:
        return None
    x = np.asarray(values, dtype=float)
    half = {0.9: 1.6449, 0.95: 1.96, 0.99: 2.5758}[level] * x.std(ddof=1) / math.sqrt(len(x))
    return [round(float(x.mean() - half), 4), round(float(x.mean() + half), 4)]
