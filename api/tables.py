"""Result tables (flat DataFrames from gapmodel.posterior) to typed JSON rows and files."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from api.disclosure import Policy, disclose, unflagged

STATS = ("mean", "sd", "lower", "upper")


def clean(value: Any) -> Any:
    """JSON-safe scalar: numpy to Python, NaN and infinities to None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def control(table: pd.DataFrame, policy: Policy | None) -> pd.DataFrame:
    """Disclosure control when a policy applies, else the same table with flags false."""
    return disclose(table, policy) if policy is not None else unflagged(table)


def records(table: pd.DataFrame, measures: Sequence[str], groups: Sequence[str],
            plain: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One dict per row: ``group`` (label columns), a Summary per measure and the
    `plain` columns as they are."""
    columns = {c: table[c].to_numpy() for c in table.columns}
    out = []
    for i in range(len(table)):
        row: dict[str, Any] = {"group": {g: str(columns[g][i]) for g in groups}}
        for m in measures:
            row[m] = {s: clean(columns[f"{m}_{s}"][i]) for s in STATS
                      if f"{m}_{s}" in columns}
        for c in plain:
            if c in columns:
                row[c] = clean(columns[c][i])
        out.append(row)
    return out


def label_columns(table: pd.DataFrame, known: Sequence[str]) -> list[str]:
    """Columns that label a row (group keys), in order, from the names a view knows."""
    return [c for c in table.columns if c in known]


def to_csv(table: pd.DataFrame) -> bytes:
    return table.to_csv(index=False, lineterminator="\n").encode()


def to_parquet(table: pd.DataFrame) -> bytes:
    frame = table.copy()
    frame.attrs = {}
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()
