"""Audit of writes: who did what to which target, when, and how it ended."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from api.db import ApiKey, Database
from api.errors import ApiError


class Outcome:
    """What a write reports into its audit record."""

    def __init__(self) -> None:
        self.status = 200
        self.detail = ""


@contextmanager
def audited(db: Database, key: ApiKey, action: str, target: str) -> Iterator[Outcome]:
    """Record the write when the block ends: ok, refused (an ApiError) or error."""
    outcome = Outcome()
    try:
        yield outcome
    except ApiError as exc:
        db.audit(key=key, action=action, target=target, outcome="refused",
                 status=exc.status, detail=exc.message)
        raise
    except Exception as exc:
        db.audit(key=key, action=action, target=target, outcome="error", status=500,
                 detail=f"{type(exc).__name__}: {exc}")
        raise
    db.audit(key=key, action=action, target=target, outcome="ok", status=outcome.status,
             detail=outcome.detail)
