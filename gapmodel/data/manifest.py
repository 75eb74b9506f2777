"""The dataset manifest (`dataset.yaml`): names and per-register reading options."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gapmodel.data.problems import ProblemLog
from gapmodel.data.tables import MANIFEST


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_range(value: tuple[int, int]) -> tuple[int, int]:
    lo, hi = value
    if lo < 0 or hi < lo:
        raise ValueError(f"suppression range must satisfy 0 <= low <= high, got {list(value)}")
    return value


class RegisterOptions(_Strict):
    """How the counts of one register file were published."""

    rounding: int | None = Field(default=None, ge=2,
                                 description="counts rounded to the nearest multiple of this")
    suppressed: tuple[int, int] | None = Field(default=None,
                                               description="range that '*' stands for")
    not_stated: dict[str, str] = Field(default_factory=dict,
                                       description="attribute -> value meaning 'not recorded'")
    description: str = ""

    _range = field_validator("suppressed")(lambda v: None if v is None else _check_range(v))


class Manifest(_Strict):
    """What a dataset is and how to read its registers."""

    name: str = "dataset"
    condition: str = ""
    description: str = ""
    area_level: str = "area"
    levels: tuple[str, ...] | None = None
    suppressed: tuple[int, int] = (1, 7)
    registers: dict[str, RegisterOptions] = Field(default_factory=dict)
    sources: dict[str, str] = Field(default_factory=dict)

    _range = field_validator("suppressed")(_check_range)

    def register_options(self, stem: str) -> RegisterOptions:
        options = self.registers.get(stem, RegisterOptions())
        if options.suppressed is None:
            options = options.model_copy(update={"suppressed": self.suppressed})
        return options

    def to_yaml_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_defaults=True)


def parse_manifest(raw: dict[str, Any], default_name: str, log: ProblemLog) -> Manifest:
    """Validate the manifest, logging each broken key; fall back to defaults on error."""
    content = {"name": default_name, **raw}
    try:
        return Manifest.model_validate(content)
    except ValidationError as exc:
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            log.error(MANIFEST, "manifest", f"key '{key}': {err['msg']}")
        return Manifest(name=default_name)
