"""Statistical disclosure control of result tables, for roles that must not see small
counts: counts that would show as ``low..high`` people (default 1 to 7) are withheld and
the others rounded to a base (default 5).

A pure function of a flat table (columns such as ``undiagnosed_mean``,
``undiagnosed_lower``); the service applies it before serialisation. Per row it adds:

* ``suppressed``: some count was withheld (NaN here, null in JSON);
* ``rounded``: the shown counts were rounded;
* ``rate_flagged``: a rate is shown whose numerator count was withheld (rates are kept:
  they do not reveal a count on their own, but they rest on few people); where the
  numerator is not in the table (equity tables), any withheld count flags the rates.

A count's ``sd`` is withheld with its mean and never rounded (it is not a count of people).
Suppression is cell by cell: differences between overlapping queries are not controlled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

BOUNDS = ("mean", "lower", "upper")

#: Count measures summarised as <measure>_<stat> columns.
COUNT_MEASURES = ("expected", "recorded", "undiagnosed", "found")
#: Plain count columns (no summary statistics).
PLAIN_COUNTS = ("unregistered", "contacts")
#: Rate -> the count in its numerator.
RATE_NUMERATORS: Mapping[str, str] = {"diagnosis_rate": "recorded",
                                      "yield_per_contact": "undiagnosed",
                                      "number_needed_to_screen": "undiagnosed",
                                      "yield": "found", "ratio": "recorded",
                                      "difference": "recorded"}


@dataclass(frozen=True)
class Policy:
    """Withhold counts in [low, high] (after rounding to whole people); round the rest to
    `base`."""

    low: int = 1
    high: int = 7
    base: int = 5
    measures: tuple[str, ...] = COUNT_MEASURES
    plain: tuple[str, ...] = PLAIN_COUNTS
    rates: Mapping[str, str] = field(default_factory=lambda: dict(RATE_NUMERATORS))

    def __post_init__(self) -> None:
        if self.base < 1 or self.low < 0 or self.high < self.low - 1:
            raise ValueError("disclosure policy needs base >= 1 and 0 <= low <= high + 1")


def _control(values: np.ndarray, policy: Policy) -> tuple[np.ndarray, np.ndarray]:
    """(shown values, withheld mask) of a float array of counts."""
    whole = np.rint(values)
    hide = (whole >= policy.low) & (whole <= policy.high)
    shown = np.where(hide, np.nan, policy.base * np.rint(values / policy.base))
    return shown, hide


def disclose(table: pd.DataFrame, policy: Policy | None = None) -> pd.DataFrame:
    """A copy of `table` with small counts withheld, the rest rounded, rows flagged."""
    policy = policy or Policy()
    out = table.copy()
    n = len(out)
    suppressed = np.zeros(n, dtype=bool)
    rounded = np.zeros(n, dtype=bool)
    withheld: dict[str, np.ndarray] = {}
    for measure in policy.measures:
        bounds = [f"{measure}_{s}" for s in BOUNDS if f"{measure}_{s}" in out.columns]
        if not bounds:
            continue
        values = out[bounds].to_numpy(dtype=np.float64)
        shown, hide = _control(values, policy)
        out[bounds] = shown
        mean_hidden = hide[:, 0] if bounds[0].endswith("_mean") else hide.any(axis=1)
        if f"{measure}_sd" in out.columns:
            out[f"{measure}_sd"] = np.where(mean_hidden, np.nan,
                                            out[f"{measure}_sd"].to_numpy(np.float64))
        withheld[measure] = hide.any(axis=1)
        suppressed |= hide.any(axis=1)
        rounded |= (~hide & np.isfinite(values)).any(axis=1)
    for column in policy.plain:
        if column in out.columns:
            values = out[column].to_numpy(dtype=np.float64)
            shown, hide = _control(values, policy)
            out[column] = shown
            withheld[column] = hide
            suppressed |= hide
            rounded |= ~hide & np.isfinite(values)
    flagged = np.zeros(n, dtype=bool)
    for rate, numerator in policy.rates.items():
        if f"{rate}_mean" in out.columns:
            flagged |= withheld.get(numerator, suppressed)
    out["suppressed"] = suppressed
    out["rounded"] = rounded
    out["rate_flagged"] = flagged
    return out


def unflagged(table: pd.DataFrame) -> pd.DataFrame:
    """The table as shown to roles that see exact figures: all flags false."""
    out = table.copy()
    for column in ("suppressed", "rounded", "rate_flagged"):
        out[column] = False
    return out
