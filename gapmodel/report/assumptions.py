"""The model's assumptions in plain words, generated from a version's spec and metadata."""

from __future__ import annotations

from typing import Any

from gapmodel.spec import GroupEffect, ModelSpec, NormalPrior

AREA_EFFECTS = {
    "none": "no area effect on detection: areas differ only through the covariates",
    "iid": "independent area effects on detection (each area its own level, partially "
           "pooled)",
    "bym2": "a BYM2 area effect on detection: part spatially structured over neighbouring "
            "areas, part independent, the mix estimated",
}


def _prior(p: NormalPrior) -> str:
    return f"Normal({p.mu:g}, {p.sigma:g})"


def _group(name: str, g: GroupEffect) -> str:
    shape = {"free": "a separate level per group (summing to zero)",
             "rw1": "a first-order random walk over the ordered groups (neighbouring groups "
                    "alike)",
             "rw2": "a second-order random walk over the ordered groups (a smooth trend)"}
    spread = (f"its spread estimated (half-normal prior, scale {g.sigma:g})" if g.pooled
              else f"its spread fixed at {g.sigma:g} on the logit scale (a stated choice)")
    return f"{name.replace('_', ' ')}: {shape[g.type]}, {spread}"


def assumptions(spec: ModelSpec, meta: dict[str, Any]) -> list[tuple[str, str]]:
    """(topic, sentence) pairs describing what the estimates rest on."""
    summary = meta.get("dataset", {}).get("summary", {})
    attributes = list(summary.get("attributes", {}))
    out: list[tuple[str, str]] = []
    prev, det = spec.prevalence, spec.detection

    rows = summary.get("reference_rows")
    evidence = (f"{rows} rows of external evidence (survey counts or published rates)"
                if rows is not None else "external evidence (survey counts or published rates)")
    source = f" {spec.description.strip()}" if spec.description.strip() else ""
    out.append(("Prevalence evidence",
                f"True prevalence is anchored to {evidence} by reference stratum, supplied "
                f"with dataset '{meta.get('dataset', {}).get('name', '?')}'; each stratum's "
                f"logit prevalence has a prior sd of {prev.intercept_sigma:g} around the "
                "evidence. The registers cannot tell a high prevalence with low detection "
                "from the reverse: the split between diagnosed and undiagnosed rests on this "
                f"evidence.{source}"))
    if prev.sigma_eps > 0:
        eps = (f"Unexplained area-to-area variation in true prevalence has a standard "
               f"deviation of {prev.sigma_eps:g} on the logit scale. This is a sensitivity "
               "choice, not estimated from the data: a larger value widens every interval, "
               "a smaller one narrows them.")
        if prev.eps_nu is not None:
            eps += (f" Its distribution has heavy tails (Student-t, {prev.eps_nu:g} degrees of "
                    "freedom), so an area whose list is unlike its population (a nursing-home "
                    "practice) can sit far from the reference without moving every other "
                    "area's estimate.")
    else:
        eps = ("Areas are assumed to differ in true prevalence only through their strata and "
               "the covariates below (sigma_eps = 0, a sensitivity choice, not estimated).")
    out.append(("Area variation in prevalence", eps))
    for name, p in prev.covariates.items():
        text = (f"fixed at {p.mu:g} per standard deviation of {name} (a stated choice, not "
                "estimated: registers cannot separate a covariate's effect on prevalence "
                "from its effect on detection)" if p.sigma == 0 else
                f"prior {_prior(p)} per standard deviation: it comes from this prior, not "
                "from the registers")
        out.append((f"Prevalence covariate {name}", f"The effect of {name} on true prevalence "
                    f"is {text}."))

    groups = "; ".join(_group(n, g) for n, g in det.groups.items())
    out.append(("Detection", "Detection (the share of true cases on a register) has an "
                f"intercept with prior {_prior(det.intercept)} on the logit scale"
                + (f" and effects by {groups}." if groups else "; no group effects.")))
    if det.covariates:
        listed = ", ".join(f"{n} (fixed at {p.mu:g})" if p.sigma == 0 else
                           f"{n} (prior {_prior(p)})" for n, p in det.covariates.items())
        out.append(("Detection covariates", "Area covariates on detection, estimated from the "
                    f"registers unless fixed: {listed} per standard deviation."))
    area = det.area
    if area.type == "nested":
        text = ("Nested area effects on detection: each area's own level plus those of "
                f"{', '.join(area.levels)} above it")
    else:
        text = AREA_EFFECTS[area.type][0].upper() + AREA_EFFECTS[area.type][1:]
    if area.collapse:
        text += (" (integrated out per area with a Laplace approximation, accurate when "
                 "every area holds thousands of people)")
    out.append(("Area effects", text + "."))
    out.append(("Treated share", "Evidence on the treated share links to detection through "
                "the share of diagnosed people who are treated, prior "
                f"{_prior(det.treated)} on the logit scale."))

    like = spec.likelihood
    text = ("Register counts are binomial given each area's population and its expected "
            "share on the register" if like.family == "binomial" else
            "Register counts are beta-binomial (extra-binomial spread, concentration "
            f"estimated with prior {_prior(like.concentration)} on its log)")
    censoring = summary.get("censoring", {})
    if set(censoring) - {"exact"}:
        text += ("; suppressed or rounded counts enter as the probability of their interval "
                 "(derived recorded counts use the interval's midpoint)")
    out.append(("Likelihood", text + "."))

    missing = spec.missing
    if missing is not None and missing.attribute in attributes:
        text = (f"Register rows with {missing.attribute} not stated are shared between the "
                f"strata of that area in proportion to each area's recording completeness, "
                f"estimated per area and pooled (prior {_prior(missing.mean)} for the logit "
                f"mean, spread {missing.sigma:g}); recorded rows are scaled by the same "
                "completeness.")
    elif "ethnicity" in attributes:
        text = ("Ethnicity is a stratum attribute but no missing-ethnicity model is used: "
                "register counts are taken as complete for the ethnic groups they name.")
    else:
        text = ("The strata carry no ethnicity, so missing ethnicity recording does not "
                "arise; no result can be broken down by ethnicity.")
    out.append(("Missing ethnicity", text))
    out.append(("Undiagnosed counts",
                "Undiagnosed counts are predictive draws: for each posterior draw, people not "
                "on the register each have the condition undiagnosed with the model's "
                "probability, so intervals include chance variation as well as uncertainty "
                "about the parameters."))
    return out


def interval_meaning(prob: float) -> str:
    """What an equal-tailed interval of probability `prob` means, in plain words."""
    tail = f"{(1 - prob) / 2:.1%}".replace(".0%", "%")
    return INTERVAL_MEANING.format(prob=f"{prob:.0%}", tail=tail)


INTERVAL_MEANING = (
    "A {prob} interval is the range within which, given the data and the assumptions above, "
    "the quantity lies with {prob} probability ({tail} below it, {tail} above). It includes "
    "uncertainty about the model's parameters and chance variation in counts, but not the "
    "chance that an assumption is wrong: a biased prevalence survey would shift every "
    "estimate and no interval here would show it.")
