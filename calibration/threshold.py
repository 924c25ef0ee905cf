"""Thresholds from the scores of good parts: hold the false-reject rate the engineer asks for.

The threshold is an upper quantile of the good-part score distribution, but a quantile read
off N samples is itself a random number: with 200 good parts a raw 99.5 % quantile is set by
the one highest score and lands anywhere between a 0.1 % and a 2 % false-reject rate on the
next batch. So the proposal is the smallest order statistic that is at or above the true
(1 - FRR) quantile with the stated confidence (a distribution-free binomial bound). When N is
too small for that bound, the highest good score is used and the report says which FRR the
sample *can* vouch for (~3/N at 95 %): the smallest meaningful FRR is about 1/N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from calibration.report import CalibrationError


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) <= k), summed in log space so n in the hundreds of thousands is fine."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    lp, lq, ln = math.log(p), math.log1p(-p), math.lgamma(n + 1)

    def tail(indices: range) -> float:
        logs = [ln - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq for i in indices]
        top = max(logs)
        return math.exp(top) * sum(math.exp(v - top) for v in logs)

    # Sum the shorter side: thresholds sit far in the upper tail, where k is close to n.
    if k < n - k:
        return min(1.0, tail(range(k + 1)))
    return max(0.0, 1.0 - tail(range(k + 1, n + 1)))


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial confidence interval for a rate of ``k`` events in ``n`` trials."""
    if n <= 0:
        raise ValueError("clopper_pearson: n must be positive")
    alpha = 1.0 - confidence

    def solve(target: float, kk: int) -> float:
        # p such that P(X <= kk) = target; binom_cdf falls as p grows.
        lo, hi = 0.0, 1.0
        for _ in range(100):
            mid = (lo + hi) / 2
            if binom_cdf(kk, n, mid) > target:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    lower = 0.0 if k == 0 else solve(1.0 - alpha / 2, k - 1)
    upper = 1.0 if k == n else solve(alpha / 2, k)
    return lower, upper


@dataclass(frozen=True)
class ThresholdProposal:
    """A proposed raw threshold and the statistics an engineer needs to trust it."""

    threshold: float  # raw score: a part scoring above it is rejected
    frr_target: float
    confidence: float
    n_good: int
    order_index: int  # 1-based rank of the chosen order statistic among the good scores
    raw_quantile: float  # the plain empirical (1 - FRR) quantile, for comparison
    sample_frr: float  # share of the given good parts above the threshold
    frr_upper_bound: float  # one-sided upper bound on the true FRR at this threshold
    limited_by_sample: bool  # N too small for the bound: the highest good score was used
    notes: tuple[str, ...]

    def report_lines(self) -> list[str]:
        lines = [
            f"good parts scored: {self.n_good}",
            f"requested false-reject rate: {self.frr_target:.4%} (confidence {self.confidence:.0%})",
            f"proposed threshold (raw): {self.threshold:.6g}  = good score of rank "
            f"{self.order_index} of {self.n_good}",
            f"plain empirical quantile for comparison: {self.raw_quantile:.6g}",
            f"good parts above the threshold in this sample: {self.sample_frr:.4%}",
            f"true FRR at this threshold is below {self.frr_upper_bound:.4%} "
            f"with {self.confidence:.0%} confidence",
        ]
        return lines + [f"note: {n}" for n in self.notes]


def propose_threshold(good_scores: np.ndarray | list[float], frr: float,
                      confidence: float = 0.95) -> ThresholdProposal:
    """The threshold that keeps the false-reject rate at or below ``frr`` with ``confidence``.

    Picks x_(k), the k-th smallest good score, with the smallest k such that
    P(x_(k) >= q_(1-frr)) = P(Binomial(n, 1 - frr) <= k - 1) >= confidence. This holds for any
    continuous score distribution. On a fresh sample the realized FRR is then at most ``frr``
    in ``confidence`` of calibrations, and typically a little below it.
    """
    scores = np.sort(np.asarray(good_scores, dtype=np.float64).ravel())
    if scores.size == 0:
        raise CalibrationError("no good-part scores to set a threshold from")
    if not np.all(np.isfinite(scores)):
        bad = int(np.count_nonzero(~np.isfinite(scores)))
        raise CalibrationError(f"{bad} good-part score(s) are NaN or infinite; check the model and the images")
    if not 0.0 < frr < 1.0:
        raise CalibrationError(f"--frr {frr}: expected a false-reject rate between 0 and 1 (e.g. 0.005)")
    if not 0.5 <= confidence < 1.0:
        raise CalibrationError(f"confidence {confidence}: expected a value in [0.5, 1)")
    n = int(scores.size)
    p = 1.0 - frr
    notes: list[str] = []
    # Smallest k with binom_cdf(k - 1, n, p) >= confidence; binom_cdf grows with k.
    lo, hi = 1, n + 1
    while lo < hi:
        mid = (lo + hi) // 2
        if binom_cdf(mid - 1, n, p) >= confidence:
            hi = mid
        else:
            lo = mid + 1
    k = lo
    limited = k > n
    if limited:
        k = n
        achievable = 1.0 - (1.0 - confidence) ** (1.0 / n)
        notes.append(
            f"{n} good parts cannot vouch for an FRR of {frr:.4%}: even the highest good score "
            f"only guarantees FRR < {achievable:.3%} ({confidence:.0%} confidence). For the "
            f"requested rate score at least {min_good_parts(frr, confidence)} good parts"
        )
    threshold = float(scores[k - 1])
    raw_q = float(np.quantile(scores, p, method="higher"))
    above = int(np.count_nonzero(scores > threshold))
    upper = clopper_pearson(above, n, 2 * confidence - 1)[1]  # one-sided bound at `confidence`
    notes.append(
        f"with {n} good parts the smallest meaningful FRR is about 1/N = {1.0 / n:.3%}; "
        "rates below that are extrapolation, not measurement"
    )
    if not limited and k < n:
        notes.append(
            "the threshold is an order statistic chosen by a binomial bound, not the raw quantile, "
            "so the sampling error of the quantile is on the safe side"
        )
    if threshold == scores[-1] and not limited:
        notes.append("the threshold equals the highest good score: a margin may be wise")
    return ThresholdProposal(threshold, frr, confidence, n, k, raw_q, above / n, upper, limited, tuple(notes))


def min_good_parts(frr: float, confidence: float = 0.95) -> int:
    """How many good parts the bound needs before the highest score vouches for ``frr``."""
    return int(math.ceil(math.log(1.0 - confidence) / math.log(1.0 - frr)))


@dataclass(frozen=True)
class DetectionReport:
    """How many of the given defective parts the threshold catches."""

    n_defective: int
    detected: int
    interval: tuple[float, float]  # 95 % Clopper-Pearson on the detection rate

    @property
    def rate(self) -> float:
        return self.detected / self.n_defective if self.n_defective else float("nan")

    def report_line(self) -> str:
        lo, hi = self.interval
        return (f"defective parts detected: {self.detected}/{self.n_defective} = {self.rate:.1%} "
                f"(95% interval {lo:.1%}..{hi:.1%})")


def detection_rate(defect_scores: np.ndarray | list[float], threshold: float) -> DetectionReport:
    scores = np.asarray(defect_scores, dtype=np.float64).ravel()
    if scores.size == 0:
        raise CalibrationError("no defective-part scores given")
    hit = int(np.count_nonzero(scores > threshold))
    return DetectionReport(int(scores.size), hit, clopper_pearson(hit, int(scores.size)))


def histogram_png(path, good: np.ndarray, threshold: float, title: str,
                  defects: np.ndarray | None = None, model_threshold: float | None = None,
                  own_label: str = "model's own", x_label: str = "raw score") -> None:
    """Score histogram with the proposed (and the model's own) threshold line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    values = [np.asarray(good, dtype=np.float64)]
    if defects is not None and len(defects):
        values.append(np.asarray(defects, dtype=np.float64))
    lo = min(float(v.min()) for v in values + [np.asarray([threshold])])
    hi = max(float(v.max()) for v in values + [np.asarray([threshold])])
    pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.05
    # The model's own threshold is drawn only when it is on the data's scale; a far-off line
    # would squash the distribution the engineer needs to see into a few pixels.
    own_on_scale = model_threshold is not None and lo - 3 * (hi - lo) <= model_threshold <= hi + 3 * (hi - lo)
    if own_on_scale:
        lo, hi = min(lo, model_threshold), max(hi, model_threshold)
    bins = np.linspace(lo - pad, hi + pad, 50)
    ax.hist(values[0], bins=bins, alpha=0.7, label=f"good (n={len(values[0])})", color="tab:green")
    if len(values) > 1:
        ax.hist(values[1], bins=bins, alpha=0.6, label=f"defective (n={len(values[1])})", color="tab:red")
    ax.axvline(threshold, color="black", linestyle="--", label=f"proposed {threshold:.4g}")
    if own_on_scale:
        ax.axvline(model_threshold, color="tab:blue", linestyle=":", label=f"{own_label} {model_threshold:.4g}")
    elif model_threshold is not None:
        ax.plot([], [], " ", label=f"{own_label} {model_threshold:.4g} (off scale)")
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_xlabel(x_label)
    ax.set_ylabel("parts")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
