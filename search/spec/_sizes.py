"""``search.sizes``: the budget chooses how large the recipe is. Dearer versions of the recipe (wider, deeper, a
larger batch: model.* and train.* keys), dearest first; under a wall-clock or GPU-hours budget with final training,
each is probed on this device in turn and the first whose final training still trains each seed SIZE_KEEPS of
train.epochs replaces the recipe, before the plan (``_budget.plan``) splits the budget around it. None fits: the
recipe as written.

Why: at a small budget the recipe a user writes for it is cheap, and a budget that could have trained a larger
model is left unspent or spent on a search of the small one (issue 24: at 30 minutes on a 2-core CPU, airbench94's
widths reached 0.899 where a quarter of their cost with a search reached 0.879).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .._contract import TrialSide
from ._budget import Budget, final_plan
from ._spec import with_size

# A size is taken when final training of it still trains each seed this share of train.epochs. Measured on the
# 2-core AMX host at 30 minutes (benchmarks/cifar10-value-30m): airbench94's widths trained 9 of their 10 epochs
# (0.899) beat a quarter of their cost trained all 10 (0.8825); the schedule decays to zero at the deadline, so a
# shortened run still ends annealed. Where between them the line lies is a judgment, not a measured optimum.
SIZE_KEEPS = 0.8


def size_epochs(
    spec: dict[str, Any], budget: Budget, probe: dict[str, Any], parallel: int, gpu_hours: Callable[..., float]
) -> int:
    """Epochs final training of ``spec``'s recipe gets per seed from the final share of ``budget``: all of it
    (search.budget_split null: the recipe's final training comes first) or what the split leaves."""
    split = spec["search"]["budget_split"]
    available = budget.amount * (1.0 if split is None else 1.0 - float(split))
    sized = {**spec, "final": {**spec["final"], "epochs": None}}
    return int(final_plan(sized, budget, available, [probe], parallel, gpu_hours)["final_epochs"])


def needed_epochs(spec: dict[str, Any]) -> int:
    """Final epochs per seed a size needs to be taken: SIZE_KEEPS of train.epochs, rounded up."""
    return math.ceil(SIZE_KEEPS * int(spec["scheduler"]["max_t"]) - 1e-9)


def choose_size(
    spec: dict[str, Any],
    backend: TrialSide,
    pools: Any,
    budget: Budget,
    parallel_of: Callable[[dict[str, Any]], int],
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Which of ``spec``'s sizes this budget affords: ``(the probe of the one taken or None, the record)``. The
    spec's model and train sections become the size's; its ``search.sizes`` is emptied either way (best.yaml
    and final training hold the size taken, not the choice). ``parallel_of(probe)``: trials at once."""
    sizes, spec["search"]["sizes"] = spec["search"]["sizes"], []
    record: dict[str, Any] = {"sizes": sizes, "taken": None, "set": {}, "tried": []}
    if not sizes:
        return None, record
    if budget.unit == "epochs" or not spec["final"]["after_search"]:
        record["why"] = (
            "an epochs budget counts every size's epochs alike"
            if budget.unit == "epochs"
            else "no final training to size them by"
        )
        return None, record
    need = needed_epochs(spec)
    for i, overrides in enumerate(sizes):
        candidate = with_size(spec, overrides, backend, where=f"search.sizes[{i}]")
        probe = backend.probe(candidate, pools)
        epochs = size_epochs(candidate, budget, probe, parallel_of(probe), backend.gpu_hours)
        record["tried"].append({"set": overrides, "final_epochs": epochs, "final_epoch_s": probe["final_epoch_s"]})
        if epochs >= need:
            record.update(taken=i, set=overrides)
            _take(spec, candidate)
            return probe, record
    return None, record


def retake_size(spec: dict[str, Any], record: dict[str, Any] | None, backend: TrialSide) -> None:
    """``spec`` at the size a plan took (``record``: study.json's ``compute_budget.size``), for a resumed study: the
    spec file still lists the choice, not what was chosen."""
    spec["search"]["sizes"] = []
    if record and record.get("taken") is not None:
        _take(spec, with_size(spec, record["set"], backend, where=f"search.sizes[{record['taken']}]"))


def _take(spec: dict[str, Any], sized: dict[str, Any]) -> None:
    """The sections a size's keys reach (model, train), whole from ``sized`` (``with_size``: another model's
    keys and defaults), into ``spec`` (the study's, shared by everything after the plan)."""
    for section in ("model", "train"):
        spec[section] = sized[section]


def recipe_name(record: dict[str, Any] | None) -> str:
    """The recipe a plan trains, for its lines: as written, or at the size the budget took."""
    if not record or record.get("taken") is None:
        return "the recipe as written"
    shown = ", ".join(f"{k}={v}" for k, v in record["set"].items())
    return f"the recipe at search.sizes[{record['taken']}] ({shown})"


def size_line(record: dict[str, Any], spec: dict[str, Any]) -> str:
    """What the budget chose among the sizes, for the plan's lines ("" without sizes)."""
    if not record["sizes"]:
        return ""
    if record.get("why"):
        return f"search.sizes not used ({record['why']}): the recipe as written"
    epochs, need = int(spec["scheduler"]["max_t"]), needed_epochs(spec)
    tried = ", ".join(f"[{i}] {t['final_epochs']} of {epochs}" for i, t in enumerate(record["tried"]))
    if record["taken"] is None:
        return f"size: the recipe as written (final training of search.sizes {tried} epochs per seed, under {need})"
    taken = recipe_name(record)[len("the recipe at ") :]
    return f"size: {taken}: final training {tried} epochs per seed (at least {need} needed)"
