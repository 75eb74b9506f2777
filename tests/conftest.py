"""Shared fixtures: a tiny valid dataset directory to break in many ways."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TINY = {
    "strata.csv": """stratum,age_band,sex,ethnicity
s1,40-59,F,White
s2,40-59,F,Black
s3,40-59,M,White
s4,40-59,M,Black
""",
    "areas.csv": """area,name,pcn,icb
P1,Practice 1,N1,I1
P2,Practice 2,N1,I1
P3,Practice 3,N2,I1
""",
    "population.csv": "area,stratum,population\n" + "".join(
        f"{a},{s},100\n" for a in ("P1", "P2", "P3") for s in ("s1", "s2", "s3", "s4")),
    "register.csv": """area,sex,ethnicity,count
P1,F,White,10
P1,F,Black,*
P1,M,,12
P1,F,Not stated,3
P2,,,20
P3,,,25
""",
    "reference.csv": """ref_stratum,y,n,rate,lower,upper
F40,30,200,,,
M40,,,0.2,0.15,0.25
""",
    "reference_map.csv": """stratum,ref_stratum
s1,F40
s2,F40
s3,M40
s4,M40
""",
    "covariates.csv": """area,imd
P1,1.5
P2,0.2
P3,-1
""",
    "adjacency.csv": "area1,area2\nP1,P2\n",
    "dataset.yaml": """name: tiny
area_level: practice
registers:
  register:
    rounding: 5
    not_stated: {ethnicity: Not stated}
""",
}


def write_tiny(directory: Path, **replace: str | None) -> Path:
    """Write the tiny dataset; `replace` swaps (or, with None, removes) files by stem."""
    directory.mkdir(parents=True, exist_ok=True)
    files = dict(TINY)
    for stem, text in replace.items():
        name = next((k for k in files if k.split(".")[0] == stem), f"{stem}.csv")
        if text is None:
            files.pop(name, None)
        else:
            files[name] = text
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    return write_tiny(tmp_path / "tiny")


def shared_data_dir() -> Path | None:
    """The public England data: $GAPMODEL_DATA_DIR, else ../shared/data beside the repo."""
    env = os.environ.get("GAPMODEL_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    return next((p for p in candidates if (p / "README.md").exists()), None)
