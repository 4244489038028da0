"""The noise floor and the keep/discard rule (RESEARCH.md, "Statistics, concretely").

Baseline repeats r with different seeds give the mean mu and sample std sigma (floored, so identical runs
do not make sigma 0). A candidate with mean m over n seeds beats the best (mean mu_best over r_best seeds)
when the gain exceeds k * sigma * sqrt(1/r_best + 1/n); inside that margin it is inconclusive. Throughput
is judged the same way with its own sigma and the direction reversed (time control): keep only if the
metric is better beyond the margin AND throughput is not worse beyond its margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

METRIC_SIGMA_FLOOR = 1e-4        # absolute, in the metric's units (val_bpb ~ 2: 0.005%)
THROUGHPUT_SIGMA_FLOOR = 0.005   # relative to the mean throughput (0.5%); `init --throughput-floor` raises it


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mu = sum(values) / n
    if n == 1:
        return mu, 0.0
    return mu, math.sqrt(sum((v - mu) ** 2 for v in values) / (n - 1))


def metric_sigma(values: list[float]) -> float:
    return max(mean_std(values)[1], METRIC_SIGMA_FLOOR)


def throughput_sigma(values: list[float], floor: float = THROUGHPUT_SIGMA_FLOOR) -> float:
    """Sample std of throughput, at least `floor` times the mean (a machine shared with busy neighbours
    swings more between runs than a few baseline repeats may show)."""
    mu, sd = mean_std(values)
    return max(sd, floor * abs(mu))


def margin(k: float, sigma: float, r: int, n: int) -> float:
    """k * sigma * sqrt(1/r + 1/n): how far apart two means of r and n runs must be to differ beyond noise."""
    return k * sigma * math.sqrt(1.0 / r + 1.0 / n)


@dataclass
class Reference:
    """What a candidate is compared to: the best's means over its r runs and the baseline's sigmas."""

    metric: float
    throughput: float
    r: int
    sigma: float
    throughput_sigma: float


@dataclass
class Decision:
    verdict: str            # keep | discard | inconclusive
    reason: str
    margin: float
    throughput_margin: float
    gain: float             # positive = better than the best
    slowdown: float         # positive = fewer tokens/s than the best


def decide(ref: Reference, metric_values: list[float], throughput_values: list[float], k: float,
           direction: str, time_control: bool = True) -> Decision:
    """The verdict on the metric and, with time_control, on throughput against the best's mean (unpaired).
    The research loop judges the metric alone (time_control=False) and times a would-be keep side by side
    with the best (decide_paired), since two runs' throughputs measured hours apart differ by load alone."""
    if direction not in ("lower", "higher"):
        raise ValueError(f"direction must be 'lower' or 'higher', got {direction!r}")
    n = len(metric_values)
    m = sum(metric_values) / n
    tp = sum(throughput_values) / len(throughput_values)
    gain = (ref.metric - m) if direction == "lower" else (m - ref.metric)
    mm = margin(k, ref.sigma, ref.r, n)
    tm = margin(k, ref.throughput_sigma, ref.r, len(throughput_values))
    slowdown = ref.throughput - tp
    nums = (f"metric {m:.6f} vs best {ref.metric:.6f} (gain {gain:+.6f}, margin {mm:.6f}); "
            f"throughput {tp:,.0f} vs {ref.throughput:,.0f} tok/s (margin {tm:,.0f})")
    if time_control and slowdown > tm:
        verdict, why = "discard", "slower than the best beyond noise (time control)"
    elif gain > mm:
        verdict, why = "keep", "better than the best beyond noise, not slower"
    elif gain < -mm:
        verdict, why = "discard", "worse than the best beyond noise"
    else:
        verdict, why = "inconclusive", f"inside the noise margin (n={n}; more seeds can decide)"
    return Decision(verdict, f"{why}: {nums}", mm, tm, gain, slowdown)


def decide_paired(best: list[float], candidate: list[float], k: float, floor: float,
                  min_effect: float = 0.0) -> Decision:
    """Paired throughput (tokens/s, higher is better), one (best, candidate) pair per element, measured
    back to back so machine drift hits both alike: the per-pair log ratios r_i = ln(candidate_i / best_i)
    have mean g and sample std s (at least `floor`, a relative speed); faster beyond noise when
    g > k * s / sqrt(K), slower when g < -k * s / sqrt(K), else inconclusive. With min_effect > 0 the
    speed must also differ by more than that fraction (time control's relative margin: a few percent is
    not worth a verdict on a loaded machine)."""
    if len(best) != len(candidate) or len(best) < 2:
        raise ValueError(f"paired throughput needs >= 2 pairs of equal length, got {len(best)} and {len(candidate)}")
    if min(best + candidate) <= 0:
        raise ValueError(f"paired throughput: non-positive tokens/s in {best} / {candidate}")
    ratios = [math.log(c / b) for b, c in zip(best, candidate)]
    g, s = mean_std(ratios)
    m = max(k * max(s, floor) / math.sqrt(len(ratios)), -math.log(1.0 - min_effect))
    nums = (f"candidate/best tokens/s x{math.exp(g):.4f} (mean log ratio {g:+.4f}, margin {m:.4f}, "
            f"{len(ratios)} pairs)")
    if g > m:
        verdict, why = "keep", "faster than the best beyond noise"
    elif g < -m:
        verdict, why = "discard", "slower than the best beyond noise"
    else:
        verdict, why = "inconclusive", "inside the noise margin (more pairs can decide)"
    return Decision(verdict, f"{why}: {nums}", m, m, g, -g)


__all__ = ["Decision", "Reference", "decide", "decide_paired", "margin", "mean_std", "metric_sigma",
           "throughput_sigma"]
