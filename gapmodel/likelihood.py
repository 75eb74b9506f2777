"""Register likelihoods: binomial or beta-binomial, exact or interval-censored.

A censored count contributes log P(lo <= R <= hi), computed as the log-sum-exp of the
probability mass over the interval (suppression and rounding give short intervals), never
by substituting a value.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
from pytensor.tensor.special import betaln

#: Intervals wider than this are refused: summing the mass would be too costly.
MAX_WIDTH = 4000


def _log_choose(n, k):
    return pt.gammaln(n + 1) - pt.gammaln(k + 1) - pt.gammaln(n - k + 1)


def binomial_logpmf(k, n, p):
    return _log_choose(n, k) + k * pt.log(p) + (n - k) * pt.log1p(-p)


def beta_binomial_logpmf(k, n, p, concentration):
    a, b = p * concentration, (1 - p) * concentration
    return _log_choose(n, k) + betaln(k + a, n - k + b) - betaln(a, b)


def interval_logp(lo: np.ndarray, hi: np.ndarray, n, p, concentration=None):
    """log P(lo <= R <= hi) per observation, for R ~ (Beta-)Binomial(n, p).

    `lo` and `hi` are numpy integer arrays (data), `n` and `p` tensors or arrays.
    """
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.asarray(hi, dtype=np.int64)
    width = int((hi - lo).max()) + 1 if len(lo) else 1
    if width > MAX_WIDTH:
        raise ValueError(f"a censoring interval spans {width} values (limit {MAX_WIDTH})")
    k = lo[:, None] + np.arange(width)[None, :]
    inside = k <= hi[:, None]
    k = np.where(inside, k, lo[:, None]).astype("float64")
    n_, p_ = pt.as_tensor(n)[:, None], pt.as_tensor(p)[:, None]
    if concentration is None:
        terms = binomial_logpmf(k, n_, p_)
    else:
        terms = beta_binomial_logpmf(k, n_, p_, concentration)
    if width == 1:
        return terms[:, 0]
    terms = pt.switch(inside, terms, -np.inf)
    return pt.logsumexp(terms, axis=1)
