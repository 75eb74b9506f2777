"""Where a spec's data come from: a simulated scenario, a directory, or an England builder."""

from __future__ import annotations

from pathlib import Path

from gapmodel.data import Dataset, load_dataset
from gapmodel.simulate import Scenario, simulate
from gapmodel.spec import DirectoryData, EnglandData, ModelSpec, SimulatedData


def load_spec_data(spec: ModelSpec, data_dir: str | Path | None = None
                   ) -> tuple[Dataset, Scenario | None]:
    """The spec's dataset, and the scenario (with its truth) when it is simulated.

    `data_dir` overrides a directory source, or is the England data directory.
    """
    source = spec.data
    if isinstance(source, SimulatedData):
        scenario = simulate(source.areas, source.seed, register=source.registers)
        return scenario.dataset, scenario
    if isinstance(source, DirectoryData):
        return load_dataset(data_dir or source.path), None
    if isinstance(source, EnglandData):
        from gapmodel.data.england import BUILDERS

        if source.builder not in BUILDERS:
            raise ValueError(f"unknown England builder '{source.builder}' "
                             f"(have: {', '.join(BUILDERS)})")
        return BUILDERS[source.builder](data_dir), None
    raise TypeError(f"unknown data source {source!r}")


def spec_stand_in(spec: ModelSpec) -> Dataset:
    """A dataset in the layout of the spec's data with made-up values, needing no files, for
    compiling ahead (`gapmodel compile --stand-in`): an England builder's stand-in
    (`gapmodel.data.england.standin`), or a simulated spec's own scenario."""
    source = spec.data
    if isinstance(source, SimulatedData):
        return load_spec_data(spec)[0]
    if isinstance(source, EnglandData):
        from gapmodel.data.england.standin import stand_in

        return stand_in(source.builder)
    raise ValueError(f"spec {spec.name}: a dataset directory has no stand-in; compile on the "
                     "data themselves (--data)")
