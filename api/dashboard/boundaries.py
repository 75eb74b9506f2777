"""Area boundaries for the dashboard's map: GeoJSON files read once at start-up.

Each configured level (``GAPMODEL_BOUNDARIES``) is reduced to what the map needs: per
feature the area code, a name and the polygon rings in lon/lat rounded to 4 decimals
(about 10 m). The browser projects them to SVG itself.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from api.settings import BoundarySource

log = logging.getLogger("api.dashboard")
DECIMALS = 4


def _round(coords: Any) -> Any:
    """Nested coordinate arrays with every number rounded to DECIMALS."""
    if coords and isinstance(coords[0], int | float):
        return [round(float(c), DECIMALS) for c in coords[:2]]
    return [_round(c) for c in coords]


def _polygons(geometry: Mapping[str, Any] | None) -> list[Any]:
    """A geometry's polygons (each a list of rings); other geometry types are skipped."""
    if not geometry:
        return []
    if geometry.get("type") == "Polygon":
        return [_round(geometry["coordinates"])]
    if geometry.get("type") == "MultiPolygon":
        return [_round(p) for p in geometry["coordinates"]]
    if geometry.get("type") == "GeometryCollection":
        return [p for g in geometry.get("geometries", []) for p in _polygons(g)]
    return []


def read_boundaries(level: str, source: BoundarySource) -> dict[str, Any]:
    """One level's features as ``{level, features: [{code, name, polygons}], bbox}``."""
    data = json.loads(source.path.read_text(encoding="utf-8"))
    features = []
    for feature in data.get("features", []):
        props = feature.get("properties") or {}
        if props.get(source.code) is None:
            continue
        polygons = _polygons(feature.get("geometry"))
        if polygons:
            code = str(props[source.code])
            name = str(props.get(source.name, code)) if source.name else code
            features.append({"code": code, "name": name, "polygons": polygons})
    if not features:
        raise ValueError(f"{source.path}: no polygon feature has the property "
                         f"'{source.code}'")
    points = [pt for f in features for poly in f["polygons"] for ring in poly for pt in ring]
    lons, lats = [p[0] for p in points], [p[1] for p in points]
    return {"level": level, "features": features,
            "bbox": [min(lons), min(lats), max(lons), max(lats)]}


def load_all(sources: Mapping[str, BoundarySource]) -> dict[str, dict[str, Any]]:
    """Every configured level that can be read; a file that cannot is logged and left
    out (the map falls back to tiles), so a bad path never stops the service."""
    out = {}
    for level, source in sources.items():
        try:
            out[level] = read_boundaries(level, source)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("boundaries for level '%s' not loaded: %s", level, exc)
            continue
        log.info("boundaries for level '%s': %d areas from %s", level,
                 len(out[level]["features"]), source.path)
    return out
