"""HTML rendering of the report with Jinja2 (autoescaped; figures are trusted inline SVG)."""

from __future__ import annotations

import math
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def count(x: Any) -> str:
    """A count with thousands separators; '-' when missing."""
    return f"{x:,.0f}" if _finite(x) else "-"


def pct(x: Any, digits: int = 1) -> str:
    """A share as a percentage."""
    return f"{100 * x:.{digits}f}%" if _finite(x) else "-"


def num(x: Any, digits: int = 3) -> str:
    """A parameter value: fixed decimals, or '-' when missing."""
    return f"{x:.{digits}f}" if _finite(x) else "-"


def environment() -> Environment:
    env = Environment(loader=PackageLoader("gapmodel.report", "templates"),
                      autoescape=select_autoescape(["html", "j2"]), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(count=count, pct=pct, num=num, svg=Markup)
    return env


def render(sections: dict[str, Any], title: str) -> str:
    """The whole report page."""
    return environment().get_template("report.html.j2").render(s=sections, title=title)
