"""The rules across a spec's sections, as validators of one model (``Study``), and the defaults that depend on
other keys (``fill_across``): the searcher and its scheduler, PBT's schedule, the trials' length against
``search.epochs`` and ``scheduler.max_t``, a GPU-hour budget.

The trial side's sections are read as mappings: of them ``search/`` knows ``train.epochs`` and
``final.after_search``, no more (search/_contract.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from ._budget import parse_budget
from ._schema import SpecError, check_rules, rule
from ._sections import Experiment, Resources, Scheduler, Search
from ._space import longest_trial, searched_keys

# What PBT runs with: it mutates trials itself, so a searcher that models results (optuna, bohb) would learn from
# configurations PBT has since changed.
PBT_ALGORITHMS = ("random", "grid")
_PBT_IS_A_SCHEDULE = (
    "a pbt trial's hyperparameters change while it trains (a schedule, logged in the study "
    "folder's pbt_policy_*.txt), so its last values are no fixed recipe to retrain"
)
# The schedulers a study with several objectives runs under: ASHA's rungs rank the objectives' vectors (MO-ASHA).
MULTI_OBJECTIVE_SCHEDULERS = ("fifo", "asha")
# ASHA and Hyperband stop every trial at max_t: a longer train.epochs would never run, its trial read as stopped.
_CUT_AT_MAX_T = ("asha", "hyperband")


def fill_across(
    file: str, spec: dict[str, Any], default_name: str | None, metrics: dict[str, str], costs: dict[str, str]
) -> None:
    """The defaults that depend on another key: the study's name (the spec file's stem), the metric (the first
    objective, else val_acc), the mode (the metric's better direction; ``metrics`` and ``costs``: the trial side's),
    num_samples without a budget (1), max_t (train.epochs). The experiment's rules run here, where the name and the
    trial side's metrics are known."""
    exp, search, sched = spec["experiment"], spec["search"], spec["scheduler"]
    exp["name"] = exp["name"] or default_name
    if exp["name"] is None:
        raise SpecError(file, "experiment.name", "is required where no spec file names the study")
    check_rules(file, "experiment", Experiment, exp, context={"metrics": metrics, "costs": costs})
    exp["metric"] = exp["metric"] or next(iter(exp["objectives"] or ["val_acc"]))
    exp["mode"] = exp["mode"] or {**metrics, **costs}[exp["metric"]]
    if search["budget"] is None and search["num_samples"] is None:  # with a budget: sized by the plan
        search["num_samples"] = 1
    sched["max_t"] = sched["max_t"] or spec_epochs(spec)


def fill_max_t(spec: dict[str, Any], given: bool) -> None:
    """max_t left unset is the longest trial the space can make (a searched train.epochs may exceed train.epochs)."""
    if not given:
        spec["scheduler"]["max_t"] = max(spec["scheduler"]["max_t"], longest_trial(spec)[0])


def spec_epochs(spec: dict[str, Any]) -> int:
    train = spec.get("train") or {}
    return int(train.get("epochs") or 1)


class Study(BaseModel):
    """A filled spec as the rules across its sections read it; each rule a validator, raised as the one-line error
    of the key it names. ``json_schema`` states those an editor can check."""

    model_config = ConfigDict(extra="ignore")  # the other sections: their own models' business

    experiment: dict[str, Any]
    search: Search
    scheduler: Scheduler
    resources: Resources
    space: dict[str, Any]
    train: dict[str, Any]
    final: dict[str, Any]

    @model_validator(mode="after")
    def _pbt_mutates_itself(self) -> Study:
        if self.scheduler.name == "pbt" and self.search.algorithm not in PBT_ALGORITHMS:
            raise rule(
                "scheduler.name",
                f"pbt mutates trials itself and takes search.algorithm random or grid, got {self.search.algorithm!r}",
            )
        return self

    @model_validator(mode="after")
    def _several_objectives_schedulers(self) -> Study:
        """Hyperband, the median rule and PBT rank trials by one metric: with several objectives they would stop the
        small, fast configurations the cost objectives favour. ASHA ranks the objectives' vectors at each rung by
        non-dominated sorting (MO-ASHA); fifo stops nothing. BOHB's model takes one metric."""
        goals = self.experiment.get("objectives") or {}
        if len(goals) < 2:
            return self
        if self.scheduler.name not in MULTI_OBJECTIVE_SCHEDULERS:
            raise rule(
                "scheduler.name",
                f"several objectives ({', '.join(goals)}) run under fifo or asha (non-dominated sorting at each "
                f"rung): {self.scheduler.name} would rank trials by {next(iter(goals))} alone, stopping "
                f"configurations the other objectives favour; got {self.scheduler.name!r}",
            )
        if self.search.algorithm == "bohb":
            raise rule(
                "search.algorithm",
                "bohb models one metric; with several objectives use optuna (multi-objective TPE), nsga2, random "
                "or grid",
            )
        return self

    @model_validator(mode="after")
    def _bohb_brackets(self) -> Study:
        if self.search.algorithm == "bohb" and self.scheduler.name != "hyperband":
            raise rule(
                "scheduler.name",
                "search.algorithm=bohb needs scheduler.name=hyperband (BOHB's own bracket schedule), "
                f"got {self.scheduler.name!r}",
            )
        return self

    @model_validator(mode="after")
    def _search_epochs_within_the_trial(self) -> Study:
        epochs, longest = self.search.epochs, int(self.train.get("epochs") or 1)
        if isinstance(epochs, int) and not 1 <= epochs <= longest:
            raise rule(
                "search.epochs", f"1 <= epochs <= train.epochs must hold, got epochs={epochs}, train.epochs={longest}"
            )
        if epochs is not None and "train.epochs" in searched_keys(self.space):
            raise rule(
                "search.epochs",
                "the space searches train.epochs, so the trials' length is not search.epochs' to set: "
                "remove one of the two",
            )
        return self

    @model_validator(mode="after")
    def _gpu_hours_need_gpus(self) -> Study:
        if self.search.budget is not None and self.resources.gpu <= 0:
            if parse_budget(self.search.budget, "").unit == "gpu_hours":
                raise rule(
                    "search.budget",
                    "a GPU-hour budget counts the GPUs trials hold: resources.gpu > 0 must hold, "
                    f"got gpu={self.resources.gpu}",
                )
        return self

    @model_validator(mode="after")
    def _max_t_cuts_no_trial(self) -> Study:
        sched = self.scheduler
        if sched.max_t is None:  # not yet filled in (fill_across)
            return self
        longest, where = longest_trial({"space": self.space, "train": self.train})
        if sched.name in _CUT_AT_MAX_T and sched.max_t < longest:
            raise rule(
                "scheduler.max_t",
                f"max_t >= every train.epochs a trial can have must hold, got max_t={sched.max_t}, "
                f"{where} up to {longest}",
            )
        if not 1 <= sched.grace_period <= sched.max_t:
            raise rule(
                "scheduler.grace_period",
                f"1 <= grace_period <= max_t must hold, got grace_period={sched.grace_period}, max_t={sched.max_t}",
            )
        return self

    @model_validator(mode="after")
    def _pbt_ends_in_a_schedule(self) -> Study:
        """A PBT study ends in a schedule, not a configuration: nothing to retrain (best.yaml, final:)."""
        if self.scheduler.name != "pbt":
            return self
        if not self.space:  # a PBT study's best.yaml: its best trial's last values
            raise rule(
                "scheduler.name",
                f"pbt perturbs the keys in space and this spec searches none; {_PBT_IS_A_SCHEDULE}; "
                "--set scheduler.name=fifo trains them as one anyway",
            )
        if self.final.get("after_search"):
            raise rule("final", f"no final training after a pbt search: {_PBT_IS_A_SCHEDULE}")
        return self

    @staticmethod
    def json_schema() -> list[dict[str, Any]]:
        """The searcher-scheduler rules above as if/then cases of the spec's schema (a null section is its
        defaults); the others relate values, which a JSON Schema cannot."""

        def has(section: str, key: str, values: dict[str, Any]) -> dict[str, Any]:
            return {
                "properties": {section: {"type": "object", "properties": {key: values}, "required": [key]}},
                "required": [section],
            }

        def keeps(section: str, key: str, values: dict[str, Any]) -> dict[str, Any]:
            return {"properties": {section: {"properties": {key: values}}}}

        return [
            {
                "if": has("scheduler", "name", {"const": "pbt"}),
                "then": keeps("search", "algorithm", {"enum": [*PBT_ALGORITHMS, None]}),
            },
            {
                "if": has("search", "algorithm", {"const": "bohb"}),
                "then": has("scheduler", "name", {"const": "hyperband"}),
            },
            {
                "if": has("experiment", "objectives", {"type": "object", "minProperties": 2}),
                "then": {
                    **keeps("scheduler", "name", {"enum": [*MULTI_OBJECTIVE_SCHEDULERS, None]}),
                    **{"not": has("search", "algorithm", {"const": "bohb"})},
                },
            },
        ]
