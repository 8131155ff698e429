"""The statistics of repeated runs: mean, spread and a verdict against a published effect.

Every number a comparison reports over seeds is a `Spread`: the mean, the sample standard deviation,
the min–max range and the half-width of the 95 % Student-t confidence interval of the mean
(mean ± t(0.975, n−1)·s/√n). A difference between two specs is `difference`: Welch's interval for the
difference of the means (no equal-variance assumption; Welch–Satterthwaite degrees of freedom).
Student's t quantile is computed here (the regularised incomplete beta function by its continued
fraction, then bisection), so fractional degrees of freedom need no table and no scipy.

`verdict` turns a measured difference and the paper's effect into one word, by a fixed rule (see its
docstring); with fewer than two runs per side there is no interval and no verdict.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

CONFIDENCE = 0.95
REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
WITHIN_NOISE = "within noise"
NO_VERDICT = "no verdict (one run per side)"


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    ln = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(ln) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` (> 0, possibly fractional) degrees of freedom."""
    tail = 0.5 * betainc(df / 2, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The `p` quantile (0.5 < p < 1) of Student's t with `df` degrees of freedom, to 1e-10."""
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
        if hi - lo < 1e-10:
            break
    return (lo + hi) / 2


@dataclass(frozen=True)
class Spread:
    """Repeated measurements: their mean, sample standard deviation (0 for one), min–max and the
    half-width of the 95 % t-interval of the mean (None for one value)."""

    values: tuple[float, ...]
    mean: float
    sd: float
    lo: float
    hi: float
    half: float | None

    @property
    def n(self) -> int:
        return len(self.values)

    def as_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "sd": self.sd, "min": self.lo, "max": self.hi,
                "ci95_half_width": self.half, "values": list(self.values)}

    def format(self, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
        """'12.34 ± 0.56 (11.9–12.8)' (mean ± 95 % half-width, then min–max), scaled (100: percent)."""
        f = f"{{:.{digits}f}}"
        head = f.format(self.mean * scale) + unit
        if self.half is None:
            return head
        return (f"{head} ± {f.format(self.half * scale)} ({f.format(self.lo * scale)}–"
                f"{f.format(self.hi * scale)})")


def summarize(values: Sequence[float]) -> Spread:
    """The `Spread` of one or more finite values."""
    xs = tuple(float(v) for v in values)
    if not xs:
        raise ValueError("summarize: no values")
    n = len(xs)
    mean = math.fsum(xs) / n
    if n == 1:
        return Spread(xs, mean, 0.0, xs[0], xs[0], None)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.5 + CONFIDENCE / 2, n - 1) * sd / math.sqrt(n)
    return Spread(xs, mean, sd, min(xs), max(xs), half)


@dataclass(frozen=True)
class Difference:
    """mean(b) − mean(a) and the half-width of its 95 % Welch interval (None: fewer than two runs a side)."""

    delta: float
    half: float | None
    df: float | None

    @property
    def interval(self) -> tuple[float, float] | None:
        return None if self.half is None else (self.delta - self.half, self.delta + self.half)


def difference(a: Spread, b: Spread) -> Difference:
    """Welch's 95 % interval of mean(b) − mean(a)."""
    delta = b.mean - a.mean
    if a.n < 2 or b.n < 2:
        return Difference(delta, None, None)
    va, vb = a.sd ** 2 / a.n, b.sd ** 2 / b.n
    se2 = va + vb
    if se2 == 0:
        return Difference(delta, 0.0, float(a.n + b.n - 2))
    df = se2 ** 2 / (va ** 2 / (a.n - 1) + vb ** 2 / (b.n - 1))
    return Difference(delta, t_quantile(0.5 + CONFIDENCE / 2, df) * math.sqrt(se2), df)


def verdict(diff: Difference, paper: float, magnitude: bool = True) -> str:
    """One word for a measured difference against the paper's effect `paper` (same units and sign
    convention; only its sign is used for two of the rules, and for all of them when `magnitude` is
    False: the paper gave a direction and no number):

    * reproduced: the 95 % interval excludes 0 and lies on the paper's side;
    * not reproduced: the interval excludes 0 on the other side, or it holds 0 but excludes the
      paper's effect (the effect, if any, is smaller than the paper's);
    * within noise: the interval holds both 0 and the paper's effect: these runs cannot tell;
    * no verdict: fewer than two runs on a side (no interval).
    """
    iv = diff.interval
    if iv is None:
        return NO_VERDICT
    lo, hi = iv
    if lo > 0 or hi < 0:
        return REPRODUCED if (lo > 0) == (paper > 0) else NOT_REPRODUCED
    if magnitude and not lo <= paper <= hi:
        return NOT_REPRODUCED
    return WITHIN_NOISE
