"""Latency statistics in the definitions android_demo's LatencyStats.java repeats (numpy's linear percentiles).

The result-row type, its schema and its reading/writing live in rows.py.
"""

from __future__ import annotations

import numpy as np

NOISY_CV = 0.10


def latency_stats(samples_ms: list[float] | np.ndarray) -> dict[str, float]:
    """p10/p50/p90/p99 (linear interpolation), mean, std (population), min and max of timings in ms (p10: the
    lower end of the plots' error bars)."""
    a = np.asarray(samples_ms, dtype=float)
    if a.size == 0:
        raise ValueError("no timing samples")
    return {"p10": float(np.percentile(a, 10)), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "std": float(a.std()),
            "min": float(a.min()), "max": float(a.max())}


def coefficient_of_variation(samples_ms) -> float:
    a = np.asarray(samples_ms, dtype=float)
    return float(a.std() / a.mean()) if a.size and a.mean() > 0 else float("nan")


def fps(p50_ms: float, batch: int = 1) -> float:
    return 1000.0 * batch / p50_ms if p50_ms > 0 else float("nan")
