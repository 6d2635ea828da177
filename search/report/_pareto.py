"""A multi-objective study's Pareto front: each trial's front rank, the front's hypervolume and its plot.

Trials are compared as ``select_best`` compares them (at one fidelity: those that ran their whole schedule, else
those that reached the most epochs), by each objective's value at their last epoch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Row = dict[str, Any]


def minimised(values: Sequence[Sequence[float]], modes: Sequence[str]) -> np.ndarray:
    """``values`` (one row per trial, one column per objective) with maximised columns negated: smaller is better
    in every column."""
    sign = np.array([-1.0 if m == "max" else 1.0 for m in modes])
    return np.asarray(values, dtype=float).reshape(-1, len(modes)) * sign


def front_ranks(points: np.ndarray) -> list[int]:
    """Non-dominated sorting (NSGA-II's): 1 for the trials no other beats (at least as good in every objective,
    better in one), 2 for those only rank-1 trials beat, and so on. ``points``: minimised, one row per trial."""
    n = len(points)
    le = (points[:, None, :] <= points[None, :, :]).all(axis=2)
    lt = (points[:, None, :] < points[None, :, :]).any(axis=2)
    dominates = np.logical_and(le, lt)  # [i, j]: trial i dominates trial j
    beaten_by = dominates.sum(axis=0)
    ranks = [0] * n
    current = [j for j in range(n) if beaten_by[j] == 0]
    rank = 1
    while current:
        nxt = []
        for i in current:
            ranks[i] = rank
            for j in np.flatnonzero(dominates[i]):
                beaten_by[j] -= 1
                if beaten_by[j] == 0:
                    nxt.append(int(j))
        current, rank = nxt, rank + 1
    return ranks


def crowding(points: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance of points on one front (one row each): per objective, the gap between a
    point's two neighbours over the front's range, summed; the two ends of each objective are infinitely far
    (kept first). An objective on which all points tie adds nothing (its order would be arbitrary)."""
    n, k = points.shape
    out = np.zeros(n)
    for j in range(k):
        lo, hi = points[:, j].min(), points[:, j].max()
        if not hi > lo:
            continue
        order = np.argsort(points[:, j], kind="stable")
        out[order[0]] = out[order[-1]] = np.inf
        out[order[1:-1]] += (points[order[2:], j] - points[order[:-2], j]) / (hi - lo)
    return out


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """The volume the points dominate up to ``reference`` (minimised objectives; a point not better than the
    reference in every objective adds nothing): exact, by slicing along the last objective (fine for the tens of
    points a study's front holds)."""
    pts = points[(points < reference).all(axis=1)]
    if not len(pts):
        return 0.0
    if pts.shape[1] == 1:
        return float(reference[0] - pts[:, 0].min())
    pts = pts[np.argsort(pts[:, -1])]
    volume = 0.0
    for i in range(len(pts)):
        upper = pts[i + 1, -1] if i + 1 < len(pts) else reference[-1]
        if upper > pts[i, -1]:
            volume += hypervolume(pts[: i + 1, :-1], reference[:-1]) * float(upper - pts[i, -1])
    return volume


def add_front(rows: list[Row], pool: list[Row], columns: Mapping[str, str], modes: Sequence[str]) -> None:
    """Set each row's ``pareto``: its front rank among ``pool`` (the trials compared at one fidelity), '' for the
    others. ``columns``: each objective's trials.csv column, in order."""
    values = [[float(r[c]) for c in columns.values()] for r in pool]
    ranks = front_ranks(minimised(values, modes)) if pool else []
    by_id = {r["trial_id"]: rank for r, rank in zip(pool, ranks)}
    for r in rows:
        r["pareto"] = by_id.get(r["trial_id"], "")


def reference_value(mode: str, values: Sequence[float], limit: float | None = None) -> float:
    """One objective's coordinate of a hypervolume's reference point: its limit where one is set, 0 for an
    accuracy-like metric (maximised, every value in [0, 1]), else the worst of ``values``."""
    if limit is not None:
        return float(limit)
    if not values:
        return math.nan
    if mode == "max" and min(values) >= 0 and max(values) <= 1:
        return 0.0
    return min(values) if mode == "max" else max(values)


def summary(
    pool: list[Row], columns: Mapping[str, str], modes: Sequence[str], limits: Mapping[str, float]
) -> dict[str, Any]:
    """study.json's ``pareto``: the objectives, the front's trials and its hypervolume with the reference point it
    is measured from: a limit where ``experiment.constraints`` sets one, else the worst value among the compared
    trials (0 for an accuracy-like metric in [0, 1]: then two studies' hypervolumes compare only at equal
    references, which this records)."""
    front = [r for r in pool if r.get("pareto") == 1]
    names = list(columns)
    reference = {
        m: reference_value(mode, [float(r[columns[m]]) for r in pool], limits.get(m)) for m, mode in zip(names, modes)
    }
    ref = minimised([[reference[m] for m in names]], modes)[0]
    pts = minimised([[float(r[columns[m]]) for m in names] for r in front], modes)
    return {
        "objectives": dict(zip(names, modes)),
        "columns": dict(columns),  # where each objective's value is, in trials.csv and in ``points``
        "compared": len(pool),
        "front": [r["trial_id"] for r in front],
        "hypervolume": hypervolume(pts, ref) if len(front) and np.isfinite(ref).all() else math.nan,
        "reference": reference,
    }


def front_plot(
    pool: list[Row],
    columns: Mapping[str, str],
    modes: Sequence[str],
    title: str,
    limits: Mapping[str, float],
    group: str | None = None,
) -> bytes | None:
    """The first objective against the second, every compared trial a dot (coloured by ``group``, a branch's
    column such as the model family, when the space has one), the front ringed and joined as a step line (the best
    first objective reachable at each value of the second), the second's limit as a dashed line where it lies
    within the trials' range; PNG."""
    if not pool or len(columns) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ._figures import png

    (y_name, y_col), (x_name, x_col) = list(columns.items())[:2]
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    labels = list(dict.fromkeys(str(r.get(group, "")) for r in pool)) if group else [""]
    for i, label in enumerate(labels):
        pts = [r for r in pool if not group or str(r.get(group, "")) == label]
        ax.scatter(
            [float(r[x_col]) for r in pts],
            [float(r[y_col]) for r in pts],
            color=f"C{i + 1}" if group else "0.6",
            s=20,
            label=f"{group}={label}" if group else "trials",
        )
    front = sorted((r for r in pool if r.get("pareto") == 1), key=lambda r: float(r[x_col]))
    xs, ys = [float(r[x_col]) for r in front], [float(r[y_col]) for r in front]
    ax.scatter(xs, ys, s=90, facecolors="none", edgecolors="C0", label=f"front ({len(front)})")
    ax.step(xs, ys, where="post" if modes[1] == "min" else "pre", color="C0", alpha=0.6)
    seen = [float(r[x_col]) for r in pool]
    if x_name in limits and float(limits[x_name]) <= 1.5 * max(seen):
        ax.axvline(float(limits[x_name]), ls="--", color="C3", lw=1, label=f"{x_name} limit")
    ax.set_xlabel(f"{x_name} ({'lower' if modes[1] == 'min' else 'higher'} is better)")
    ax.set_ylabel(f"{y_name} ({'lower' if modes[0] == 'min' else 'higher'} is better)")
    _log_if_wide(ax, seen)
    ax.set_title(f"{title}: {len(pool)} trials")
    ax.legend(loc="best", fontsize=8)
    data = png(fig)
    plt.close(fig)
    return data


def write_front(
    out: Any,
    exp: Mapping[str, Any],
    rows: list[Row],
    pool: list[Row],
    columns: Mapping[str, str],
    group: str | None = None,
) -> dict[str, Any]:
    """Rank ``rows`` on the front (``pareto``) among ``pool`` (those compared at one fidelity) with every objective
    scored; write ``pareto.png`` beside trials.csv (``group``: the column its dots are coloured by); return
    study.json's ``pareto`` (``summary``)."""
    from ..store._atomic import write_atomic
    from ..store._paths import PARETO_FILE

    modes = list(exp["objectives"].values())
    scored = [r for r in pool if all(_finite(r.get(c)) for c in columns.values())]
    add_front(rows, scored, columns, modes)
    limits = exp.get("constraints") or {}
    png = front_plot(scored, columns, modes, str(exp["name"]), limits, group)
    if png is not None:
        write_atomic(out / PARETO_FILE, png)
    else:  # a resumed study: no plot of an earlier state
        (out / PARETO_FILE).unlink(missing_ok=True)
    return summary(scored, columns, modes, limits)


def front_line(front: Mapping[str, Any]) -> str:
    """The console's line on the front."""
    ref = ", ".join(f"{m}={v:g}" for m, v in front["reference"].items())
    return (
        f"pareto front ({' vs '.join(front['objectives'])}): {len(front['front'])} of {front['compared']} compared "
        f"trials; hypervolume {front['hypervolume']:.4g} (reference {ref})"
    )


def _log_if_wide(ax: Any, xs: Sequence[float]) -> None:
    """A log x axis where the values span more than two orders of magnitude (parameters, FLOPs)."""
    if xs and min(xs) > 0 and max(xs) / min(xs) > 100:
        ax.set_xscale("log")


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def front_points(
    rows: list[Row], columns: Mapping[str, str], metric: str, configs: Mapping[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """study.json's ``pareto.points``: each ranked trial's front rank, objective values and configuration, from
    which ``tune-run --pick`` exports any of them."""
    keep = dict.fromkeys(("trial_id", "pareto", "epochs", "best_epoch", f"final_{metric}", f"best_{metric}"))
    keep.update(dict.fromkeys(columns.values()))
    return [
        {**{k: r[k] for k in keep}, "config": configs.get(r["trial_id"], {})}
        for r in rows
        if isinstance(r.get("pareto"), int)
    ]


def study_front(folder: Any) -> dict[str, Any] | None:
    """A multi-objective study's front as study.json records it (``pareto``: objectives, columns, points), with
    the study's name; None for a folder without one."""
    from pathlib import Path

    from ..spec._files import read_json

    path = Path(folder) / "study.json"
    if not path.is_file():
        return None
    record = read_json(path, "study file")
    front = record.get("pareto")
    if not isinstance(front, dict) or not front.get("points") or not front.get("columns"):
        return None
    name = ((record.get("spec") or {}).get("experiment") or {}).get("name") or Path(folder).name
    return {**front, "study": str(name)}


def common_reference(fronts: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """One reference point for several studies' hypervolumes (their first study's objectives): each objective's
    worst compared value over all of them (0 for an accuracy-like metric in [0, 1]), so the numbers compare."""
    goals: dict[str, str] = dict(fronts[0]["objectives"])
    return {
        m: reference_value(
            mode, [float(p[f["columns"][m]]) for f in fronts for p in f["points"] if _finite(p.get(f["columns"][m]))]
        )
        for m, mode in goals.items()
    }


def fronts_table(fronts: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, str]], dict[str, float]]:
    """tune-compare's rows, one per study with the same objectives as the first: trials compared, front size,
    hypervolume at the common reference point (``common_reference``), and the front's points."""
    goals = dict(fronts[0]["objectives"])
    same = [f for f in fronts if dict(f["objectives"]) == goals]
    ref = common_reference(same)
    ref_min = minimised([[ref[m] for m in goals]], list(goals.values()))[0]
    rows = []
    for f in same:
        front = [p for p in f["points"] if p.get("pareto") == 1]
        pts = minimised([[float(p[f["columns"][m]]) for m in goals] for p in front], list(goals.values()))
        hv = hypervolume(pts, ref_min) if len(front) and np.isfinite(ref_min).all() else math.nan
        shown = sorted(front, key=lambda p: float(p[f["columns"][list(goals)[1]]]))
        rows.append(
            {
                "study": f["study"],
                "compared": str(len(f["points"])),
                "front": str(len(front)),
                "hypervolume": f"{hv:.4g}",
                "front points (" + ", ".join(goals) + ")": "; ".join(
                    "(" + ", ".join(f"{float(p[f['columns'][m]]):.4g}" for m in goals) + ")" for p in shown
                ),
            }
        )
    return rows, ref


def fronts_plot(fronts: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Several studies' fronts on one plot (first objective against the second, one colour per study, its other
    compared trials faint): which family wins at which cost."""
    goals = dict(fronts[0]["objectives"])
    same = [f for f in fronts if dict(f["objectives"]) == goals]
    if len(goals) < 2 or not same:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ._figures import png

    (y_name, y_mode), (x_name, x_mode) = list(goals.items())[:2]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, f in enumerate(same):
        xc, yc = f["columns"][x_name], f["columns"][y_name]
        pts = [p for p in f["points"] if _finite(p.get(xc)) and _finite(p.get(yc))]
        rest = [p for p in pts if p.get("pareto") != 1]
        ax.scatter([float(p[xc]) for p in rest], [float(p[yc]) for p in rest], color=f"C{i}", alpha=0.25, s=14)
        front = sorted((p for p in pts if p.get("pareto") == 1), key=lambda p: float(p[xc]))
        xs, ys = [float(p[xc]) for p in front], [float(p[yc]) for p in front]
        ax.plot(xs, ys, "o", color=f"C{i}", label=f"{f['study']} ({len(front)} on its front)")
        ax.step(xs, ys, where="post" if x_mode == "min" else "pre", color=f"C{i}", alpha=0.7)
    ax.set_xlabel(f"{x_name} ({'lower' if x_mode == 'min' else 'higher'} is better)")
    ax.set_ylabel(f"{y_name} ({'lower' if y_mode == 'min' else 'higher'} is better)")
    _log_if_wide(
        ax, [float(p[f["columns"][x_name]]) for f in same for p in f["points"] if _finite(p.get(f["columns"][x_name]))]
    )
    ax.set_title("Pareto fronts")
    ax.legend(loc="best", fontsize=8)
    data = png(fig)
    plt.close(fig)
    return data
