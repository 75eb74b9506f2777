"""Validate raw tables against the contract and build an immutable Dataset."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gapmodel.data.checks import (
    known_codes,
    lines,
    no_duplicates,
    numbers,
    require_columns,
    require_values,
    warn_extra_columns,
)
from gapmodel.data.dataset import Dataset
from gapmodel.data.manifest import Manifest, RegisterOptions, parse_manifest
from gapmodel.data.problems import DataValidationError, Problem, ProblemLog
from gapmodel.data.tables import REGISTER_PREFIX, _as_text, read_directory, read_notes

RESERVED = {"area", "stratum", "population", "level", "count", "lo", "hi", "name",
            "observation", "ref_stratum", "measure", "cell"}
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")
MEASURES = ("prevalence", "diagnosed", "treated")


class _Builder:
    """One pass over the tables: checks every rule, then normalises."""

    def __init__(self, tables: Mapping[str, pd.DataFrame], files: Mapping[str, str],
                 manifest: Manifest, log: ProblemLog):
        self.raw = {k: _as_text(v.reset_index(drop=True)) for k, v in tables.items()}
        self.files = {k: files.get(k, f"{k}.csv") for k in self.raw}
        self.manifest = manifest
        self.log = log

    def file(self, table: str) -> str:
        return self.files.get(table, f"{table}.csv")

    # -- tables ---------------------------------------------------------------------------

    def strata(self) -> tuple[pd.DataFrame, tuple[str, ...]] | None:
        frame, file = self.raw.get("strata"), self.file("strata")
        if frame is None or not require_columns(frame, file, ["stratum"], self.log):
            return None
        attributes = tuple(c for c in frame.columns if c != "stratum")
        for attr in attributes:
            if attr in RESERVED or not IDENTIFIER.match(attr):
                self.log.error(file, "bad-attribute-name",
                               "attribute names must be lower-case identifiers and not one of "
                               f"{sorted(RESERVED)}", 1, attr)
        require_values(frame, file, "stratum", self.log)
        for attr in attributes:
            require_values(frame, file, attr, self.log)
        no_duplicates(frame, file, ["stratum"], self.log, "stratum")
        if attributes:
            no_duplicates(frame, file, list(attributes), self.log, "attribute combination")
        return frame, attributes

    def areas(self, attributes: tuple[str, ...]) -> tuple[pd.DataFrame, tuple[str, ...]] | None:
        frame, file = self.raw.get("areas"), self.file("areas")
        if frame is None or not require_columns(frame, file, ["area"], self.log):
            return None
        given = [c for c in frame.columns if c not in ("area", "name")]
        parents = list(self.manifest.levels) if self.manifest.levels is not None else given
        if self.manifest.levels is not None:
            require_columns(frame, file, parents, self.log)
            warn_extra_columns(frame, file, ["area", "name", *parents], self.log)
            parents = [p for p in parents if p in frame.columns]
        base = self.manifest.area_level
        for level in parents:
            if level in RESERVED or level in attributes or level == base \
                    or not IDENTIFIER.match(level):
                self.log.error(file, "bad-level-name",
                               "hierarchy levels must be lower-case identifiers, distinct from "
                               "the base level, the stratum attributes and reserved names", 1,
                               level)
        require_values(frame, file, "area", self.log)
        for level in parents:
            require_values(frame, file, level, self.log)
        no_duplicates(frame, file, ["area"], self.log, "area")
        chain = ["area", *parents]
        for child, parent in itertools.pairwise(chain):
            pairs = frame[[child, parent]].drop_duplicates()
            pairs = pairs[(pairs[child] != "") & (pairs[parent] != "")]
            split = pairs[pairs.duplicated(child, keep=False)]
            for code, group in list(split.groupby(child, sort=True))[:20]:
                first = frame.index[frame[child] == code][0] + 2
                self.log.error(file, "not-nested",
                               f"{child} '{code}' lies in more than one {parent}: "
                               f"{', '.join(sorted(group[parent]))}", int(first), parent)
        keep = ["area", *(["name"] if "name" in frame.columns else []), *parents]
        return frame[keep], (base, *parents)

    def population(self, areas: pd.DataFrame, strata: pd.DataFrame) -> pd.DataFrame | None:
        frame, file = self.raw.get("population"), self.file("population")
        if frame is None or not require_columns(frame, file, ["area", "stratum", "population"],
                                                self.log):
            return None
        warn_extra_columns(frame, file, ["area", "stratum", "population"], self.log)
        require_values(frame, file, "area", self.log)
        require_values(frame, file, "stratum", self.log)
        known_codes(frame, file, "area", pd.Index(areas["area"]), self.log, "area")
        known_codes(frame, file, "stratum", pd.Index(strata["stratum"]), self.log, "stratum")
        pop = numbers(frame, file, "population", self.log, integer=True, minimum=0,
                      what="population")
        no_duplicates(frame, file, ["area", "stratum"], self.log, "cell")
        out = frame[["area", "stratum"]].copy()
        out["population"] = pop
        return out

    def reference(self) -> pd.DataFrame | None:
        frame, file = self.raw.get("reference"), self.file("reference")
        if frame is None or not require_columns(frame, file, ["ref_stratum"], self.log):
            return None
        known = ["ref_stratum", "measure", "y", "n", "design_effect", "rate", "lower", "upper",
                 "source"]
        warn_extra_columns(frame, file, known, self.log)
        frame = frame.copy()
        for column in known:
            if column not in frame.columns:
                frame[column] = ""
        require_values(frame, file, "ref_stratum", self.log)
        measure = frame["measure"].where(frame["measure"] != "", "prevalence")
        bad = ~measure.isin(MEASURES)
        self.log.rows(file, "unknown-code", "measure", lines(frame, bad),
                      [f"measure must be one of {MEASURES}, got '{v}'" for v in measure[bad]])
        frame["measure"] = measure
        counts = (frame["y"] != "") | (frame["n"] != "")
        rates = (frame["rate"] != "") | (frame["lower"] != "") | (frame["upper"] != "")
        both, neither = counts & rates, ~counts & ~rates
        self.log.rows(file, "ambiguous-evidence", None, lines(frame, both),
                      ["give survey counts (y, n) or a rate with its interval, not both"]
                      * int(both.sum()))
        self.log.rows(file, "missing-value", None, lines(frame, neither),
                      ["no evidence: give y and n, or rate, lower and upper"]
                      * int(neither.sum()))
        out = frame[["ref_stratum", "measure", "source"]].copy()
        sub_c, sub_r = frame[counts & ~rates], frame[rates & ~counts]
        y = numbers(sub_c, file, "y", self.log, integer=True, minimum=0, what="y")
        n = numbers(sub_c, file, "n", self.log, integer=True, minimum=1, what="n")
        over = y > n
        self.log.rows(file, "y-above-n", "y", lines(sub_c, over),
                      [f"y ({a:g}) exceeds n ({b:g})" for a, b in zip(y[over], n[over],
                                                                       strict=True)])
        deff = numbers(sub_c, file, "design_effect", self.log, minimum=1, blank_ok=True,
                       what="design effect").fillna(1.0)
        rate = numbers(sub_r, file, "rate", self.log, minimum=0, maximum=1, what="rate")
        lower = numbers(sub_r, file, "lower", self.log, minimum=0, maximum=1, what="lower")
        upper = numbers(sub_r, file, "upper", self.log, minimum=0, maximum=1, what="upper")
        disorder = (lower > rate) | (rate > upper)
        self.log.rows(file, "interval-order", "lower", lines(sub_r, disorder),
                      [f"need lower <= rate <= upper, got {a:g} / {b:g} / {c:g}"
                       for a, b, c in zip(lower[disorder], rate[disorder], upper[disorder],
                                          strict=True)])
        degenerate = (lower == upper) & ~disorder
        self.log.rows(file, "interval-order", "upper", lines(sub_r, degenerate),
                      ["the 95% interval has zero width"] * int(degenerate.sum()))
        out["kind"] = np.where(counts & ~rates, "counts", "rate")
        for name, values in (("y", y), ("n", n), ("design_effect", deff), ("rate", rate),
                             ("lower", lower), ("upper", upper)):
            out[name] = values.reindex(out.index)
        out["n_effective"] = out["n"] / out["design_effect"]
        no_duplicates(frame, file, ["ref_stratum", "measure"], self.log,
                      "reference stratum and measure")
        return out

    def reference_map(self, strata: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame | None:
        frame, file = self.raw.get("reference_map"), self.file("reference_map")
        if frame is None or not require_columns(frame, file, ["stratum", "ref_stratum"],
                                                self.log):
            return None
        warn_extra_columns(frame, file, ["stratum", "ref_stratum", "log_rr_mean", "log_rr_sd"],
                           self.log)
        known_codes(frame, file, "stratum", pd.Index(strata["stratum"]), self.log, "stratum")
        prevalence_refs = pd.Index(reference.loc[reference["measure"] == "prevalence",
                                                 "ref_stratum"])
        require_values(frame, file, "ref_stratum", self.log)
        known_codes(frame, file, "ref_stratum", prevalence_refs, self.log,
                    "reference stratum (no prevalence evidence in the reference table)")
        no_duplicates(frame, file, ["stratum"], self.log, "stratum")
        out = frame[["stratum", "ref_stratum"]].copy()
        for column, minimum in (("log_rr_mean", None), ("log_rr_sd", 0.0)):
            if column in frame.columns:
                out[column] = numbers(frame, file, column, self.log, minimum=minimum,
                                      blank_ok=True, what=column).fillna(0.0)
            else:
                out[column] = 0.0
        unmapped = sorted(set(strata["stratum"]) - set(frame["stratum"]))
        if unmapped:
            self.log.error(file, "unmapped-stratum",
                           f"{len(unmapped)} stratum/strata have no reference stratum: "
                           f"{', '.join(unmapped[:10])}", None, "stratum")
        return out

    def covariates(self, areas: pd.DataFrame, populated: set[str]) -> pd.DataFrame | None:
        frame, file = self.raw.get("covariates"), self.file("covariates")
        if frame is None:
            return pd.DataFrame(index=pd.Index(areas["area"], name="area"))
        if not require_columns(frame, file, ["area"], self.log):
            return None
        known_codes(frame, file, "area", pd.Index(areas["area"]), self.log, "area")
        no_duplicates(frame, file, ["area"], self.log, "area")
        names = [c for c in frame.columns if c != "area"]
        out = pd.DataFrame({"area": frame["area"]})
        for column in names:
            if not IDENTIFIER.match(column):
                self.log.error(file, "bad-covariate-name",
                               "covariate names must be lower-case identifiers", 1, column)
            out[column] = numbers(frame, file, column, self.log, what="covariate")
        missing = sorted(populated - set(frame["area"]))
        if missing:
            self.log.error(file, "missing-area",
                           f"{len(missing)} area(s) with population have no covariates: "
                           f"{', '.join(missing[:10])}", None, "area")
        out = out.drop_duplicates("area").set_index("area")
        return out.reindex(pd.Index(areas["area"], name="area"))

    def adjacency(self, areas: pd.DataFrame) -> pd.DataFrame | None:
        frame, file = self.raw.get("adjacency"), self.file("adjacency")
        empty = pd.DataFrame({"area1": pd.Series(dtype=str), "area2": pd.Series(dtype=str)})
        if frame is None:
            return empty
        if not require_columns(frame, file, ["area1", "area2"], self.log):
            return None
        warn_extra_columns(frame, file, ["area1", "area2"], self.log)
        index = pd.Index(areas["area"])
        require_values(frame, file, "area1", self.log)
        require_values(frame, file, "area2", self.log)
        known_codes(frame, file, "area1", index, self.log, "area")
        known_codes(frame, file, "area2", index, self.log, "area")
        loop = (frame["area1"] == frame["area2"]) & (frame["area1"] != "")
        self.log.rows(file, "self-loop", "area2", lines(frame, loop),
                      [f"area '{v}' is joined to itself" for v in frame["area1"][loop]])
        first = np.where(frame["area1"] <= frame["area2"], frame["area1"], frame["area2"])
        second = np.where(frame["area1"] <= frame["area2"], frame["area2"], frame["area1"])
        ordered = pd.DataFrame({"area1": first, "area2": second}, index=frame.index)
        no_duplicates(ordered, file, ["area1", "area2"], self.log,
                      "edge (in either direction)")
        return ordered

    # -- registers ------------------------------------------------------------------------

    def registers(self, cells: pd.DataFrame, strata: pd.DataFrame,
                  attributes: tuple[str, ...], areas: pd.DataFrame,
                  levels: tuple[str, ...]) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
        stems = sorted(k for k in self.raw if k.startswith(REGISTER_PREFIX))
        if not stems:
            self.log.error("register.csv", "missing-table",
                           "no register file: at least one file named register*.csv or "
                           "register*.parquet is needed")
        for stem in self.manifest.registers:
            if stem not in self.raw:
                self.log.error("dataset.yaml", "manifest",
                               f"registers.{stem}: no register file with this name")
        observations, links, canonical = [], [], {}
        offset = 0
        for stem in stems:
            result = self._register(stem, cells, strata, attributes, areas, levels)
            if result is None:
                continue
            obs, pairs, frame = result
            obs.index = obs.index + offset
            pairs["obs"] = pairs["obs"] + offset
            offset += len(obs)
            observations.append(obs)
            links.append(pairs)
            canonical[stem] = frame
        if observations:
            obs = pd.concat(observations)
            pairs = pd.concat(links, ignore_index=True)
        else:
            obs = pd.DataFrame(columns=["register", "line", "lo", "hi", "censoring",
                                        "incomplete", "n_cells", "population"])
            pairs = pd.DataFrame({"obs": pd.Series(dtype=int), "cell": pd.Series(dtype=int)})
        return obs, pairs, canonical

    def _register(self, stem: str, cells: pd.DataFrame, strata: pd.DataFrame,
                  attributes: tuple[str, ...], areas: pd.DataFrame, levels: tuple[str, ...]):
        frame, file, log = self.raw[stem], self.file(stem), self.log
        options: RegisterOptions = self.manifest.register_options(stem)
        has_count = "count" in frame.columns
        has_interval = "lo" in frame.columns or "hi" in frame.columns
        if not require_columns(frame, file, ["area"], log):
            return None
        if has_count and has_interval:
            log.error(file, "ambiguous-count", "give either 'count' or 'lo' and 'hi', not both",
                      1, "count")
            return None
        if not has_count and not require_columns(frame, file, ["count"] if not has_interval
                                                 else ["lo", "hi"], log):
            return None
        attr_cols = [a for a in attributes if a in frame.columns]
        used = ["area", "level", *attr_cols, *(["count"] if has_count else ["lo", "hi"]),
                "observation"]
        warn_extra_columns(frame, file, used, log)
        for attr in options.not_stated:
            if attr not in attributes:
                log.error("dataset.yaml", "manifest",
                          f"registers.{stem}.not_stated: '{attr}' is not a stratum attribute")
        frame = frame.copy()
        if "level" not in frame.columns:
            frame["level"] = ""
        level = frame["level"].where(frame["level"] != "", levels[0])
        bad_level = ~level.isin(levels)
        log.rows(file, "unknown-code", "level", lines(frame, bad_level),
                 [f"unknown level '{v}' (levels: {', '.join(levels)})"
                  for v in level[bad_level]])
        require_values(frame, file, "area", log)
        area_ok = pd.Series(False, index=frame.index)
        for lvl in levels:
            rows = level == lvl
            if not rows.any():
                continue
            column = "area" if lvl == levels[0] else lvl
            area_ok |= rows & known_codes(frame, file, "area", pd.Index(areas[column].unique()),
                                          log, f"{lvl} code", mask=rows)
        incomplete = pd.Series("", index=frame.index)
        for attr in attr_cols:
            values = frame[attr]
            missing_value = options.not_stated.get(attr)
            is_missing = (values == missing_value) if missing_value is not None \
                else pd.Series(False, index=frame.index)
            known = pd.Index(strata[attr].unique())
            ok = known_codes(frame, file, attr, known, log, f"{attr} value",
                             mask=~is_missing)
            area_ok &= ok | (values == "") | is_missing
            incomplete = incomplete.where(~is_missing, incomplete + attr)
        lo, hi, censoring = self._counts(frame, file, options, has_count)
        valid = area_ok & lo.notna() & hi.notna()
        obs = pd.DataFrame({"register": stem, "line": frame.index + 2, "lo": lo, "hi": hi,
                            "censoring": censoring, "incomplete": incomplete,
                            "level": level, "area": frame["area"]})
        pairs = self._resolve(frame[valid], level[valid], attr_cols, options, cells, levels[0])
        # Overlap: within a register, each cell at most once per kind of observation.
        pairs = pairs.merge(obs[["incomplete"]], left_on="obs", right_index=True)
        dup = pairs.duplicated(["cell", "incomplete"], keep=False)
        if dup.any():
            clash = pairs[dup].sort_values(["cell", "obs"])
            seen: set[tuple[int, int]] = set()
            for _cell, group in clash.groupby("cell", sort=False):
                key = tuple(group["obs"].iloc[:2])
                if key in seen:
                    continue
                seen.add(key)
                if len(seen) > 20:
                    break
                a, b = (int(x) + 2 for x in key)
                c = cells.loc[_cell]
                log.error(file, "overlap",
                          f"observations on lines {a} and {b} both cover cell "
                          f"{c['area']}/{c['stratum']}: the rows of one register file must "
                          "not overlap", b, None)
        pairs = pairs[["obs", "cell"]]
        pop = pairs.merge(cells[["population"]], left_on="cell", right_index=True) \
            .groupby("obs")["population"].sum()
        obs["population"] = pop.reindex(obs.index).fillna(0.0)
        obs["n_cells"] = pairs.groupby("obs").size().reindex(obs.index).fillna(0).astype(int)
        over = valid & (obs["lo"] > obs["population"])
        log.rows(file, "count-above-population", "count" if has_count else "lo",
                 lines(frame, over),
                 [f"recorded count {a:g} is above the population of its cells ({b:g})"
                  for a, b in zip(obs["lo"][over], obs["population"][over], strict=True)])
        clipped = valid & ~over & (obs["hi"] > obs["population"])
        if clipped.any():
            log.note(file, "interval-clipped",
                     f"{int(clipped.sum())} censoring interval(s) reach above the population of "
                     "their cells and were cut at it")
        obs["hi"] = np.minimum(obs["hi"], obs["population"])
        empty = valid & (obs["n_cells"] == 0) & ~over
        if empty.any():
            log.warning(file, "empty-observation",
                        f"{int(empty.sum())} row(s) cover no cell with population (first on "
                        f"line {int(lines(frame, empty)[0])}); they carry no information")
        keep = [c for c in used if c in frame.columns]
        return obs, pairs.reset_index(drop=True), frame[keep]

    def _counts(self, frame: pd.DataFrame, file: str, options: RegisterOptions,
                has_count: bool) -> tuple[pd.Series, pd.Series, pd.Series]:
        log = self.log
        if not has_count:
            lo = numbers(frame, file, "lo", log, integer=True, minimum=0, what="lower bound")
            hi = numbers(frame, file, "hi", log, integer=True, minimum=0, what="upper bound")
            bad = lo > hi
            log.rows(file, "interval-order", "hi", lines(frame, bad),
                     [f"lo ({a:g}) is above hi ({b:g})"
                      for a, b in zip(lo[bad], hi[bad], strict=True)])
            lo, hi = lo.where(~bad), hi.where(~bad)
            return lo, hi, pd.Series(np.where(lo == hi, "exact", "interval"), index=frame.index)
        text = frame["count"]
        star = text == "*"
        parsed = numbers(frame.assign(count=text.where(~star, "0")), file, "count", log,
                         integer=True, minimum=0, what="count")
        s_lo, s_hi = options.suppressed or (1, 7)
        if options.rounding:
            below, above = options.rounding // 2, (options.rounding + 1) // 2 - 1
            lo, hi, kind = np.maximum(parsed - below, 0), parsed + above, "rounded"
        else:
            lo, hi, kind = parsed, parsed, "exact"
        lo = lo.where(~star, float(s_lo))
        hi = hi.where(~star, float(s_hi))
        censoring = pd.Series(np.where(star, "suppressed", kind), index=frame.index)
        return lo, hi, censoring

    @staticmethod
    def _resolve(frame: pd.DataFrame, level: pd.Series, attr_cols: list[str],
                 options: RegisterOptions, cells: pd.DataFrame, base: str) -> pd.DataFrame:
        """(obs, cell) pairs: each row's cells, found by joining on its non-blank keys."""
        if frame.empty:
            return pd.DataFrame({"obs": pd.Series(dtype=int), "cell": pd.Series(dtype=int)})
        keys = pd.DataFrame({"obs": frame.index, "level": level.to_numpy(),
                             "area": frame["area"].to_numpy()})
        active = pd.DataFrame(index=frame.index)
        for attr in attr_cols:
            values = frame[attr]
            blank = (values == "") | (values == options.not_stated.get(attr))
            keys[attr] = values.to_numpy()
            active[attr] = ~blank.to_numpy()
        pattern = active.apply(lambda r: tuple(r), axis=1) if attr_cols else \
            pd.Series([()] * len(frame), index=frame.index)
        cell_frame = cells.reset_index(names="cell")
        found = []
        for (lvl, pat), group in keys.groupby([keys["level"], pattern.to_numpy()], sort=False):
            on = [a for a, used in zip(attr_cols, pat, strict=True) if used]
            column = "area" if lvl == base else lvl
            left = group[["obs", "area", *on]].rename(columns={"area": column})
            right = cell_frame[["cell", column, *on]]
            found.append(left.merge(right, on=[column, *on])[["obs", "cell"]])
        return pd.concat(found, ignore_index=True)

    # -- whole dataset --------------------------------------------------------------------

    def build(self, notes: Iterable[str]) -> Dataset | None:
        log = self.log
        for table in ("strata", "areas", "population", "reference", "reference_map"):
            if table not in self.raw and not any(p.file == self.file(table) for p in log.items):
                log.error(f"{table}.csv", "missing-table", f"required table '{table}' is missing")
        for note in notes:
            log.note("(builder)", "harmonisation", note)
        strata_result = self.strata()
        areas_result = self.areas(strata_result[1] if strata_result else ())
        if strata_result is None or areas_result is None:
            return None
        strata, attributes = strata_result
        areas, levels = areas_result
        population = self.population(areas, strata)
        reference = self.reference()
        reference_map = (self.reference_map(strata, reference)
                         if reference is not None else None)
        if population is None or log.has_errors:
            return None  # cell-level checks need clean codes
        cells = self._cells(population, areas, strata, attributes, levels)
        populated = set(cells.loc[cells["population"] > 0, "area"])
        covariates = self.covariates(areas, populated)
        adjacency = self.adjacency(areas)
        observations, obs_cells, canonical = self.registers(cells, strata, attributes, areas,
                                                            levels)
        if log.has_errors or any(x is None for x in (reference, reference_map, covariates,
                                                     adjacency)):
            return None
        self._coverage_warnings(cells, obs_cells, areas)
        return Dataset.create(
            manifest=self.manifest, areas=areas.reset_index(drop=True), levels=levels,
            strata=strata.reset_index(drop=True), attributes=attributes, cells=cells,
            observations=observations, obs_cells=obs_cells,
            reference=reference.reset_index(drop=True),
            reference_map=reference_map.reset_index(drop=True), covariates=covariates,
            adjacency=adjacency.reset_index(drop=True), registers=canonical,
            report=tuple(log.items))

    @staticmethod
    def _cells(population: pd.DataFrame, areas: pd.DataFrame, strata: pd.DataFrame,
               attributes: tuple[str, ...], levels: tuple[str, ...]) -> pd.DataFrame:
        """Cells in canonical order (areas order, then strata order) with their labels."""
        area_rank = pd.Series(np.arange(len(areas)), index=areas["area"])
        stratum_rank = pd.Series(np.arange(len(strata)), index=strata["stratum"])
        cells = population.assign(_a=population["area"].map(area_rank),
                                  _s=population["stratum"].map(stratum_rank))
        cells = cells.sort_values(["_a", "_s"]).drop(columns=["_a", "_s"])
        cells["population"] = cells["population"].astype(np.int64)
        cells = cells.merge(strata, on="stratum", how="left")
        cells = cells.merge(areas[["area", *levels[1:]]], on="area", how="left")
        return cells.reset_index(drop=True)

    def _coverage_warnings(self, cells: pd.DataFrame, obs_cells: pd.DataFrame,
                           areas: pd.DataFrame) -> None:
        log, file = self.log, self.file("population")
        no_pop = sorted(set(areas["area"]) - set(cells["area"]))
        if no_pop:
            log.warning(self.file("areas"), "area-without-population",
                        f"{len(no_pop)} area(s) have no population rows: "
                        f"{', '.join(no_pop[:10])}")
        zero = int((cells["population"] == 0).sum())
        if zero:
            log.warning(file, "zero-population", f"{zero} cell(s) have population 0")
        unobserved = cells.index.difference(pd.Index(obs_cells["cell"].unique()))
        unobserved = unobserved[cells.loc[unobserved, "population"].to_numpy() > 0]
        if len(unobserved):
            log.warning(file, "unobserved-cells",
                        f"{len(unobserved)} cell(s) with population are in no register "
                        "observation; the model predicts them from the rest")


def build_dataset(tables: Mapping[str, pd.DataFrame], manifest: Mapping[str, Any] | Manifest,
                  *, notes: Iterable[str] = (), files: Mapping[str, str] | None = None
                  ) -> Dataset:
    """Validate in-memory tables (file schema) and return the Dataset, or raise."""
    log = ProblemLog()
    if isinstance(manifest, Manifest):
        parsed = manifest
    else:
        parsed = parse_manifest(dict(manifest), str(manifest.get("name", "dataset")), log)
    dataset = _Builder(tables, files or {}, parsed, log).build(notes)
    if dataset is None:
        raise DataValidationError(log.items)
    return dataset


def validate_directory(directory: str | Path) -> tuple[Dataset | None, list[Problem]]:
    """Check a dataset directory: (dataset or None, every problem found)."""
    directory = Path(directory)
    log = ProblemLog()
    tables, files, raw_manifest = read_directory(directory, log)
    manifest = parse_manifest(raw_manifest, directory.name, log)
    notes = read_notes(directory, log) if directory.is_dir() else []
    dataset = None
    if tables or not log.has_errors:
        dataset = _Builder(tables, files, manifest, log).build(notes)
    if log.has_errors:
        dataset = None
    return dataset, log.items


def load_dataset(directory: str | Path) -> Dataset:
    """Load and validate a dataset directory; raise DataValidationError on any error."""
    dataset, problems = validate_directory(directory)
    if dataset is None:
        raise DataValidationError(problems)
    return dataset
