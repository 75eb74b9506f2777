"""Column-level checks shared by every table: required columns, numbers, codes, keys."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from gapmodel.data.problems import ProblemLog


def lines(frame: pd.DataFrame, mask: pd.Series | np.ndarray) -> np.ndarray:
    """File line numbers (header = line 1) of the rows selected by mask."""
    return np.asarray(frame.index[np.asarray(mask, dtype=bool)]) + 2


def require_columns(frame: pd.DataFrame, file: str, required: Sequence[str],
                    log: ProblemLog) -> bool:
    missing = [c for c in required if c not in frame.columns]
    for column in missing:
        near = [c for c in frame.columns if c.lower().replace(" ", "_") == column]
        hint = f" (found '{near[0]}': check the spelling and case)" if near else ""
        log.error(file, "missing-column",
                  f"required column '{column}' is missing{hint}; columns present: "
                  f"{', '.join(map(repr, frame.columns))}", 1, column)
    return not missing


def warn_extra_columns(frame: pd.DataFrame, file: str, known: Iterable[str],
                       log: ProblemLog) -> None:
    known = set(known)
    for column in frame.columns:
        if column not in known:
            log.warning(file, "extra-column", "column not used by gapmodel; ignored", 1, column)


def require_values(frame: pd.DataFrame, file: str, column: str, log: ProblemLog) -> pd.Series:
    """Blank cells in a code column are errors; returns the mask of present values."""
    present = frame[column] != ""
    bad = ~present
    log.rows(file, "missing-value", column, lines(frame, bad),
             ["value is empty"] * int(bad.sum()))
    return present


def numbers(frame: pd.DataFrame, file: str, column: str, log: ProblemLog, *,
            integer: bool = False, minimum: float | None = None,
            maximum: float | None = None, blank_ok: bool = False,
            what: str = "value") -> pd.Series:
    """Parse a text column as numbers, logging each bad row; bad or blank rows are NaN."""
    text = frame[column]
    blank = text == ""
    values = pd.to_numeric(text.where(~blank, None), errors="coerce").astype(float)
    not_number = ~blank & values.isna()
    log.rows(file, "not-a-number", column, lines(frame, not_number),
             [f"'{v}' is not a number" for v in text[not_number]])
    if not blank_ok:
        log.rows(file, "missing-value", column, lines(frame, blank),
                 [f"{what} is empty"] * int(blank.sum()))
    ok = values.notna()
    if integer:
        fractional = ok & (values != np.round(values))
        log.rows(file, "not-an-integer", column, lines(frame, fractional),
                 [f"{what} must be a whole number, got {v}" for v in text[fractional]])
        values = values.where(~fractional)
    if minimum is not None:
        low = values.notna() & (values < minimum)
        rule = "negative" if minimum == 0 else "below-minimum"
        log.rows(file, rule, column, lines(frame, low),
                 [f"{what} must be >= {minimum:g}, got {v}" for v in text[low]])
        values = values.where(~low)
    if maximum is not None:
        high = values.notna() & (values > maximum)
        log.rows(file, "above-maximum", column, lines(frame, high),
                 [f"{what} must be <= {maximum:g}, got {v}" for v in text[high]])
        values = values.where(~high)
    return values


def known_codes(frame: pd.DataFrame, file: str, column: str, known: pd.Index | set[str],
                log: ProblemLog, what: str, mask: pd.Series | None = None) -> pd.Series:
    """Flag codes not in `known`; returns the mask of rows whose code is known."""
    values = frame[column]
    is_known = values.isin(known)
    consider = (values != "") if mask is None else (mask & (values != ""))
    bad = consider & ~is_known
    log.rows(file, "unknown-code", column, lines(frame, bad),
             [f"unknown {what} '{v}'" for v in values[bad]])
    return is_known


def no_duplicates(frame: pd.DataFrame, file: str, key: Sequence[str], log: ProblemLog,
                  what: str) -> pd.Series:
    """Flag rows repeating an earlier row's key; returns the mask of first occurrences."""
    repeated = frame.duplicated(subset=list(key), keep="first")
    if repeated.any():
        first_line = {}
        for idx, k in zip(frame.index, map(tuple, frame[list(key)].to_numpy()), strict=True):
            first_line.setdefault(k, idx + 2)
        rows = frame[repeated]
        keys = list(map(tuple, rows[list(key)].to_numpy()))
        log.rows(file, "duplicate", ",".join(key), lines(frame, repeated),
                 [f"duplicate {what} {'/'.join(k)} (first on line {first_line[k]})"
                  for k in keys])
    return ~repeated
