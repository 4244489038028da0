"""The keep rule (RESEARCH.md, "Statistics, concretely") on known numbers."""

import math

import pytest

from nanowhale.research.stats import Reference, decide, decide_paired, margin, metric_sigma, throughput_sigma

REF = Reference(metric=2.0, throughput=8000.0, r=3, sigma=0.004, throughput_sigma=300.0)


def test_margin_is_k_sigma_sqrt_of_both_counts():
    assert margin(2.0, 0.004, 3, 1) == pytest.approx(2 * 0.004 * math.sqrt(1 / 3 + 1))
    assert margin(2.0, 0.004, 3, 4) < margin(2.0, 0.004, 3, 1)  # more seeds, a finer test


def test_sigma_floors():
    assert metric_sigma([2.0, 2.0, 2.0]) == 1e-4                    # identical runs do not make sigma 0
    assert metric_sigma([2.0, 2.01]) == pytest.approx(0.01 / math.sqrt(2))
    assert throughput_sigma([8000.0, 8000.0], floor=0.05) == 400.0  # relative floor


@pytest.mark.parametrize("values, tps, verdict, why", [
    ([1.990], [8000.0], "keep", "better"),                       # gain 0.010 > margin 0.0092
    ([1.995], [8000.0], "inconclusive", "inside"),               # gain 0.005 < 0.0092
    ([1.9935] * 4, [8000.0] * 4, "keep", "better"),          # n=4: margin 0.0061 < 0.0065 < one seed's 0.0092
    ([2.010], [8000.0], "discard", "worse"),
    ([1.990], [6000.0], "discard", "time control"),              # better loss, but 2000 tok/s slower > 693
    ([1.990], [7500.0], "keep", "better"),                       # 500 slower: inside throughput noise
])
def test_decide(values, tps, verdict, why):
    d = decide(REF, values, tps, k=2.0, direction="lower")
    assert d.verdict == verdict and why in d.reason


def test_higher_is_better():
    d = decide(Reference(0.50, 8000.0, 3, 0.01, 300.0), [0.55], [8000.0], k=2.0, direction="higher")
    assert d.verdict == "keep" and d.gain == pytest.approx(0.05)
    with pytest.raises(ValueError, match="direction"):
        decide(REF, [1.0], [1.0], k=2.0, direction="down")


@pytest.mark.parametrize("cand, verdict", [
    ([1100.0, 1090.0, 1110.0], "keep"),          # log ratios ~0.095 +- 0.009: margin max(0.009, 0.01) * 2 / sqrt(3)
    ([1020.0, 980.0, 1030.0], "inconclusive"),   # mean 0.010, std 0.026: margin 0.030
    ([900.0, 910.0, 905.0], "discard"),
    ([1100.0, 1100.0, 1100.0], "keep"),          # identical ratios: the floor keeps the margin above 0
])
def test_decide_paired(cand, verdict):
    best = [1000.0, 1000.0, 1000.0]
    d = decide_paired(best, cand, k=2.0, floor=0.01)
    r = [math.log(c / b) for b, c in zip(best, cand)]
    s = max(math.sqrt(sum((x - sum(r) / 3) ** 2 for x in r) / 2), 0.01)
    assert d.verdict == verdict and d.margin == pytest.approx(2 * s / math.sqrt(3))
    assert d.gain == pytest.approx(sum(r) / 3)


def test_decide_paired_floor_and_bad_input():
    assert decide_paired([1000.0] * 3, [1050.0] * 3, k=2.0, floor=0.25).verdict == "inconclusive"  # 5% < 29% margin
    with pytest.raises(ValueError, match=">= 2 pairs"):
        decide_paired([1000.0], [1100.0], k=2.0, floor=0.01)
    with pytest.raises(ValueError, match="non-positive"):
        decide_paired([1000.0, 0.0], [1100.0, 1000.0], k=2.0, floor=0.01)
