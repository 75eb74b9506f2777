"""The dashboard at ``/``: one page and its static files, calling the JSON API.

The page holds no data: it asks for an API key, keeps it in the browser's
sessionStorage and sends it as ``X-API-Key`` to the ``/v1`` routes, so roles and
disclosure control apply exactly as for any client. Besides the page, this module
answers two things the dashboard needs and the API does not say: the caller's role
(``/dashboard/key``) and area boundaries for maps (``/dashboard/boundaries``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from api.auth import at_least, require
from api.db import ApiKey
from api.errors import ApiError
from api.routes.common import policy_for
from api.state import Services, services
from gapmodel import __version__

from .boundaries import load_all

HERE = Path(__file__).parent
STATIC = "/dashboard/static"
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)
Viewer = Annotated[ApiKey, Depends(require("viewer"))]
Svc = Annotated[Services, Depends(services)]


def boundaries(request: Request) -> dict[str, dict[str, Any]]:
    return getattr(request.app.state, "boundaries", {})


@router.get("/", response_class=HTMLResponse)
def index(request: Request) -> HTMLResponse:
    """The dashboard page (data come later, from the API, with the user's key)."""
    return templates.TemplateResponse(request, "index.html.j2",
                                      {"static": STATIC, "version": __version__})


@router.get("/dashboard/key")
def key_info(key: Viewer, svc: Svc) -> dict[str, Any]:
    """The caller's key: name, role, and what the role may see and do."""
    return {"name": key.name, "role": key.role, "plans": at_least(key, "outreach"),
            "exact": policy_for(key, svc.settings) is None}


@router.get("/dashboard/boundaries")
def boundary_levels(_: Viewer, request: Request) -> dict[str, Any]:
    """Levels with boundaries, and how many areas each has."""
    return {"levels": {level: len(b["features"]) for level, b in
                       boundaries(request).items()}}


@router.get("/dashboard/boundaries/{level}")
def boundary_level(level: str, _: Viewer, request: Request) -> JSONResponse:
    """One level's boundaries: ``{level, bbox, features: [{code, name, polygons}]}``."""
    found = boundaries(request).get(level)
    if found is None:
        raise ApiError(404, f"no boundaries for level '{level}'; levels: "
                       f"{', '.join(boundaries(request)) or 'none'}")
    return JSONResponse(found, headers={"Cache-Control": "private, max-age=3600"})


def install(app: FastAPI) -> None:
    """Read the configured boundaries, add the page and its routes, serve the statics."""
    app.state.boundaries = load_all(app.state.services.settings.boundaries)
    app.include_router(router)
    app.mount(STATIC, StaticFiles(directory=HERE / "static"), name="dashboard-static")
