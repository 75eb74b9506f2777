"""Service settings from the environment (pydantic-settings).

Names: ``GAPMODEL_REGISTRY``, ``DATABASE_URL`` and ``GAPMODEL_<FIELD>`` for the rest
(e.g. ``GAPMODEL_DISCLOSURE_MAX=10``, ``GAPMODEL_MAX_UPLOAD_BYTES``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path("models")


class BoundarySource(BaseModel):
    """A GeoJSON file of one area level's boundaries (WGS84 lon/lat) for the dashboard's
    map, and the feature properties holding the area code and, optionally, its name."""

    path: Path
    code: str = "code"
    name: str | None = None


class Settings(BaseSettings):
    """Everything a deployment may change; defaults suit one machine with no set-up."""

    model_config = SettingsConfigDict(env_prefix="GAPMODEL_", extra="ignore",
                                      populate_by_name=True)

    registry: Path = Field(Path("models/registry"), description="registry root",
                           validation_alias=AliasChoices("GAPMODEL_REGISTRY", "registry"))
    database_url: str = Field(f"sqlite:///{DEFAULT_DATA_DIR / 'gapmodel.db'}",
                              validation_alias=AliasChoices("DATABASE_URL", "database_url"))
    datasets_dir: Path = Field(DEFAULT_DATA_DIR / "datasets",
                               description="uploaded datasets, one directory per hash")
    specs_dir: Path = Field(Path("models"), description="named model specs (*.yaml)")
    data_dir: Path | None = Field(None, description="England data directory for specs "
                                  "built from the public files")
    # disclosure control: counts in [disclosure_min, disclosure_max] are withheld and the
    # rest rounded to disclosure_round for roles below disclosure_exempt_role
    disclosure_enabled: bool = True
    disclosure_min: int = Field(1, ge=0)
    disclosure_max: int = Field(7, ge=0)
    disclosure_round: int = Field(5, ge=1)
    disclosure_exempt_role: str = "analyst"
    max_upload_bytes: int = Field(50 * 2**20, ge=1, description="largest request body")
    max_upload_files: int = Field(40, ge=1)
    cors_origins: list[str] = Field(default_factory=list, description="empty: CORS off")
    cache_versions: int = Field(4, ge=1, description="loaded versions kept in memory")
    fit_workers: int = Field(1, ge=1, description="processes running fits")
    fit_function: str = Field("gapmodel.fit:fit", description="module:function that fits")
    cluster_url: str | None = Field(None, description="Dask scheduler to run fits on, e.g. "
                                    "tcp://scheduler:8786; empty: a local process pool")
    cluster_timeout: float = Field(10.0, gt=0, description="seconds to wait for the "
                                   "scheduler when connecting")
    preload: bool = Field(True, description="load every active version at start-up")
    log_level: str = "INFO"
    page_size_max: int = Field(5000, ge=1)
    boundaries: dict[str, BoundarySource] = Field(
        default_factory=dict, description="dashboard maps: area level -> GeoJSON file and "
        "its code property, e.g. {\"sub_icb\": {\"path\": \"...geojson\", \"code\": "
        "\"LOC22CD\", \"name\": \"LOC22NM\"}}")
