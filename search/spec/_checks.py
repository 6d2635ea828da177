"""The orchestration sections' rules across keys: the experiment's name and metric, the algorithm and
scheduler pairings, PBT's schedule, and a scheduler's ``max_t`` against the longest trial."""

from __future__ import annotations

from typing import Any

from ._budget import check_budget
from ._schema import SpecError, allowed, did_you_mean
from ._sections import NAME_RE
from ._space import is_branch


def check_orchestration(file: str, spec: dict[str, Any], default_name: str | None) -> None:
    exp, search, sched = spec["experiment"], spec["search"], spec["scheduler"]
    exp["name"] = exp["name"] or default_name
    if not exp["name"] or not NAME_RE.match(exp["name"]):
        raise SpecError(file, "experiment.name", f"letters, digits, '.', '_' and '-' only, got {exp['name']!r}")
    check_budget(file, spec)  # fills num_samples when it is left open without a budget
    epochs = spec_epochs(spec)
    sched["max_t"] = sched["max_t"] or epochs
    if sched["name"] == "pbt" and search["algorithm"] not in ("random", "grid"):
        raise SpecError(
            file,
            "scheduler.name",
            f"pbt mutates trials itself and takes search.algorithm random or grid, got {search['algorithm']!r}",
        )
    if search["algorithm"] == "bohb" and sched["name"] != "hyperband":
        raise SpecError(
            file,
            "scheduler.name",
            f"search.algorithm=bohb needs scheduler.name=hyperband "
            f"(BOHB's own bracket schedule), got {sched['name']!r}",
        )


def check_metric(file: str, exp: dict[str, Any], metrics: dict[str, str]) -> None:
    """The study's metric is one a trial reports; its mode defaults to, and must agree with, the metric's
    better direction (maximising a loss is always a mistake)."""
    metric = exp["metric"]
    if metric not in metrics:
        raise SpecError(
            file,
            "experiment.metric",
            f"{metric!r} is not reported by trials; allowed: {allowed(metrics)}{did_you_mean(metric, metrics)}",
        )
    better = metrics[metric]
    if exp["mode"] is None:
        exp["mode"] = better
    elif exp["mode"] != better:
        raise SpecError(
            file,
            "experiment.mode",
            f"{metric} is better when {'higher' if better == 'max' else 'lower'}: "
            f"mode must be {better}, got {exp['mode']}",
        )


def spec_epochs(spec: dict[str, Any]) -> int:
    train = spec.get("train") or {}
    return int(train.get("epochs") or 1)


_PBT_IS_A_SCHEDULE = (
    "a pbt trial's hyperparameters change while it trains (a schedule, logged in the study "
    "folder's pbt_policy_*.txt), so its last values are no fixed recipe to retrain"
)


def check_pbt_schedule(file: str, spec: dict[str, Any]) -> None:
    """A PBT study ends in a schedule, not a configuration: refuse to retrain one (best.yaml, final:)."""
    if spec["scheduler"]["name"] != "pbt":
        return
    if not spec["space"]:  # a PBT study's best.yaml: its best trial's last values
        raise SpecError(
            file,
            "scheduler.name",
            f"pbt perturbs the keys in space and this spec searches none; "
            f"{_PBT_IS_A_SCHEDULE}; --set scheduler.name=fifo trains them "
            f"as one anyway",
        )
    if spec["final"]["after_search"]:
        raise SpecError(file, "final", f"no final training after a pbt search: {_PBT_IS_A_SCHEDULE}")


def _longest_trial(spec: dict[str, Any]) -> tuple[int, str]:
    """The largest train.epochs a trial can have, and where it is set (spec, space or a branch option)."""

    def top(dist: dict[str, list[Any]]) -> int:
        ((kind, args),) = dist.items()
        return int(max(args) if kind in ("grid", "choice") else args[1])

    space = spec["space"]
    found = [
        (top(space["train.epochs"]), "space.train.epochs")
        if "train.epochs" in space
        else (int(spec["train"]["epochs"]), "train.epochs")
    ]
    for key, dist in space.items():
        if is_branch(key, dist):
            ((kind, options),) = dist.items()
            found += [
                (
                    top(o["train.epochs"]) if isinstance(o["train.epochs"], dict) else int(o["train.epochs"]),
                    f"space.{key}.{kind}[{i}].train.epochs",
                )
                for i, o in enumerate(options)
                if "train.epochs" in o
            ]
    return max(found)


def check_max_t(file: str, spec: dict[str, Any], given: bool) -> None:
    """max_t (default: the longest trial) may not cut a trial short: ASHA and Hyperband stop every trial
    at max_t, so a longer train.epochs would never be run, and its trial would read as stopped."""
    sched = spec["scheduler"]
    longest, where = _longest_trial(spec)
    if not given:
        sched["max_t"] = max(sched["max_t"], longest)
    elif sched["name"] in ("asha", "hyperband") and sched["max_t"] < longest:
        raise SpecError(
            file,
            "scheduler.max_t",
            f"max_t >= every train.epochs a trial can have must hold, got "
            f"max_t={sched['max_t']}, {where} up to {longest}",
        )
    # After max_t took its final value: a searched train.epochs may raise it above train.epochs.
    if sched["grace_period"] < 1 or sched["grace_period"] > sched["max_t"]:
        raise SpecError(
            file,
            "scheduler.grace_period",
            f"1 <= grace_period <= max_t must hold, got grace_period={sched['grace_period']}, max_t={sched['max_t']}",
        )
