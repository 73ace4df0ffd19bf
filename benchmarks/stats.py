"""Latency summaries: medians and tail percentiles of nanosecond samples, in microseconds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import median
from typing import Any, TypedDict

__all__ = ["Summary", "combine_cost", "combine_rounds", "percentile", "summarize"]


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


#: Counts that add up over a cell's rounds.
_SUMMED = ("reads", "writes", "checked", "stale", "stale_items", "window", "differs",
           "lock_skips")  # fmt: skip


def combine_rounds(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One mixed-workload cell from its rounds.

    Throughput and latencies are the rounds' medians, so that one round the machine disturbed
    (the other libraries' rounds run in between) moves the figure least; counts are sums, the
    hit ratio is over all reads, and memory, being a state, is the last round's, kept with that
    round's own counts in ``last_round``.
    """
    last = rounds[-1]
    if len(rounds) == 1:
        return {**last, "rounds": 1, "round_throughputs": [last["throughput"]],
                "last_round": last}  # fmt: skip
    cell = dict(last)
    for key in _SUMMED:
        cell[key] = sum(r[key] for r in rounds)
    hits = sum((r["hit_ratio"] or 0) * r["reads"] for r in rounds)
    for kind in ("read", "write"):
        parts = [r[kind] for r in rounds if r[kind]["n"]]
        merged: dict[str, Any] = {"n": sum(p["n"] for p in parts)}
        for stat in ("median_us", "p99_us", "mean_us"):
            merged[stat] = median(p[stat] for p in parts) if parts else math.nan
        merged["min_us"] = min((p["min_us"] for p in parts), default=math.nan)
        cell[kind] = merged
    cell.update(
        rounds=len(rounds),
        round_throughputs=[r["throughput"] for r in rounds],
        throughput=median(r["throughput"] for r in rounds),
        hit_ratio=hits / cell["reads"] if cell["reads"] else None,
        stale_examples=[e for r in rounds for e in r["stale_examples"]][:5],
        last_round=last,
    )
    return cell


def combine_cost(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One CPU-per-operation figure from its rounds: each measure's median (None stays None)."""
    out = dict(rounds[0])
    for key in ("wall_us", "client_us", "postgres_us", "redis_us"):
        values = [r[key] for r in rounds if r[key] is not None]
        out[key] = median(values) if values else None
    out["ops"] = sum(r["ops"] for r in rounds)
    return out
