"""A study's objectives, hard limits and pick rule (``experiment.objectives``, ``.constraints``, ``.pick``).

A multi-objective study searches for the trials no other trial beats in every objective (a Pareto front); its
``constraints`` are upper limits on the cost of a configuration (``COST_METRICS``: known before training, so a
configuration over one is infeasible and trains nothing); ``pick`` names which front point ``best.yaml`` holds.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
}
_ONE = r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*"  # metric, op, number
_CONDITION = re.compile(f"^{_ONE}$")
PICK_RE = f"^{_ONE}(,{_ONE})*$"  # conditions joined by commas, as the JSON Schema states them for editors


class Condition(NamedTuple):
    """``metric op value``, e.g. ``latency_ms <= 5``."""

    metric: str
    op: str
    value: float

    def holds(self, values: Mapping[str, Any]) -> bool:
        v = values.get(self.metric)
        return isinstance(v, (int, float)) and _OPS[self.op](float(v), self.value)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


def parse_conditions(text: str) -> list[Condition]:
    """``'latency_ms<=5, params<1e6'``: conditions joined by commas (all must hold). ValueError saying what is
    allowed when a part is not ``<metric> <op> <number>``."""
    out = []
    for part in text.split(","):
        m = _CONDITION.match(part)
        if m is None:
            raise ValueError(
                f"expected '<metric> <op> <number>' with op <=, <, >= or > (e.g. 'latency_ms<=5'), got {part.strip()!r}"
            )
        try:
            out.append(Condition(m[1], m[2], float(m[3])))
        except ValueError:
            raise ValueError(f"expected a number after {m[2]!r}, got {m[3]!r}") from None
    return out


def over_limits(limits: Mapping[str, float], cost: Mapping[str, float]) -> str | None:
    """Why a configuration of ``cost`` breaks the study's hard limits (``experiment.constraints``, each an upper
    limit), or None: what an infeasible trial reports as its reason."""
    broken = [f"{m} {cost[m]:.6g} > {limit:.6g}" for m, limit in limits.items() if m in cost and cost[m] > limit]
    if not broken:
        return None
    return "over experiment.constraints: " + ", ".join(broken)


def objectives(exp: Mapping[str, Any]) -> dict[str, str]:
    """A resolved experiment section's objectives, ``{metric: mode}``, the first the primary one; a study with one
    metric has that one."""
    return dict(exp.get("objectives") or {exp["metric"]: exp["mode"]})


def several(exp: Mapping[str, Any]) -> bool:
    """Whether the study optimises several objectives (a Pareto front rather than one best value)."""
    return len(exp.get("objectives") or {}) > 1
