"""A budgeted study's search: the plan made from a probe before it starts, the spec its (possibly shortened) trials
run, the stopper that ends it when its share is spent, and what it spent."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ray.tune import Stopper

from .._contract import TrialSide
from ..spec._budget import (
    Budget,
    concurrency,
    plan,
    probe_configs,
    probed_cpus,
    search_epochs,
    search_scheduler,
    share_from,
    trial_length,
)
from ..spec._sizes import choose_size, recipe_name, size_line
from ..spec._space import as_searched, grid_points
from ._spend import spent_search, totals


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

    def parallel_of(*probes: dict[str, Any]) -> int:
        return concurrency(spec, cluster.get("CPU", 1), cluster.get("GPU", 0), probed_cpus(list(probes)))

    taken, size = choose_size(spec, backend, pools, budget, parallel_of)  # before the probes: they probe the size
    line = size_line(size, spec)
    if line:
        log(f"budget: {budget.text} · {line}")
    probes, note = probe_configs(spec, backend, pools, known=[taken] if taken else [])
    space = as_searched(spec["space"], spec["search"]["algorithm"])
    cb = plan(
        spec, budget, probes, grid_points(space), parallel_of(*probes), backend.gpu_hours, spec["search"]["num_samples"]
    )
    spec["search"]["num_samples"] = cb["num_samples"]
    cb["probe"], cb["probe_note"], cb["size"] = probes, note, size
    final = f", final training {cb['final_epochs']} epochs x {cb['final_seeds']} seeds" if "final_epochs" in cb else ""
    if cb["search"] == "skipped":
        log(
            f"budget: {budget.text} · no search: {cb['skipped_because']}; the whole budget trains "
            f"{recipe_name(size)}{final}"
            + ("" if size["taken"] is not None else " (as tune-run --final --budget would)")
            + (f" ({note})" if note else "")
        )
        return cb
    log(
        f"budget: {budget.text} · search {budget.show(cb['planned']['search'])}{share_from(cb)}: {cb['trials']} trials of "
        f"{trial_length(cb)}, {cb['trial_epochs_expected']:g} on average under the scheduler ({min(p['train_images_per_s'] for p in probes):,.0f} images/s measured)"
        f"{final}" + (f" ({note})" if note else "")
    )
    return cb


def seconds_before(cb: dict[str, Any], last_results: list[dict[str, Any]]) -> float:
    """Wall seconds an interrupted search had run: what its end recorded (Ctrl-C, SIGTERM), or for a killed
    driver, until its last result (``search_started_unix`` moves on each resume to leave out the time between
    runs). The larger: a record from an earlier run is older than the results of a later one killed."""
    recorded = float(cb.get("spent_seconds", {}).get("search", 0.0))
    stamps = [float(r["timestamp"]) for r in last_results if r.get("timestamp")]
    start = cb.get("search_started_unix")
    return max(recorded, max(stamps) - float(start) if stamps and start else 0.0)


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


def trained_epochs(result: dict[str, Any]) -> float:
    """Epochs of the whole training split a trial has trained by ``result``: its epoch, or under
    ``scheduler.fidelity: data`` the trial side's ``data_epochs`` (an epoch on a quarter of the data counts a
    quarter) — the unit the plan counts in."""
    return float(result.get("data_epochs", result.get("epoch", 0)) or 0)


@dataclass
class Spend:
    """What a budgeted search has spent so far, in this driver process."""

    epochs: dict[str, float] = field(default_factory=dict)  # each trial's epochs so far (``trained_epochs``)
    seconds: dict[str, float] = field(default_factory=dict)  # each trial's training time so far
    t0: float = field(default_factory=time.monotonic)  # when this run's search began
    before: float = 0.0  # wall seconds the search ran before an interruption (--resume)
    exhausted: bool = False


# Tune keeps a pickled copy of the stopper in its experiment state and runs a resumed study with that copy, not
# with the one it was given: every copy in this process shares the spend of its key, which the runner sets.
_SPEND: dict[str, Spend] = {}


class BudgetStopper(Stopper):
    """Ends the search when its share is spent: epochs trained (``trained_epochs``, summed over trials), GPU-hours (each trial's
    time weighted by its GPU share, by the trial side's rule), or wall-clock seconds since the search began
    (Tune's ``time_budget_s`` as well). Trials it cuts are ``stopped`` by the one status rule.

    Epochs already being trained when the share runs out are not interrupted mid-way by Tune, so an epoch
    budget can be passed by at most one epoch per other running trial; final training takes what is left.
    """

    def __init__(
        self, unit: str, limit: float, gpu: float = 0.0, gpu_hours: Callable[..., float] | None = None
    ) -> None:
        self.unit, self.limit, self.gpu, self.gpu_hours = unit, float(limit), float(gpu), gpu_hours
        self.key = uuid.uuid4().hex

    def __getstate__(self) -> dict[str, Any]:
        return {k: self.__dict__[k] for k in ("unit", "limit", "gpu", "gpu_hours", "key")}  # not the spend

    @property
    def spend(self) -> Spend:
        return _SPEND.setdefault(self.key, Spend())

    @property
    def exhausted(self) -> bool:
        return self.spend.exhausted

    def start(self, t0: float) -> None:
        """The search (or its resumed run) begins now (``time.monotonic()``)."""
        self.spend.t0 = t0

    def carry_on(self, seconds_before: float, last_results: list[dict[str, Any]]) -> None:
        """A resumed study's stopper goes on from what the interrupted run spent — each trial's last reported
        epoch and time, the search's wall seconds so far; the time between the runs is not counted."""
        spend = _SPEND[self.key] = Spend(before=float(seconds_before))
        for r in last_results:
            if r.get("trial_id"):
                spend.epochs[r["trial_id"]] = trained_epochs(r)
                spend.seconds[r["trial_id"]] = float(r.get("time_total_s", 0) or 0)

    def elapsed(self) -> float:
        """The search's wall seconds, over every run of a resumed study."""
        return self.spend.before + time.monotonic() - self.spend.t0

    def spent(self) -> float:
        if self.unit == "epochs":
            return float(sum(self.spend.epochs.values()))
        if self.unit == "gpu_hours":
            hours = self.gpu_hours
            return sum(hours(s, self.gpu, self.gpu > 0) for s in self.spend.seconds.values())  # type: ignore[misc]
        return self.elapsed()

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        self.spend.epochs[trial_id] = trained_epochs(result)
        self.spend.seconds[trial_id] = float(result.get("time_total_s", 0) or 0)
        return self.stop_all()

    def stop_all(self) -> bool:
        self.spend.exhausted = self.spend.exhausted or self.spent() >= self.limit
        return self.spend.exhausted
