"""What the routes share: settings, database, loaded versions, the fit runner, metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from api.db import Database
from api.settings import Settings
from api.store import ModelStore

if TYPE_CHECKING:
    from api.jobs import JobRunner
    from api.metrics import Metrics


@dataclass
class Services:
    settings: Settings
    db: Database
    store: ModelStore
    jobs: JobRunner
    metrics: Metrics


def services(request: Request) -> Services:
    return request.app.state.services
