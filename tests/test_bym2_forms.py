"""`gapmodel.model.bym2_effect` samples a centred BYM2 in each component's dense
eigenbasis only up to `eigen_limit` areas; above that it falls back to the non-centred
form (pairwise-difference ICAR), whose cost per gradient is linear in the edges. (Both
forms reproduce the published Scotland fit: tests/test_scotland_bym2.py.)"""

from __future__ import annotations

import logging

import numpy as np
import pymc as pm
import pytensor.tensor as pt
import pytest

from gapmodel.graph import Graph
from gapmodel.model import bym2_effect


def _graph() -> Graph:
    """A path of 5, a triangle and an isolated area."""
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [5, 6], [6, 7], [5, 7]])
    return Graph.from_edges(9, edges)


def _free_names(graph: Graph, **kwargs) -> set[str]:
    with pm.Model(coords={"area": np.arange(graph.n)}) as model:
        bym2_effect(pt.as_tensor(0.5), graph, centered=True, **kwargs)
    return {rv.name for rv in model.free_RVs}


@pytest.mark.parametrize("limit", [5, 100])
def test_centred_in_the_eigenbasis_up_to_the_limit(limit: int) -> None:
    names = _free_names(_graph(), eigen_limit=limit)
    assert {"w_u0", "c_u0", "w_u1", "c_u1", "u_isolated"} <= names
    assert "z_u" not in names


def test_centred_falls_back_to_non_centred_above_the_limit(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="gapmodel.model"):
        names = _free_names(_graph(), eigen_limit=4)
    assert {"phi_u0", "phi_u1", "z_u"} <= names
    assert not any(name.startswith("w_u") for name in names)
    assert "a component of 5 areas exceeds the eigenbasis limit (4)" in caplog.text
