"""Helpers the query routes share: disclosure policy, provenance, list parameters."""

from __future__ import annotations

from typing import Any

from api.auth import at_least
from api.db import ApiKey
from api.disclosure import Policy
from api.settings import Settings
from gapmodel.posterior import PosteriorView

ERROR_TEXT = {400: "malformed request", 401: "no valid API key",
              403: "the key's role is too low", 404: "no such model, version or resource",
              409: "conflicts with the registry's state (e.g. no active version)",
              413: "request body too large",
              422: "invalid parameters, or a query the version cannot answer"}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error statuses, all in the one error shape."""
    from api.schemas import ErrorResponse

    return {c: {"model": ErrorResponse, "description": ERROR_TEXT[c]} for c in codes}


def policy_for(key: ApiKey, settings: Settings) -> Policy | None:
    """The disclosure policy for a caller, or None when it sees exact figures."""
    if not settings.disclosure_enabled or at_least(key, settings.disclosure_exempt_role):
        return None
    return Policy(low=settings.disclosure_min, high=settings.disclosure_max,
                  base=settings.disclosure_round)


def provenance(model: str, view: PosteriorView, prob: float, key: ApiKey,
               settings: Settings) -> dict[str, Any]:
    return {"model": model, "version": view.version,
            "dataset_hash": view.meta.get("dataset", {}).get("hash", ""),
            "prob": prob, "draws": view.n_draws,
            "disclosure": {"applied": policy_for(key, settings) is not None,
                           "suppress_from": settings.disclosure_min,
                           "suppress_to": settings.disclosure_max,
                           "round_to": settings.disclosure_round,
                           "exempt_role": settings.disclosure_exempt_role}}


def split(values: list[str] | None) -> list[str] | None:
    """Repeated and comma-separated query values as one list (None when absent)."""
    if not values:
        return None
    out = [v.strip() for value in values for v in value.split(",") if v.strip()]
    return out or None
