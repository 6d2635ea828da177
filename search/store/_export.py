"""Study outputs: ``trials.csv`` (one row per trial) and ``best.yaml`` (a spec that runs as is)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._contract import TrialSide
from ..spec._files import dump_spec
from ..spec._objectives import Condition
from ..spec._space import plain
from ._atomic import write_atomic

STATUSES = (
    "completed",
    "stopped",
    "early_stopped",
    "infeasible",
    "diverged",
    "oom",
    "error",
    "unfinished",
    "not_trained",
)
# Statuses whose reason the trial reported with its last result; with "error", those that have no score.
REASONED = ("infeasible", "diverged", "oom")
FAILED = ("error", *REASONED)
SCORED = ("completed", "stopped", "early_stopped")  # trials whose best validation metric is a real score
FULL_LENGTH = ("completed", "early_stopped")  # trials that ran their whole schedule (early stopping is part of it)
# A trial that ended itself on a user error (missing weights or data) reports ``error`` with the reason
# rather than raising, so Tune does not retry it (resources.max_failures is for lost nodes and processes).
USER_ERROR = "error"
# A final seed a wall-clock budget's deadline left too little of its share to train reports this flag with the
# reason and no model: neither a failure of the recipe nor one of its final models.
OUT_OF_TIME = "out_of_time"


# Ray's memory monitor killed the trial's process (ray.exceptions.OutOfMemoryError). Its message is a
# page of Ray advice; these phrases of it identify it, whichever of its lines is kept.
HOST_OOM_MARKS = ("ray.exceptions.OutOfMemoryError", "running low on memory", "RAY_memory_usage_threshold")


def killed_for_memory(error: str) -> bool:
    """Whether a trial's error (its whole text or its last line) is Ray's memory monitor killing it."""
    return any(mark in error for mark in HOST_OOM_MARKS)


def trial_status(last: dict[str, Any], error: str, length: int, finished: bool = True) -> str:
    """The one status rule, for trials.csv, MLflow and the console alike. ``last``: the trial's last
    result; ``error``: the text of what it raised ('' if nothing); ``length``: its full length in epochs
    (``full_epochs``).

    completed: ran its full length; early_stopped: the engine stopped it (``train.early_stopping``);
    stopped: the scheduler did; infeasible: the model refused the configuration; diverged: its training
    loss became NaN or inf; oom: the GPU ran out of memory, or Ray's memory monitor killed the trial
    for the node's (host) memory; error: it raised; unfinished: the study was interrupted (Ctrl-C,
    SIGTERM) before the trial ended; not_trained: a final seed the budget's deadline left too little time.
    """
    if error:
        return "oom" if killed_for_memory(error) else "error"
    if last.get(USER_ERROR):
        return "error"
    if not finished:  # the study was interrupted while it ran or waited: --resume continues it
        return "unfinished"
    if last.get(OUT_OF_TIME):
        return "not_trained"
    for flag in REASONED:
        if last.get(flag):
            return flag
    if int(last.get("epoch", 0)) >= length:
        return "completed"
    return "early_stopped" if last.get("early_stopped") else "stopped"


def status_reason(last: dict[str, Any], status: str) -> str:
    """Why an infeasible, diverged, oom, user-error or not-trained trial ended (its last result says); '' for the
    other statuses (an exception's text comes from Tune)."""
    told = status in (*REASONED, "not_trained") or (status == "error" and last.get(USER_ERROR))
    return str(last.get("reason", "")) if told else ""


def error_reason(error: str, config: dict[str, Any], oom_reason: Callable[[dict[str, Any]], str] | None) -> str:
    """Why a trial that raised or was killed ended: its exception's last line, or for a trial Ray's memory
    monitor killed, the trial side's out-of-memory reason for its configuration (model, sizes, what to
    lower) instead of Ray's dump."""
    if killed_for_memory(error):
        return oom_reason(config) if oom_reason else "out of host memory: killed by Ray's memory monitor"
    lines = [ln.strip() for ln in error.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def full_epochs(config: dict[str, Any], max_epochs: int) -> int:
    """A trial's full length: a searched train.epochs (paper 000's grid, a branch's own epochs), else the spec's."""
    return int(config.get("train.epochs") or max_epochs)


def latest_per_epoch(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each epoch's last result, epoch 1 first. A trial resumed from a checkpoint reports again the epochs after
    it, and one restored from the checkpoint of its last epoch reports that result once more (the driver was
    killed before Tune recorded its end): the later report is the run training continued from, and an epoch is
    one value of ``<metric>_by_epoch``."""
    by_epoch = {int(h.get("epoch", 0) or 0): h for h in history}
    return [by_epoch[e] for e in sorted(by_epoch)]


def objective_columns(goals: Mapping[str, str], costs: Sequence[str]) -> dict[str, str]:
    """Each objective's trials.csv column: the first's ``final_<metric>``, a cost's its name (one value per trial),
    another metric's ``final_<metric>`` (its value at the trial's last epoch)."""
    first = next(iter(goals))
    return {m: f"final_{m}" if m == first or m not in costs else m for m in goals}


def trial_columns(
    space_keys: list[str], metric: str, data_weighted: bool = False, extra: Sequence[str] = ()
) -> list[str]:
    """trials.csv's columns, in order: of every row ``trial_rows`` makes, and the header of a study with no trial
    (a table with no rows, which every reader of it reads as such). ``extra``: the cost columns, the other
    objectives' and ``pareto`` (``extra_columns``)."""
    return [
        "trial_id",
        "status",
        *space_keys,
        f"final_{metric}",
        f"best_{metric}",
        "best_epoch",
        f"{metric}_by_epoch",
        *extra,
        "epochs",
        *(["data_epochs"] if data_weighted else []),
        "device",
        "arithmetic",
        "gpu",
        "seconds",
        "reason",
    ]


def extra_columns(goals: Mapping[str, str], costs: Sequence[str], reported: Sequence[str] = ()) -> list[str]:
    """The columns of a study's costs (those its objectives name or its trials ``reported``), its other objectives'
    last values, and with several objectives each trial's Pareto front rank (``pareto``, 1 = the front)."""
    cols = objective_columns(goals, costs)
    first = next(iter(goals))
    out = [c for c in costs if c in goals or c in reported]
    out += [col for m, col in cols.items() if m != first and m not in costs]
    return out + (["pareto"] if len(goals) > 1 else [])


def trial_rows(
    trials: list[dict[str, Any]],
    space_keys: list[str],
    metric: str,
    mode: str,
    max_epochs: int,
    oom_reason: Callable[[dict[str, Any]], str] | None = None,
    goals: Mapping[str, str] | None = None,
    costs: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """``trials``: dicts with trial_id, config, last (last result), history (per-epoch results), error
    (the text of what it raised); ``oom_reason``: the reason of a trial killed for host memory, by config;
    ``goals``: the study's objectives (``{metric: mode}``, default the one metric); ``costs``: the cost metrics a
    trial may report (``pareto`` is left '' here: ``report._pareto.add_front`` sets it)."""
    rows = []
    # scheduler.fidelity: data: the epochs of the whole training split each trial trained (an epoch budget's unit)
    data_weighted = any("data_epochs" in (t["last"] or {}) for t in trials)
    goals = goals or {metric: mode}
    reported = [c for c in costs if any(c in (t["last"] or {}) for t in trials)]
    extra = extra_columns(goals, costs, reported)
    columns = trial_columns(space_keys, metric, data_weighted, extra)
    for t in trials:
        last = t["last"] or {}
        hist = latest_per_epoch(
            [h for h in t["history"] if metric in h and not any(h.get(f) for f in (*REASONED, USER_ERROR))]
        )
        scores = [(float(h[metric]), int(h.get("epoch", 0) or 0)) for h in hist if isinstance(h[metric], (int, float))]
        top = (max if mode == "max" else min)(scores, key=lambda v: v[0]) if scores else (math.nan, 0)
        status = trial_status(last, t["error"], full_epochs(t["config"], max_epochs), t.get("finished", True))
        row = {"trial_id": t["trial_id"], "status": status}
        row.update({k: plain(t["config"].get(k, "")) for k in space_keys})
        row.update(
            {
                f"final_{metric}": last.get(metric) if status not in FAILED else math.nan,
                f"best_{metric}": top[0],
                "best_epoch": top[1],  # where the best value was reached (the final one is at ``epochs``)
                # every epoch's value, epoch 1 first: trials compared at one fidelity (importance)
                f"{metric}_by_epoch": " ".join(f"{v:.6g}" for v, _ in sorted(scores, key=lambda s: s[1])),
                "epochs": 0 if status == "infeasible" else int(last.get("epoch", 0)),
                **({"data_epochs": plain(last.get("data_epochs", 0.0))} if data_weighted else {}),
                "device": last.get("device", ""),
                # the precision and layout it trained in (an ending error's result does not repeat it)
                "arithmetic": next(
                    (h["arithmetic"] for h in reversed(t["history"]) if isinstance(h.get("arithmetic"), str)), ""
                ),
                "gpu": str(last.get("gpu_ids", "")),
                "seconds": plain(last.get("time_total_s", "")),
                "reason": error_reason(t["error"], t["config"], oom_reason)
                if t["error"]
                else status_reason(last, status),
            }
        )
        for col in extra:  # a cost is known before training (also of a trial over a limit); a metric's is its last
            m = col.removeprefix("final_")
            if col == "pareto":
                row[col] = ""
            elif m in costs:  # a trial over a limit reports its objectives at their worst: its reason says the cost
                row[col] = plain(last[m]) if _finite(last.get(m)) else ""
            else:
                row[col] = last.get(m, math.nan) if status not in FAILED else math.nan
        rows.append({c: row[c] for c in columns})
    return rows


def write_trials(
    path: Path, rows: list[dict[str, Any]], space_keys: list[str], metric: str, extra: Sequence[str] = ()
) -> None:
    """``trial_rows``' rows as trials.csv: their columns, or with no rows the header alone (``trial_columns``)."""
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else trial_columns(space_keys, metric, extra=extra))
    w.writeheader()
    w.writerows(rows)
    write_atomic(path, text.getvalue())


def compared(rows: list[dict[str, Any]], metric: str) -> tuple[list[dict[str, Any]], str]:
    """The trials compared at one fidelity, by the value of their last epoch — what retraining the configuration
    reproduces, not a peak it passed on the way: those that ran their whole schedule; when none did (a scheduler or
    the budget cut them all), those that reached the most epochs. A trial cut at a low rung, or before its learning
    rate decayed, is not ranked against finished ones. Returns them and the rule in words."""
    scored = [r for r in rows if r["status"] not in FAILED and _finite(r.get(f"final_{metric}"))]
    if not scored:
        return [], ""
    full = [r for r in scored if r["status"] in FULL_LENGTH]
    if full:
        return full, f"final {metric} among the {len(full)} trial(s) that ran their whole schedule"
    most = max(int(r["epochs"]) for r in scored)
    pool = [r for r in scored if int(r["epochs"]) == most]
    return (
        pool,
        f"{metric} at epoch {most} among the {len(pool)} trial(s) that reached it (none ran its whole schedule)",
    )


def meeting(pool: list[dict[str, Any]], pick: Sequence[Condition], columns: Mapping[str, str]) -> list[dict[str, Any]]:
    """The rows of ``pool`` that meet every condition of ``pick`` (``columns``: each objective's column)."""
    return [r for r in pool if all(c.holds({m: r.get(col) for m, col in columns.items()}) for c in pick)]


def best_of(pool: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any]:
    """The row of ``pool`` with the best ``final_<metric>``."""
    sign = 1.0 if mode == "max" else -1.0
    return max(pool, key=lambda r: sign * float(r[f"final_{metric}"]))


def select_best(
    rows: list[dict[str, Any]],
    metric: str,
    mode: str,
    pick: Sequence[Condition] = (),
    columns: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], str] | None:
    """The best trial among those ``compared`` at one fidelity and the rule that picked it; with ``pick``
    (``experiment.pick``), the best among those meeting its conditions (``columns``: each objective's column)."""
    pool, rule = compared(rows, metric)
    if pick:
        pool = meeting(pool, pick, columns or {})
        rule = f"{rule}, of the {len(pool)} with " + " and ".join(str(c) for c in pick)
    if not pool:
        return None
    return best_of(pool, metric, mode), rule


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def best_spec(
    spec: dict[str, Any],
    config: dict[str, Any],
    backend: TrialSide,
    parent_run_id: str | None = None,
    suffix: str = "best",
) -> dict[str, Any]:
    """The study's spec with the winning values fixed: one configuration, no search, named
    ``<study>-<suffix>``.

    Its MLflow runs (and its final training) nest under the study's parent run.
    """
    s = backend.apply_config(spec, config)
    s["tracking"]["mlflow_experiment"] = spec["tracking"]["mlflow_experiment"] or spec["experiment"]["name"]
    s["tracking"]["parent_run_id"] = parent_run_id or spec["tracking"].get("parent_run_id")
    s["space"] = {}
    # One configuration; the study's budget (search.budget) was spent by the study, not by this spec.
    s["search"] = {**s["search"], "algorithm": "random", "num_samples": 1, "budget": None}
    # A PBT trial's values are where its schedule ended; kept as pbt, the spec refuses to retrain them.
    # One trial has no rungs: nor a data fidelity (its training set is all of it, as in the search's last rungs).
    s["scheduler"] = {
        **s["scheduler"],
        "name": "pbt" if spec["scheduler"]["name"] == "pbt" else "fifo",
        "fidelity": "epochs",
    }
    s["experiment"]["name"] = f"{spec['experiment']['name']}-{suffix}"
    return s


def best_text(
    path: str | Path,
    spec: dict[str, Any],
    row: dict[str, Any],
    config: dict[str, Any],
    metric: str,
    backend: TrialSide,
    parent_run_id: str | None = None,
    rule: str = "",
    suffix: str = "best",
) -> str:
    """best.yaml's text (or a picked point's, ``suffix``: its name's end; ``path``: where it is written, as shown):
    a header saying which trial, by which rule, and how to run it, then the spec of that one configuration
    (``best_spec``)."""
    value = (
        f"{metric}={row[f'final_{metric}']:.4f} at its last epoch ({row['epochs']}; its best, "
        f"{row[f'best_{metric}']:.4f}, at epoch {row['best_epoch']})"
    )
    picked = f"# Picked by {rule}.\n" if rule else ""
    header = (
        f"# Best configuration of study {spec['experiment']['name']!r}: trial {row['trial_id']}, {value}.\n"
        f"{picked}# Runs as is: tune-run {path}   (final training and test evaluation: add --final)\n"
    )
    if spec["scheduler"]["name"] == "pbt":
        header = (
            f"# Best trial of PBT study {spec['experiment']['name']!r}: {row['trial_id']}, {value}.\n{picked}"
            f"# A schedule, not a recipe: its hyperparameters changed while it trained (see "
            f"pbt_policy_*.txt beside this file);\n# these are its last values. tune-run refuses to "
            f"retrain them unless you --set scheduler.name=fifo.\n"
        )
    return header + dump_spec(best_spec(spec, config, backend, parent_run_id, suffix))
