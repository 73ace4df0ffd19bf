"""Latency summaries: medians and tail percentiles of nanosecond samples, in microseconds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypedDict

__all__ = ["Summary", "percentile", "summarize"]


class Summary(TypedDict):
    n: int
    median_us: float
    p99_us: float
    mean_us: float
    min_us: float


def percentile(sorted_samples: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) of already sorted samples, linearly interpolated.

    >>> percentile([1, 2, 3, 4], 0.5)
    2.5
    """
    if not sorted_samples:
        return math.nan
    pos = (len(sorted_samples) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_samples) - 1)
    return sorted_samples[lo] + (sorted_samples[hi] - sorted_samples[lo]) * (pos - lo)


def summarize(samples_ns: Sequence[int]) -> Summary:
    data = sorted(samples_ns)
    if not data:
        nan = math.nan
        return Summary(n=0, median_us=nan, p99_us=nan, mean_us=nan, min_us=nan)
    return Summary(
        n=len(data),
        median_us=percentile(data, 0.5) / 1000,
        p99_us=percentile(data, 0.99) / 1000,
        mean_us=sum(data) / len(data) / 1000,
        min_us=data[0] / 1000,
    )
