"""The trial side's rules across a spec's sections, as validators of one model (``TrialRules``): a registered model,
a loss and a metric that fit the data set's classes, data keys a space may not search. ``check`` is
``TrialSide.check`` of the contract (search/_contract.py): the broken rule as (key path, message)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from .data import NOT_SEARCHABLE
from .models import is_model, list_models
from .sections import RULE, metric_problem, rule

# Classes of the built-in data sets, known before one is loaded (an image folder's are counted when it is).
_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100}


class TrialRules(BaseModel):
    """A resolved spec's sections as the trial side's rules across them read them."""

    model_config = ConfigDict(extra="ignore")  # the orchestration's sections are its own

    experiment: dict[str, Any]
    data: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any]
    space: dict[str, Any]

    def classes(self) -> int | None:
        if self.data["dataset"] == "synthetic":
            return self.data.get("num_classes")
        return _CLASSES.get(self.data["dataset"])

    @model_validator(mode="after")
    def _a_registered_model(self) -> TrialRules:
        name = self.model.get("name")
        if not isinstance(name, str) or not is_model(name):
            raise rule("model.name", f"unknown model {name!r}; allowed: {', '.join(list_models())}")
        return self

    @model_validator(mode="after")
    def _bce_is_binary(self) -> TrialRules:
        k = self.classes()
        if self.train["loss"] == "bce" and k is not None and k != 2:
            raise rule("train.loss", f"bce trains one logit for a binary task; {self.data['dataset']} has {k} classes")
        return self

    @model_validator(mode="after")
    def _a_metric_the_classes_report(self) -> TrialRules:
        k, metric = self.classes(), self.experiment.get("metric")
        problem = metric_problem(metric, k) if k is not None else None
        if problem:
            raise rule("experiment.metric", f"{problem} ({self.data['dataset']})")
        return self

    @model_validator(mode="after")
    def _data_keys_read_once(self) -> TrialRules:
        for where, key in _space_keys(self.space):
            leaf = key[len("data.") :]
            if key.startswith("data.") and leaf in NOT_SEARCHABLE:
                raise rule(where, f"{key} cannot be searched: {NOT_SEARCHABLE[leaf]}")
        return self


def _space_keys(space: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, dotted key) of every key the space sets: its own, and each branch option's."""
    out = []
    for key, dist in space.items():
        if "." in str(key):
            out.append((f"space.{key}", str(key)))
            continue
        ((kind, options),) = dist.items()  # a branch: {grid|choice: [option mappings]}
        out += [(f"space.{key}.{kind}[{i}].{k}", str(k)) for i, opt in enumerate(options) for k in opt if k != "name"]
    return out


def check(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """The first broken rule of a resolved spec as [(key path, message)]; [] when every rule holds."""
    try:
        TrialRules.model_validate({**spec, "space": spec.get("space") or {}})
    except ValidationError as err:
        return [
            (str(ctx["key"]), str(ctx["message"]))
            for e in err.errors()
            if e["type"] == RULE and (ctx := e.get("ctx") or {})
        ]
    return []
