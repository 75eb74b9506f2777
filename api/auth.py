"""API keys and roles: ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``.

Roles are ordered viewer < outreach < analyst < admin; a route names the least role it
needs. Refused writes are written to the audit log with the key that tried.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.db import ROLES, ApiKey
from api.errors import ApiError
from api.state import Services, services

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="an API key made with `gapmodel keys create`")
bearer = HTTPBearer(auto_error=False, description="the same API key as a bearer token")


def rank(role: str) -> int:
    return ROLES.index(role) if role in ROLES else -1


def at_least(key: ApiKey, role: str) -> bool:
    return rank(key.role) >= rank(role)


def current_key(request: Request,
                header: Annotated[str | None, Security(api_key_header)],
                token: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
                svc: Annotated[Services, Depends(services)]) -> ApiKey:
    """The caller's live key; 401 when none is given or it is unknown or revoked."""
    key = header or (token.credentials if token else None)
    challenge = {"WWW-Authenticate": 'Bearer realm="gapmodel"'}
    if not key:
        raise ApiError(401, "an API key is required (header X-API-Key or Authorization: "
                       "Bearer)", headers=challenge)
    row = svc.db.find_key(key.strip())
    if row is None:
        raise ApiError(401, "unknown or revoked API key", headers=challenge)
    request.state.key = row
    return row


def require(role: str, action: str | None = None) -> Callable[..., ApiKey]:
    """A dependency: the caller's key if its role is at least `role`, else 403 (a refused
    write, named by `action`, is audited)."""
    if role not in ROLES:
        raise ValueError(role)

    def check(request: Request, key: Annotated[ApiKey, Depends(current_key)],
              svc: Annotated[Services, Depends(services)]) -> ApiKey:
        if not at_least(key, role):
            if action:
                svc.db.audit(key=key, action=action, target=request.url.path,
                             outcome="denied", status=403,
                             detail=f"role {key.role} below {role}")
            raise ApiError(403, f"this needs the {role} role or higher; the key's role is "
                           f"{key.role}")
        return key

    return check
