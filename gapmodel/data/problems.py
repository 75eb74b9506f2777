"""Validation problems: what is wrong, where (file, line, column) and which rule."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning", "note"]

#: At most this many rows are listed for one rule in one column of one file.
MAX_ROWS_PER_RULE = 20


@dataclass(frozen=True)
class Problem:
    """One finding about an input file. Lines count the header as line 1."""

    file: str
    rule: str
    message: str
    line: int | None = None
    column: str | None = None
    severity: Severity = "error"

    def __str__(self) -> str:
        where = [self.file]
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        return f"{self.severity}: {', '.join(where)}: [{self.rule}] {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {
            "severity": self.severity,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "rule": self.rule,
            "message": self.message,
        }


class DataValidationError(ValueError):
    """Raised when input data break the contract; carries every problem found."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = list(problems)
        errors = [p for p in self.problems if p.severity == "error"]
        lines = "\n".join(f"  {p}" for p in errors)
        super().__init__(f"{len(errors)} problem(s) in the input data:\n{lines}")


class ProblemLog:
    """Collects problems while a dataset is checked."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def error(self, file: str, rule: str, message: str, line: int | None = None,
              column: str | None = None) -> None:
        self.items.append(Problem(file, rule, message, line, column, "error"))

    def warning(self, file: str, rule: str, message: str, line: int | None = None,
                column: str | None = None) -> None:
        self.items.append(Problem(file, rule, message, line, column, "warning"))

    def note(self, file: str, rule: str, message: str) -> None:
        self.items.append(Problem(file, rule, message, None, None, "note"))

    def rows(self, file: str, rule: str, column: str | None, lines: Iterable[int],
             messages: Iterable[str]) -> None:
        """Report one error per offending row, capped, with a count of the rest."""
        pairs = list(zip(lines, messages, strict=True))
        for line, message in pairs[:MAX_ROWS_PER_RULE]:
            self.error(file, rule, message, int(line), column)
        if len(pairs) > MAX_ROWS_PER_RULE:
            self.error(file, rule, f"... and {len(pairs) - MAX_ROWS_PER_RULE} more rows "
                       "breaking the same rule", None, column)

    @property
    def has_errors(self) -> bool:
        return any(p.severity == "error" for p in self.items)

    def raise_if_errors(self) -> None:
        if self.has_errors:
            raise DataValidationError(self.items)
