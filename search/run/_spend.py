"""What a budgeted study spent, in its budget's unit and in seconds, and the summary's lines of planned
against spent."""

from __future__ import annotations

from typing import Any

from ..spec._budget import Budget


def spent_search(unit: str, rows: list[dict[str, Any]], search_budget: dict[str, float], seconds: float) -> float:
    """The search's spend in ``unit``: epochs of trials.csv (of the whole training split), GPU-hours of study.json's budget, wall seconds."""
    if unit == "epochs":  # of the whole training split: data_epochs under scheduler.fidelity: data
        return float(sum(float(r.get("data_epochs") or r["epochs"]) for r in rows))
    return float(search_budget["gpu_hours"]) if unit == "gpu_hours" else float(seconds)


def spent_final(unit: str, summary: dict[str, Any], seconds: float) -> float:
    """Final training's spend in ``unit``: epochs trained over seeds, their GPU-hours, wall seconds."""
    if unit == "epochs":
        return float(sum(len(h) for h in summary["history"].values()))
    if unit == "gpu_hours":
        cost = summary["summary"].get("cost", {})
        return float(cost.get("gpu_hours", 0.0)) * len(summary["seeds"])
    return float(seconds)


def totals(cb: dict[str, Any]) -> None:
    """Fill ``total`` of what was spent, in the budget's unit and in seconds."""
    for key in ("spent", "spent_seconds"):
        cb[key]["total"] = sum(v for k, v in cb[key].items() if k != "total")


def lines(cb: dict[str, Any]) -> list[str]:
    """The summary's budget lines: planned against spent, per phase, in the budget's unit and seconds."""
    b = Budget(0.0, cb["unit"], cb["budget"])
    phases = [p for p in ("search", "final", "total") if p in cb["spent"]]
    planned = " · ".join(f"{p} {b.show(cb['planned'][p])} ({cb['planned_seconds'].get(p, 0):.0f} s)" for p in phases)
    spent = " · ".join(f"{p} {b.show(cb['spent'][p])} ({cb['spent_seconds'][p]:.0f} s)" for p in phases)
    out = [f"  budget:      {cb['budget']} · planned {planned}", f"               spent   {spent}"]
    if cb.get("ended_by_budget"):
        out.append(f"               the search ended early: {cb['reason']}")
    return out
