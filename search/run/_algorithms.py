"""Searchers and schedulers from a resolved spec (Ray Tune objects; the time unit is the epoch)."""

from __future__ import annotations

from typing import Any

from ..spec._keys import get_path
from ..spec._objectives import objectives, several
from ..spec._space import OptunaSpace, bohb_space, branches, recipe_point, to_tune

TIME_ATTR = "training_iteration"  # one report per epoch, so iterations are epochs


def first_points(spec: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """``search.recipe_first``: the spec's recipe as the first trial, so the search ranks its best against
    the fixed recipe it must beat (as Optuna's ``enqueue_trial``); [] and why when it does not apply."""
    if not spec["search"]["recipe_first"]:
        return [], "search.recipe_first is off"
    if spec["search"]["algorithm"] == "grid":
        return [], "a grid names its own points"
    values = {}
    for key in spec["space"]:
        try:
            values[key] = get_path(spec, key)
        except (KeyError, TypeError):
            pass
    point, why = recipe_point(spec["space"], values)
    return ([point], "") if point else ([], why)


def first_points_line(spec: dict[str, Any]) -> str:
    """What ``first_points`` gives, in one line for the console and ``--dry-run``."""
    points, why = first_points(spec)
    if not points:
        return f"search.recipe_first: not applied: {why}"
    return "the first trial is the spec's recipe (" + ", ".join(f"{k}={v}" for k, v in points[0].items()) + ")"


def build_searcher(spec: dict[str, Any]) -> Any:
    """Random and grid: Ray's BasicVariantGenerator (it also mixes grid and sampled keys), seeded; Optuna and
    BOHB as Tune runs a Searcher (a SearchGenerator), under a ConcurrencyLimiter when concurrency is capped."""
    s = spec["search"]
    algo = s["algorithm"]
    from ray.tune.search import ConcurrencyLimiter

    # Each checkpoint of Tune's state also written as one snapshot, which --resume restores from.
    from ._tune_state import PairedSearch, PairedVariants, PicklableNSGAII

    points = first_points(spec)[0] or None
    if algo in ("random", "grid"):
        return PairedVariants(random_state=s["seed"], max_concurrent=s["max_concurrent"], points_to_evaluate=points)

    if algo in ("optuna", "nsga2"):
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in memory": not news

        goals = objectives(spec["experiment"])
        held = holds_space(spec)
        # TPE models one objective or several (Optuna's multi-objective TPE); NSGA-II evolves a population.
        sampler = optuna.samplers.TPESampler(seed=s["seed"]) if algo == "optuna" else PicklableNSGAII(seed=s["seed"])
        # Conditional or multi-objective spaces go to Optuna define-by-run (given here, Tune keeps the searcher's
        # metrics: it would replace a list by TuneConfig's one metric); flat ones through Tune's param_space.
        searcher: Any = OptunaSearch(
            space=OptunaSpace(spec["space"]) if held else None,
            sampler=sampler,
            metric=(list(goals) if len(goals) > 1 else spec["experiment"]["metric"]) if held else None,
            mode=(list(goals.values()) if len(goals) > 1 else spec["experiment"]["mode"]) if held else None,
            points_to_evaluate=points,
        )
    else:  # bohb
        from ray.tune.search.bohb import TuneBOHB

        cs = bohb_space(spec["space"], s["seed"]) if branches(spec["space"]) else None
        searcher = TuneBOHB(
            space=cs,
            seed=s["seed"],
            metric=spec["experiment"]["metric"] if cs is not None else None,
            mode=spec["experiment"]["mode"] if cs is not None else None,
            points_to_evaluate=points,
        )
    if s["max_concurrent"]:
        # Model-based searchers suggest better points when they have seen more results.
        searcher = ConcurrencyLimiter(searcher, max_concurrent=s["max_concurrent"])
    return PairedSearch(searcher)


def holds_space(spec: dict[str, Any]) -> bool:
    """Whether the searcher holds the space itself (Tune's param_space is then empty): a model-based searcher's
    conditional space, and an Optuna searcher's with several objectives."""
    algo = spec["search"]["algorithm"]
    if algo in ("optuna", "nsga2") and several(spec["experiment"]):
        return True
    return algo in ("optuna", "nsga2", "bohb") and bool(branches(spec["space"]))


def param_space(spec: dict[str, Any]) -> dict[str, Any]:
    """Tune's param_space: the whole space, unless the searcher holds it (``holds_space``)."""
    if holds_space(spec):
        return {}
    return to_tune(spec["space"], spec["search"]["algorithm"])


def rungs(spec: dict[str, Any]) -> list[int]:
    """The epochs where asha or hyperband compare trials (asha: grace_period x rf^k; hyperband: max_t / rf^k),
    below max_t: where a trial under ``scheduler.fidelity: data`` grows its training data."""
    c = spec["scheduler"]
    max_t, rf = int(c["max_t"]), float(c["reduction_factor"])
    out: list[int] = []
    if c["name"] == "asha":
        r = float(c["grace_period"])
        while r < max_t:
            out.append(int(r))
            r *= rf
    elif c["name"] == "hyperband":
        r = max_t / rf
        while r >= 1:
            out.append(int(r))
            r /= rf
    return sorted(set(out))


def build_scheduler(spec: dict[str, Any]) -> Any:
    from ray.tune.schedulers import FIFOScheduler

    from . import _schedulers as sch  # Ray's, blind to infeasible trials

    c = spec["scheduler"]
    # metric/mode come from TuneConfig (Ray refuses them twice).
    common: dict[str, Any] = {"time_attr": TIME_ATTR}
    name = c["name"]
    if name == "fifo":
        return FIFOScheduler()
    if name == "asha" and several(spec["experiment"]):  # rungs rank the objectives' vectors (MO-ASHA)
        return sch.ParetoASHAScheduler(
            objectives=objectives(spec["experiment"]),
            max_t=c["max_t"],
            grace_period=c["grace_period"],
            reduction_factor=c["reduction_factor"],
            brackets=c["brackets"],
            **common,
        )
    if name == "asha":
        return sch.ASHAScheduler(
            max_t=c["max_t"],
            grace_period=c["grace_period"],
            reduction_factor=c["reduction_factor"],
            brackets=c["brackets"],
            **common,
        )
    if name == "hyperband":
        if spec["search"]["algorithm"] == "bohb":
            return sch.HyperBandForBOHB(max_t=c["max_t"], reduction_factor=c["reduction_factor"], **common)
        return sch.HyperBandScheduler(max_t=c["max_t"], reduction_factor=c["reduction_factor"], **common)
    if name == "median":
        return sch.MedianStoppingRule(
            grace_period=c["grace_period"], min_samples_required=c["min_samples_required"], **common
        )
    # pbt: the searched keys are what it perturbs; each trial resumes from a better one's checkpoint.
    mutations = to_tune({k: ({"choice": v["grid"]} if "grid" in v else v) for k, v in spec["space"].items()}, "random")
    return sch.PopulationBasedTraining(
        perturbation_interval=c["perturbation_interval"],
        hyperparam_mutations=mutations,
        quantile_fraction=c["quantile_fraction"],
        resample_probability=c["resample_probability"],
        **common,
    )
