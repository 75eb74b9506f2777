"""Cell filters: a small, safe expression language and column -> values mappings.

    ethnicity == 'Black' and age_band in ['60-79', '80+']
    not (sex == 'M') or imd_score_decile in [9, 10]
    imd_score > 30 & population >= 10

Comparisons are between a column and literals (``==, !=, in, not in``; ``<, <=, >, >=``
for numeric columns), joined by ``and``/``or``/``not`` (or ``&``, ``|``, ``~``).
Nothing is evaluated as Python: the text is parsed and only these forms are accepted, so
a filter from an untrusted client cannot run code. Every value must exist in its column.
"""

from __future__ import annotations

import ast
import io
import operator
import tokenize
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from gapmodel.posterior.view import QueryError

if TYPE_CHECKING:
    from gapmodel.posterior.view import PosteriorView

Where = str | Mapping[str, Any] | None

_OPS: dict[type, str] = {ast.Eq: "==", ast.NotEq: "!=", ast.In: "in", ast.NotIn: "not in",
                         ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_NUMERIC: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "!=": operator.ne}
HELP = ("use comparisons such as ethnicity == 'Black', age_band in ['60-79', '80+'] or "
        "imd_score > 30, joined by and / or / not")


def where_mask(view: PosteriorView, where: Where) -> np.ndarray:
    """The cells a filter keeps (all cells for None)."""
    mask = np.ones(len(view.cells), dtype=bool)
    if where is None:
        return mask
    if isinstance(where, str):
        return mask & _expression(view, where) if where.strip() else mask
    if isinstance(where, Mapping):
        for column, value in where.items():
            values = list(value) if isinstance(value, list | tuple | set) else [value]
            mask &= _compare(view, str(column), "in", values)
        return mask
    raise QueryError(f"a filter is a string or a column -> values mapping, not "
                     f"{type(where).__name__}")


def _expression(view: PosteriorView, text: str) -> np.ndarray:
    try:
        tree = ast.parse(_words(text), mode="eval")
    except (SyntaxError, tokenize.TokenError) as exc:
        message = exc.msg if isinstance(exc, SyntaxError) else exc.args[0]
        raise QueryError(f"cannot read the filter {text!r}: {message}; {HELP}") from None
    return _node(view, tree.body)


def _words(text: str) -> str:
    """``&``, ``|`` and ``~`` as ``and``, ``or`` and ``not`` (outside quotes), so they bind
    more loosely than comparisons, as in pandas' query: ``a == 1 | b == 2``."""
    words = {"&": "and", "|": "or", "~": "not"}
    tokens = [(tokenize.NAME, words[tok.string]) if tok.type == tokenize.OP
              and tok.string in words else (tok.type, tok.string)
              for tok in tokenize.generate_tokens(io.StringIO(text.strip()).readline)]
    return tokenize.untokenize(tokens).strip()


def _node(view: PosteriorView, node: ast.expr) -> np.ndarray:
    if isinstance(node, ast.BoolOp):
        parts = [_node(view, v) for v in node.values]
        reduce = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        return reduce.reduce(parts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return ~_node(view, node.operand)
    if isinstance(node, ast.Compare):
        operands = [node.left, *node.comparators]
        mask = np.ones(len(view.cells), dtype=bool)
        for left, op, right in zip(operands[:-1], node.ops, operands[1:], strict=True):
            mask &= _comparison(view, left, op, right)
        return mask
    raise QueryError(f"unsupported filter expression '{ast.unparse(node)}'; {HELP}")


def _literal(node: ast.expr) -> Any:
    try:
        value = ast.literal_eval(node)
    except ValueError:
        return None
    ok = (str, int, float)
    if isinstance(value, ok) and not isinstance(value, bool):
        return value
    if isinstance(value, list | tuple | set) and all(
            isinstance(v, ok) and not isinstance(v, bool) for v in value):
        return list(value)
    return None


def _comparison(view: PosteriorView, left: ast.expr, op: ast.cmpop,
                right: ast.expr) -> np.ndarray:
    symbol = _OPS.get(type(op))
    if symbol is None:
        raise QueryError(f"unsupported comparison in filter; {HELP}")
    if isinstance(left, ast.Name) and not isinstance(right, ast.Name):
        column, value = left.id, _literal(right)
    elif isinstance(right, ast.Name) and symbol in _FLIP and not isinstance(left, ast.Name):
        column, value, symbol = right.id, _literal(left), _FLIP[symbol]
    else:
        raise QueryError(f"each comparison needs one column and literal values: "
                         f"'{ast.unparse(left)} {symbol} {ast.unparse(right)}'; {HELP}")
    if value is None:
        raise QueryError(f"values must be literal strings or numbers (or lists of them) "
                         f"in '{ast.unparse(left)} {symbol} {ast.unparse(right)}'")
    if symbol in ("in", "not in") and not isinstance(value, list):
        raise QueryError(f"'{symbol}' needs a list, e.g. {column} {symbol} ['a', 'b']")
    if symbol not in ("in", "not in") and isinstance(value, list):
        raise QueryError(f"'{symbol}' compares with one value; use 'in' for a list")
    return _compare(view, column, symbol, value)


def _compare(view: PosteriorView, column: str, symbol: str, value: Any) -> np.ndarray:
    """Cells where `column symbol value` holds; unknown columns and values are errors."""
    if view.is_numeric(column):
        data = view.numeric(column)
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, int | float) for v in values):
            raise QueryError(f"'{column}' is numeric: compare it with numbers")
        if symbol in ("in", "not in"):
            hit = np.isin(data, values)
            return hit if symbol == "in" else ~hit
        return _NUMERIC[symbol](data, value)
    codes, labels = view.codes(column)
    name = view.resolve(column)
    if symbol not in ("==", "!=", "in", "not in"):
        raise QueryError(f"'{symbol}' needs a numeric column; '{name}' is categorical "
                         f"(use == or in)")
    wanted = [str(v) for v in (value if isinstance(value, list) else [value])]
    known = {label: i for i, label in enumerate(labels.tolist())}
    unknown = [v for v in wanted if v not in known]
    if unknown:
        shown = ", ".join(repr(v) for v in labels.tolist()[:30])
        more = f" and {len(labels) - 30} more" if len(labels) > 30 else ""
        raise QueryError(f"unknown value(s) {', '.join(map(repr, unknown))} for '{name}'; "
                         f"values: {shown}{more}")
    hit = np.isin(codes, [known[v] for v in wanted])
    return hit if symbol in ("==", "in") else ~hit
