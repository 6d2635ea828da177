"""A budgeted study's search: the plan made from a probe before it starts, the spec its (possibly shortened) trials
run, the stopper that ends it when its share is spent, and what it spent."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ray.tune import Stopper

from .._contract import TrialSide
from ..spec._budget import (
    Budget,
    concurrency,
    plan,
    probe_configs,
    search_epochs,
    search_scheduler,
    spent_search,
    totals,
    trial_length,
)
from ..spec._space import as_searched, grid_points


def search_side(spec: dict[str, Any], backend: TrialSide, cb: dict[str, Any] | None) -> dict[str, Any]:
    """The spec the search's trials run: ``spec`` itself, or, under ``search.epochs``, a copy whose trials (and
    scheduler) are shorter; best.yaml and final training keep ``spec``'s own length."""
    epochs = search_epochs(spec, cb)
    if epochs >= int(spec["train"]["epochs"]):
        return spec
    return backend.shortened({**spec, "scheduler": search_scheduler(spec["scheduler"], epochs)}, epochs)


def plan_budget(
    spec: dict[str, Any], backend: TrialSide, pools: Any, budget: Budget, cluster: dict[str, float], log: Any
) -> dict[str, Any]:
    """Probe the configurations the search draws on this device, size what the spec leaves open
    (num_samples, final epochs) to the budget, and say so; returns study.json's ``compute_budget``."""
    probes, note = probe_configs(spec, backend, pools)
    space = as_searched(spec["space"], spec["search"]["algorithm"])
    parallel = concurrency(spec, cluster.get("CPU", 1), cluster.get("GPU", 0))
    cb = plan(spec, budget, probes, grid_points(space), parallel, backend.gpu_hours, spec["search"]["num_samples"])
    spec["search"]["num_samples"] = cb["num_samples"]
    cb["probe"], cb["probe_note"] = probes, note
    final = f", final training {cb['final_epochs']} epochs x {cb['final_seeds']} seeds" if "final_epochs" in cb else ""
    log(
        f"budget: {budget.text} · search {budget.show(cb['planned']['search'])}: {cb['trials']} trials of "
        f"{trial_length(cb)}, {cb['trial_epochs_expected']:g} on average under the scheduler ({min(p['train_images_per_s'] for p in probes):,.0f} images/s measured)"
        f"{final}" + (f" ({note})" if note else "")
    )
    return cb


def spent(
    cb: dict[str, Any],
    budget: Budget,
    stopper: Any,
    rows: list[dict[str, Any]],
    search_budget: dict[str, float],
    search_s: float,
    startup_s: float,
) -> None:
    """The search's spend against its share, and whether the budget ended it."""
    cb["startup_s"] = startup_s
    cb["spent"] = {"search": spent_search(budget.unit, rows, search_budget, search_s)}
    cb["spent_seconds"] = {"search": search_s}
    cut = stopper.exhausted or (budget.unit == "seconds" and search_s >= cb["planned"]["search"] - 1.0)
    cb["ended_by_budget"] = bool(cut)
    cb["reason"] = (
        f"the search's share of the budget ({budget.show(cb['planned']['search'])}) was spent; trials "
        f"still running were stopped"
        if cut
        else ""
    )
    totals(cb)


class BudgetStopper(Stopper):
    """Ends the search when its share is spent: epochs reported (summed over trials), GPU-hours (each trial's
    time weighted by its GPU share, by the trial side's rule), or wall-clock seconds since the search began
    (Tune's ``time_budget_s`` as well). Trials it cuts are ``stopped`` by the one status rule.

    Epochs already being trained when the share runs out are not interrupted mid-way by Tune, so an epoch
    budget can be passed by at most one epoch per other running trial; final training takes what is left.
    """

    def __init__(
        self, unit: str, limit: float, gpu: float = 0.0, gpu_hours: Callable[..., float] | None = None
    ) -> None:
        self.unit, self.limit, self.gpu, self.gpu_hours = unit, float(limit), float(gpu), gpu_hours
        self.epochs: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.t0 = time.monotonic()
        self.exhausted = False

    def spent(self) -> float:
        if self.unit == "epochs":
            return float(sum(self.epochs.values()))
        if self.unit == "gpu_hours":
            return sum(self.gpu_hours(s, self.gpu, self.gpu > 0) for s in self.seconds.values())  # type: ignore[misc]
        return time.monotonic() - self.t0

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        self.epochs[trial_id] = int(result.get("epoch", 0) or 0)
        self.seconds[trial_id] = float(result.get("time_total_s", 0) or 0)
        return self.stop_all()

    def stop_all(self) -> bool:
        self.exhausted = self.exhausted or self.spent() >= self.limit
        return self.exhausted
