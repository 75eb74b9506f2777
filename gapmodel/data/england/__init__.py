"""Real England inputs (QOF 2022-23, GP registered patients, HSE 2022, CFAS II) -> Datasets.

Each builder reads the public files from a data directory (argument, else the environment
variable ``GAPMODEL_DATA_DIR``) at run time and returns a validated `Dataset` whose
``report`` lists every harmonisation made. See docs/data.md.
"""

from gapmodel.data.england.builders import (
    DEM_UNDER65_SHARE,
    DEMENTIA,
    HSE_DESIGN_EFFECT,
    HSE_N_PER_STRATUM,
    HYPERTENSION,
    Condition,
    build,
    cells_for,
    dementia_pcn,
    hypertension_pcn,
    hypertension_subicb,
)
from gapmodel.data.england.cells import AreaCells, aggregate, largest_remainder, pcn_cells
from gapmodel.data.england.sources import ENV_VAR, data_directory

BUILDERS = {
    "hypertension_pcn": hypertension_pcn,
    "hypertension_subicb": hypertension_subicb,
    "dementia_pcn": dementia_pcn,
}

__all__ = [
    "BUILDERS",
    "DEMENTIA",
    "DEM_UNDER65_SHARE",
    "ENV_VAR",
    "HSE_DESIGN_EFFECT",
    "HSE_N_PER_STRATUM",
    "HYPERTENSION",
    "AreaCells",
    "Condition",
    "aggregate",
    "build",
    "cells_for",
    "data_directory",
    "dementia_pcn",
    "hypertension_pcn",
    "hypertension_subicb",
    "largest_remainder",
    "pcn_cells",
]
