"""``tune-run --pick 'latency_ms<=5' runs/<study>``: export one point of a multi-objective study's front as a spec
that runs as is (``--final`` trains and tests it), beside the study's best.yaml."""

from __future__ import annotations

import re
import sys
from typing import Any

from .._contract import TrialSide
from ..spec._files import read_json
from ..spec._objectives import parse_conditions
from ..spec._schema import SpecError, allowed
from ..spec._spec import load_spec
from ..store import _storage as storage
from ..store._atomic import write_atomic
from ..store._export import best_of, best_text, meeting, objective_columns
from ..store._paths import STUDY_FILE, location, shown

_OPS = {"<=": "le", "<": "lt", ">=": "ge", ">": "gt"}


def pick_file(text: str) -> str:
    """The picked point's file name: ``latency_ms<=5`` -> ``pick-latency_ms-le-5.yaml``."""
    parts = [f"{c.metric}-{_OPS[c.op]}-{c.value:g}" for c in parse_conditions(text)]
    return "pick-" + re.sub(r"[^A-Za-z0-9_.+-]", "_", "-and-".join(parts)) + ".yaml"


def pick(folder: str, text: str, backend: TrialSide) -> int:
    """Write the most accurate (by the first objective) compared trial that meets ``text``'s conditions as
    ``<folder>/pick-<conditions>.yaml``; exit status 1 when none meets them. A folder that is no multi-objective
    study, or a condition on something that is not an objective: ``SpecError`` (one line, exit 2)."""
    loc = location(folder)
    record = read_json(storage.join(loc, STUDY_FILE), "study file")
    front = record.get("pareto") or {}
    if not front.get("points"):
        raise SpecError(
            folder, "", "has no Pareto front in its study.json: --pick chooses among a multi-objective study's trials"
        )
    goals: dict[str, str] = front["objectives"]
    try:
        conditions = parse_conditions(text)
    except ValueError as exc:
        raise SpecError("--pick", "", str(exc)) from None
    for c in conditions:
        if c.metric not in goals:
            raise SpecError("--pick", "", f"{c.metric!r} is not an objective of this study; allowed: {allowed(goals)}")
    spec = load_spec(storage.join(loc, "spec.yaml"), backend)
    metric, mode = spec["experiment"]["metric"], spec["experiment"]["mode"]
    columns = objective_columns(goals, list(backend.COST_METRICS))
    points: list[dict[str, Any]] = front["points"]
    meets = meeting(points, conditions, columns)
    said = " and ".join(str(c) for c in conditions)
    if not meets:
        print(f"tune-run: no compared trial of {shown(loc)} has {said}: nothing written", file=sys.stderr)
        return 1
    best = best_of(meets, metric, mode)
    rule = f"tune-run --pick: final {metric} among the {len(points)} compared trial(s), of the {len(meets)} with {said}"
    name = pick_file(text)
    path = storage.join(loc, name)
    parent = record.get("mlflow_parent_run_id")
    body = best_text(shown(path), spec, best, best["config"], metric, backend, parent, rule, name.removesuffix(".yaml"))
    if storage.is_uri(path):
        storage.write_bytes(path, body.encode())
    else:
        write_atomic(path, body)
    values = ", ".join(f"{m}={float(best[col]):.4g}" for m, col in columns.items())
    print(f"picked trial {best['trial_id']} ({values}; front rank {best['pareto']}) by {rule}")
    print(f"  spec:  {shown(path)}")
    print(f"  train and test it: tune-run {shown(path)} --final")
    return 0
