"""Posterior products from a fitted version's joint cell draws.

    view = PosteriorView.from_version(Registry().active("synthetic_icb"))
    estimates(view, by="pcn", where="ethnicity == 'Black'")
    plan(view, capacity=5000)                     # outreach: where contacts find most
    top_n(view, 20, level="pcn")
    equity(view, by="ethnicity"); inequality(view, "imd_quintile")

Every sum is taken per draw over cells before any summary, so intervals are joint.
"""

from gapmodel.posterior.equity import equity, inequality
from gapmodel.posterior.queries import estimates
from gapmodel.posterior.targeting import Plan, plan, top_n
from gapmodel.posterior.view import Aggregate, PosteriorView, QueryError

__all__ = ["Aggregate", "Plan", "PosteriorView", "QueryError", "equity", "estimates",
           "inequality", "plan", "top_n"]
