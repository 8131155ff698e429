"""The statistics of repeated runs against numbers computed by hand (and Student's t quantiles as printed
in statistical tables / scipy.stats.t.ppf), and the verdict rule on constructed intervals."""
from __future__ import annotations

import math

import pytest

from alexnetc.runtime.app.spread import (
    NO_VERDICT,
    NOT_REPRODUCED,
    REPRODUCED,
    WITHIN_NOISE,
    Difference,
    difference,
    summarize,
    t_cdf,
    t_quantile,
    verdict,
)


@pytest.mark.parametrize("df, q", [(1, 12.7062047), (2, 4.30265273), (3, 3.18244631), (4, 2.77644511),
                                   (10, 2.22813885), (30, 2.04227246), (2.5, 3.57465484)])
def test_t_quantile_matches_the_tables(df, q):
    assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-6)
    assert t_cdf(q, df) == pytest.approx(0.975, abs=1e-9)


def test_t_cdf_is_symmetric_and_cauchy_at_one_degree():
    # df = 1 is the Cauchy distribution: P(T <= t) = 1/2 + atan(t)/pi
    for t in (-3.0, -0.5, 0.0, 0.7, 5.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
        assert t_cdf(t, 7) + t_cdf(-t, 7) == pytest.approx(1.0, abs=1e-12)


def test_summary_by_hand():
    s = summarize([1, 2, 3, 4])
    # mean 2.5; s^2 = (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3; half = t(0.975, 3) * s / sqrt(4)
    assert s.mean == 2.5 and s.sd == pytest.approx(math.sqrt(5 / 3)) and (s.lo, s.hi) == (1, 4)
    assert s.half == pytest.approx(3.18244631 * math.sqrt(5 / 3) / 2, rel=1e-7)     # 2.0542603
    assert s.format(digits=2) == "2.50 ± 2.05 (1.00–4.00)"
    assert s.as_dict()["ci95_half_width"] == pytest.approx(2.0542603, abs=1e-6)
    one = summarize([0.25])
    assert one.half is None and one.sd == 0 and one.format(100) == "25.00"
    with pytest.raises(ValueError):
        summarize([])


def test_welch_difference_by_hand():
    a, b = summarize([1, 2, 3]), summarize([4, 5, 7])
    d = difference(a, b)
    # means 2 and 16/3; variances 1 and 7/3; se^2 = 1/3 + 7/9 = 10/9
    # df = (10/9)^2 / ((1/3)^2/2 + (7/9)^2/2) = 1.2345679 / 0.3580247 = 3.4482759
    assert d.delta == pytest.approx(10 / 3)
    assert d.df == pytest.approx(3.4482759, rel=1e-6)
    assert d.half == pytest.approx(t_quantile(0.975, d.df) * math.sqrt(10 / 9))
    assert d.half == pytest.approx(3.1208840, abs=1e-6)          # scipy: t.ppf(0.975, 3.448) * sqrt(10/9)
    assert difference(summarize([1]), b).half is None
    same = difference(summarize([2, 2]), summarize([3, 3]))
    assert same.delta == 1 and same.half == 0


@pytest.mark.parametrize("delta, half, paper, expected", [
    (2.0, 1.0, 1.4, REPRODUCED),          # [1, 3] excludes 0, paper's side
    (-2.0, 1.0, 1.4, NOT_REPRODUCED),     # [-3, -1]: the other side
    (0.2, 0.5, 1.4, NOT_REPRODUCED),      # [-0.3, 0.7] holds 0 but not 1.4: smaller than the paper's
    (0.5, 1.5, 1.4, WITHIN_NOISE),        # [-1, 2] holds both
    (-0.5, 1.5, -1.7, WITHIN_NOISE),      # [-2, 1]
    (-3.0, 0.5, -1.7, REPRODUCED),
])
def test_verdict_rule(delta, half, paper, expected):
    assert verdict(Difference(delta, half, 4.0), paper) == expected


def test_verdict_without_a_number_uses_the_direction_only():
    assert verdict(Difference(0.2, 0.5, 4.0), 1.0, magnitude=False) == WITHIN_NOISE
    assert verdict(Difference(2.0, 0.5, 4.0), 1.0, magnitude=False) == REPRODUCED
    assert verdict(Difference(-2.0, 0.5, 4.0), 1.0, magnitude=False) == NOT_REPRODUCED
    assert verdict(Difference(5.0, None, None), 1.4) == NO_VERDICT
