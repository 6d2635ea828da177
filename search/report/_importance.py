"""Which settings mattered: hyperparameter importance over a study's trials and a parallel-coordinates plot.

Any trials table works (``trials.csv``, whatever searcher made it): each scored trial becomes a finished trial of
an in-memory Optuna study with the spec's distributions, and Optuna's fANOVA evaluator (a random forest over the
settings, its variance split by setting; Hutter et al., 2014) says what share of the metric's variance each
setting explains. Trials are compared at one fidelity (``at_one_fidelity``): their values at the latest epoch
that enough of them reached — not each at its own best, which would mix epoch-1 values of trials a scheduler
stopped with full-length ones and measure how long trials ran. Keys set in some trials only (inside a branch of
a conditional space) are left out and named.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

from ..spec._distributions import option_parts
from ..spec._space import branches, flat_space, searched_keys
from ..store._export import SCORED
from ..store._paths import IMPORTANCE_FILE, PARALLEL_FILE

MIN_TRIALS = 5  # fewer scored trials cannot split a metric's variance between settings
EVALUATOR_SEED = 0  # fANOVA's forest is random: a fixed seed makes the report repeatable
_NUMERIC = {
    "uniform": False,
    "quniform": False,
    "loguniform": True,
    "qloguniform": True,
    "randint": False,
    "qrandint": False,
}  # distribution -> log scale


@dataclass
class Importance:
    metric: str
    trials: int  # scored trials the shares come from
    shares: dict[str, float] = field(default_factory=dict)  # setting -> share of variance, summing to 1
    left_out: list[str] = field(default_factory=list)  # set in some trials only
    reason: str = ""  # why there are no shares, when there are none
    fidelity: str = ""  # which value of each trial the shares are of
    study: Any = None  # the Optuna study, for the plot

    def as_dict(self) -> dict[str, Any]:
        return {
            "evaluator": "fanova",
            "metric": self.metric,
            "trials": self.trials,
            "shares": self.shares,
            "left_out": self.left_out,
            "reason": self.reason,
            "fidelity": self.fidelity,
        }

    def line(self) -> str:
        """One line for the console and the report."""
        if not self.shares:
            return f"settings that mattered: {self.reason}"
        top = ", ".join(f"{k} {v:.0%}" for k, v in self.shares.items())
        return f"settings that mattered ({self.metric} variance explained, fANOVA over {self.trials} trials): {top} ({self.fidelity})"


def _declared(space: dict[str, Any]) -> dict[str, dict[str, list[Any]]]:
    """Each searched key's distribution: a plain key's own; a branch label as a choice of its options' names; a
    key sampled inside options, the first option's (numeric ranges widened to cover every option's)."""
    out: dict[str, dict[str, list[Any]]] = dict(flat_space(space))
    for key, (_, options) in branches(space).items():
        out[key] = {"choice": [str(o.get("name", i)) for i, o in enumerate(options)]}
        for opt in options:
            _, dists = option_parts(opt)  # an option's constants follow from its label: not settings of their own
            for k, d in dists.items():
                ((kind, args),) = d.items()
                if k not in out:
                    out[k] = {kind: list(args)}
                elif kind in _NUMERIC and next(iter(out[k])) == kind:
                    lo, hi = out[k][kind][:2]
                    out[k] = {kind: [min(lo, args[0]), max(hi, args[1]), *args[2:]]}
    return out


def _present(v: Any) -> bool:
    return not (v is None or v == "" or (isinstance(v, float) and math.isnan(v)))


def _distribution(dist: dict[str, list[Any]], seen: list[Any]) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    ((kind, args),) = dist.items()
    if kind in _NUMERIC:
        values = [float(v) for v in seen]
        lo, hi = min(float(args[0]), *values), max(float(args[1]), *values)
        if kind in ("randint", "qrandint"):
            return IntDistribution(int(lo), int(hi))
        return FloatDistribution(lo, hi, log=_NUMERIC[kind])
    return CategoricalDistribution(sorted({str(v) for v in seen}))


def at_one_fidelity(rows: list[dict[str, Any]], metric: str) -> tuple[list[dict[str, Any]], str]:
    """The scored rows, each with ``value``: its metric at the latest epoch that at least half of them (and
    ``MIN_TRIALS``) reached, from ``<metric>_by_epoch``; the rows that reached it, and which epoch that is. A
    table without per-epoch values (written before they were recorded) gives each trial's best value, and says so."""
    scored = [r for r in rows if r.get("status") in SCORED]
    by_epoch = f"{metric}_by_epoch"
    if not scored or not all(isinstance(r.get(by_epoch), str) for r in scored):
        best = [{**r, "value": float(r[f"best_{metric}"])} for r in scored if _present(r.get(f"best_{metric}"))]
        return [r for r in best if math.isfinite(r["value"])], "each trial's best epoch (no per-epoch values)"
    curves = [[float(v) for v in str(r[by_epoch]).split()] for r in scored]
    need = max(MIN_TRIALS, math.ceil(len(scored) / 2))
    reached = [k for k in range(1, max(map(len, curves), default=0) + 1) if sum(len(c) >= k for c in curves) >= need]
    k = reached[-1] if reached else max(map(len, curves), default=1)
    at_k = [{**r, "value": c[k - 1]} for r, c in zip(scored, curves, strict=True) if len(c) >= k]
    at_k = [r for r in at_k if math.isfinite(r["value"])]
    return at_k, f"at epoch {k}, reached by {len(at_k)} of {len(scored)} scored trials"


def importance(rows: list[dict[str, Any]], space: dict[str, Any], metric: str, mode: str) -> Importance:
    """fANOVA shares of the metric at one fidelity (``at_one_fidelity``) over the scored rows of a trials table
    (dicts as trials.csv reads)."""
    import optuna

    scored, fidelity = at_one_fidelity(rows, metric)
    imp = Importance(metric, len(scored), fidelity=fidelity)
    declared = _declared(space)
    keys = [k for k in searched_keys(space) if k in declared]
    imp.left_out = [k for k in keys if not all(_present(r.get(k)) for r in scored)]
    keys = [k for k in keys if k not in imp.left_out]
    if not keys:
        imp.reason = "the study searched no setting that every trial has"
        return imp
    if len(scored) < MIN_TRIALS:
        imp.reason = f"{len(scored)} scored trial(s); at least {MIN_TRIALS} are needed to split the variance"
        return imp
    dists = {k: _distribution(declared[k], [r[k] for r in scored]) for k in keys}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for r in scored:
        params = {
            k: (
                str(r[k])
                if isinstance(d, optuna.distributions.CategoricalDistribution)
                else int(float(r[k]))
                if isinstance(d, optuna.distributions.IntDistribution)
                else float(r[k])
            )
            for k, d in dists.items()
        }
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=r["value"]))
    imp.study = study
    varied = [k for k in keys if len({str(r[k]) for r in scored}) > 1]
    if not varied:
        imp.reason = "every scored trial had the same settings"
        return imp
    if len({r["value"] for r in scored}) == 1:
        imp.reason = f"every scored trial reached the same {metric}"
        return imp
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning for the evaluator
        shares = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=EVALUATOR_SEED), params=varied
        )
    imp.shares = {k: float(v) for k, v in shares.items()}
    return imp


def safe_importance(rows: list[dict[str, Any]], space: dict[str, Any], metric: str, mode: str) -> Importance:
    """``importance``, or when a trials table it was not made for breaks it, no shares with the reason: an
    analysis of the results must never cost a study or a report its results."""
    try:
        return importance(rows, space, metric, mode)
    except Exception as exc:  # noqa: BLE001
        return Importance(metric, 0, reason=f"not computed ({type(exc).__name__}: {exc})")


def safe_plot(imp: Importance, title: str) -> bytes | None:
    try:
        return parallel_plot(imp, title)
    except Exception:  # noqa: BLE001  (a plot is not worth a report)
        return None


def parallel_plot(imp: Importance, title: str) -> bytes | None:
    """Optuna's parallel-coordinates plot of the scored trials (one line per trial, coloured by the metric),
    the settings ordered by importance; None without trials to draw."""
    if imp.study is None or not imp.study.trials:
        return None
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_parallel_coordinate

    params = list(imp.shares) or list(imp.study.trials[0].params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning
        ax = plot_parallel_coordinate(imp.study, params=params, target_name=f"{imp.metric}, {imp.fidelity}")
    ax.set_title(f"{title}: {len(imp.study.trials)} trials")
    fig = ax.get_figure(root=True)
    assert fig is not None
    fig.set_size_inches(max(6.0, 1.6 * (len(params) + 1)), 4.0)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def write_importance(out: Any, spec: dict[str, Any], rows: list[dict[str, Any]]) -> Importance | None:
    """``importance.json`` (and, with shares, ``parallel_coordinates.png``) in the study folder ``out``, beside
    trials.csv; None for a study that searched nothing."""
    import json

    from ..store._atomic import write_atomic

    if not spec.get("space"):
        return None
    exp = spec["experiment"]
    imp = safe_importance(rows, spec["space"], exp["metric"], exp["mode"])
    png = safe_plot(imp, exp["name"]) if imp.shares else None
    write_atomic(out / IMPORTANCE_FILE, json.dumps(imp.as_dict(), indent=2))
    if png is not None:
        write_atomic(out / PARALLEL_FILE, png)
    else:  # a resumed or re-synced study: no plot of an earlier state
        (out / PARALLEL_FILE).unlink(missing_ok=True)
    return imp
