"""The public England files: where they are, what they are called, and reading them.

Builders read the files at run time from a data directory (never copied into the
project). Every file is checked for the columns it must have; a missing file or column
raises an error that names it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

ENV_VAR = "GAPMODEL_DATA_DIR"

QOF_PREVALENCE = "qof_2022_23_prevalence_by_practice_all_registers.csv"
QOF_MAPPING = "qof_2022_23_mapping_practice_pcn_subicb_icb_region.csv"
POP_PCN_5YR = "gp_registered_patients_5yr_age_sex_by_pcn_aug2026.csv"
POP_SINGLE_AGE = "gp_registered_patients_single_age_sex_region_icb_subicb_aug2026.csv"
PRACTICE_MAP_2026 = "gp_practice_to_pcn_subicb_icb_region_map_aug2026.csv"
PCN_IMD = "pcn_imd2019_score_popweighted_2023.csv"
PRACTICE_IMD = "gp_practice_imd2019_score_popweighted_2023.csv"
PRACTICE_NON_WHITE = "gp_practice_pct_non_white_census2021_popweighted.csv"
SUBICB_ADJACENCY = "subicb22_england_adjacency.csv"
HSE_HYPERTENSION = "hse_2022_hypertension_prevalence_by_age_sex.csv"
CFAS_DEMENTIA = "cfas2_dementia_prevalence_by_age_sex.csv"

COLUMNS: dict[str, tuple[str, ...]] = {
    QOF_PREVALENCE: ("PRACTICE_CODE", "GROUP_CODE", "REGISTER", "PATIENT_LIST_TYPE",
                     "PRACTICE_LIST_SIZE"),
    QOF_MAPPING: ("REGION_ONS_CODE", "REGION_NAME", "ICB_ONS_CODE", "ICB_NAME",
                  "SUB_ICB_ONS_CODE", "SUB_ICB_NAME", "PCN_ODS_CODE", "PCN_NAME",
                  "PRACTICE_CODE"),
    POP_PCN_5YR: ("PCN_CODE", "SEX", "AGE_GROUP_5", "NUMBER_OF_PATIENTS"),
    POP_SINGLE_AGE: ("ORG_TYPE", "SEX", "AGE", "NUMBER_OF_PATIENTS"),
    PRACTICE_MAP_2026: ("PRACTICE_CODE", "PCN_CODE"),
    PCN_IMD: ("pcn_code", "imd_score"),
    PRACTICE_IMD: ("practice_code", "imd_score"),
    PRACTICE_NON_WHITE: ("practice_code", "non_white_popn", "reg_popn", "pct_non_white"),
    SUBICB_ADJACENCY: ("loc22cd1", "loc22cd2"),
    HSE_HYPERTENSION: ("Sex", "Group"),
    CFAS_DEMENTIA: ("age_band", "sex", "dementia_prevalence", "dementia_prevalence_95_lower",
                    "dementia_prevalence_95_upper"),
}

#: Citations, written into each dataset's manifest (`sources`) and docs/data.md.
CITATIONS: dict[str, str] = {
    QOF_PREVALENCE: "NHS England (NHS Digital), Quality and Outcomes Framework 2022-23, "
                    "practice prevalence (PREVALENCE_2223.csv); registers at 31 Mar 2023. OGL v3.",
    QOF_MAPPING: "NHS England (NHS Digital), QOF 2022-23 MAPPING_NHS_GEOGRAPHIES_2223.csv "
                 "(practice -> PCN -> sub-ICB -> ICB -> region, 2022-23). OGL v3.",
    POP_PCN_5YR: "NHS England, Patients Registered at a GP Practice, 1 Aug 2026, PCN rows "
                 "(single years summed to 5-year bands). OGL v3.",
    POP_SINGLE_AGE: "NHS England, Patients Registered at a GP Practice, 1 Aug 2026, single year "
                    "of age by sex, commissioning regions. OGL v3.",
    PRACTICE_MAP_2026: "NHS England, Patients Registered at a GP Practice, 1 Aug 2026, "
                       "gp-reg-pat-prac-map (practice -> PCN, 2026). OGL v3.",
    PCN_IMD: "MHCLG English Indices of Deprivation 2019 LSOA scores weighted by patients "
             "registered by LSOA (~2022-23), PCN level (blackwellrd/practice_pcn_imd). OGL v3.",
    PRACTICE_IMD: "As the PCN file, practice level (blackwellrd/practice_pcn_imd). OGL v3.",
    PRACTICE_NON_WHITE: "ONS Census 2021 TS021 ethnic group by LSOA weighted by patients "
                        "registered by LSOA, practice level "
                        "(blackwellrd/practice_pcn_ethnicity). OGL v3.",
    SUBICB_ADJACENCY: "ONS Sub-ICB Locations (July 2022) boundaries; Queen contiguity "
                      "(libpysal). OGL v3.",
    HSE_HYPERTENSION: "NHS England, Health Survey for England 2022 Part 2, Adults' health: "
                      "hypertension, by age and sex (published 2024). OGL v3.",
    CFAS_DEMENTIA: "Matthews FE et al., CFAS II, Lancet 2013;382:1405-12: dementia prevalence "
                   "by age and sex with 95% CI (the rates behind NHS England's "
                   "DEMENTIA_ESTIMATE_65_PLUS).",
}


def data_directory(data_dir: str | Path | None = None) -> Path:
    """The England data directory: the argument, else $GAPMODEL_DATA_DIR."""
    if data_dir is None:
        env = os.environ.get(ENV_VAR)
        if not env:
            raise FileNotFoundError(
                f"no England data directory given: pass data_dir or set the environment "
                f"variable {ENV_VAR} to the directory holding the public files "
                f"(e.g. {QOF_PREVALENCE})")
        data_dir = env
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"England data directory '{path}' does not exist "
                                f"(from {'data_dir' if data_dir is not None else ENV_VAR})")
    return path


def read(data_dir: Path, name: str) -> pd.DataFrame:
    """Read one source file, checking it exists and has the columns the builders use."""
    path = data_dir / name
    if not path.is_file():
        raise FileNotFoundError(f"England data file '{name}' not found in '{data_dir}'")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in COLUMNS.get(name, ()) if c not in frame.columns]
    if missing:
        raise ValueError(f"England data file '{name}' lacks column(s) {missing}; "
                         f"columns present: {list(frame.columns)}")
    return frame


def number(values: pd.Series) -> pd.Series:
    """Text to float; blanks and non-numbers become NaN."""
    return pd.to_numeric(values.str.strip().replace("", None), errors="coerce").astype(float)
