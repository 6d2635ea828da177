"""Ray Tune's schedulers, blind to infeasible trials.

An infeasible trial (the model refuses its configuration) reports once, flagged ``infeasible``, with
the worst score (which keeps model-based searchers away from its region) and ends. Ray's schedulers
must not count it: ASHA's rung cutoff is ``np.nanpercentile``, which is nan once a rung holds two
-inf scores (so nothing more is stopped there), and Hyperband and PBT rank trials by sorting their
scores. These subclasses keep such a result out of the scheduler's statistics altogether.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from ray.tune import schedulers as sch
from ray.tune.schedulers import TrialScheduler

from ..report._pareto import crowding, front_ranks

INFEASIBLE = "infeasible"  # the result flag ray_adapter sets
# A diverged or out-of-memory trial scores the worst value, -inf or inf: it must count as bad, but
# ASHA's nanpercentile cutoff turns nan with two infinities in a rung. Schedulers see this instead.
FINITE_WORST = 1e300


class _FeasibleOnly:
    """Mixin: an infeasible trial's result reaches neither ``on_trial_result`` nor ``on_trial_complete``."""

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if result.get(INFEASIBLE):
            return TrialScheduler.CONTINUE  # the trial returns right after this one result
        return super().on_trial_result(tune_controller, trial, self._finite(result))  # type: ignore[misc]

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        if result.get(INFEASIBLE):
            self.on_trial_remove(tune_controller, trial)  # type: ignore[attr-defined]  # forget it (bracket, rungs)
            return
        super().on_trial_complete(tune_controller, trial, self._finite(result))  # type: ignore[misc]

    def _finite(self, result: dict[str, Any]) -> dict[str, Any]:
        """``result`` with a non-finite score replaced by a finite worst one (see FINITE_WORST)."""
        metric = getattr(self, "_metric", None)
        value = result.get(metric) if metric else None
        if metric and isinstance(value, float) and not math.isfinite(value):
            worst = -FINITE_WORST if getattr(self, "_mode", "max") == "max" else FINITE_WORST
            return {**result, metric: worst}
        return result


class ASHAScheduler(_FeasibleOnly, sch.AsyncHyperBandScheduler):
    pass


class HyperBandScheduler(_FeasibleOnly, sch.HyperBandScheduler):
    """Ray's Hyperband, with a trial that reaches ``max_t`` stopped at once instead of paused.

    Ray pauses the first trial of a bracket to reach ``max_t`` until its peers get there, and counts on the
    last peer's result to stop it. That result may never come as one: when a function trainable returns
    before Tune fetched its last report, Tune hands it to ``on_trial_complete``, and Ray then skips the
    finished bracket; or the paused trial is still saving when the bracket finishes, and only PAUSED trials
    are stopped. Either way the paused trial waits for ever, and so does the study (a CI hang of
    benchmarks/search_efficiency.py --quick, reproduced under load). At ``max_t`` a trial has nothing left
    to train and no later rung to be ranked for: stopping it is what Ray does once its peers arrive, and it
    reads as completed. (BOHB's variant resumes stuck brackets itself when nothing runs.)
    """

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if result.get(self._time_attr, 0) >= self._max_t_attr:
            bracket, _ = self._trial_info[trial]
            bracket.update_trial_stats(trial, result)
            return TrialScheduler.STOP  # Tune then calls on_trial_complete: the bracket lets it go
        return super().on_trial_result(tune_controller, trial, result)


class HyperBandForBOHB(_FeasibleOnly, sch.HyperBandForBOHB):
    pass


class MedianStoppingRule(_FeasibleOnly, sch.MedianStoppingRule):
    pass


class PopulationBasedTraining(_FeasibleOnly, sch.PopulationBasedTraining):
    pass


class _ParetoBracket:
    """An ASHA bracket whose rungs rank trials by non-dominated sorting of their objectives (MO-ASHA, Schmucker
    et al. 2021) instead of one metric's percentile: a trial reaching a rung goes on unless more than 1/rf of the
    trials recorded there lie on a better front (with one objective, ASHA's rule up to the percentile's
    interpolation), a tie within a front broken by crowding distance as NSGA-II breaks it: a trial in a crowded
    stretch of the front ranks after those that spread it. A small, fast model is then kept while no faster
    model is also more accurate. Its rungs are Ray's (``grace_period x rf^(k+s)`` below ``max_t``)."""

    def __init__(self, min_t: float, max_t: float, rf: float, s: int) -> None:
        self.rf = rf
        n = int(np.log(max_t / min_t) / np.log(rf) - s + 1)
        self._rungs: list[tuple[float, dict[str, Any]]] = [(min_t * rf ** (k + s), {}) for k in reversed(range(n))]

    def on_result(self, trial: Any, cur_iter: int, cur_rew: Any) -> str:
        for milestone, recorded in self._rungs:
            if cur_iter < milestone or trial.trial_id in recorded:
                continue
            action = TrialScheduler.CONTINUE
            if recorded and _ahead(np.array([*recorded.values(), cur_rew])) > len(recorded) / self.rf:
                action = TrialScheduler.STOP
            recorded[trial.trial_id] = cur_rew
            return action
        return TrialScheduler.CONTINUE

    def debug_str(self) -> str:
        return " | ".join(f"Iter {m:.3f}: {len(r)} trials" for m, r in self._rungs)


def _ahead(vectors: np.ndarray) -> int:
    """How many of the rung's recorded trials rank before the last one (``vectors``: larger is better, the new
    trial last): those on a better front, and those on its front that are less crowded (NSGA-II's order)."""
    ranks = np.array(front_ranks(-vectors))  # front_ranks minimises
    mine = ranks == ranks[-1]
    spread = crowding(vectors[mine])  # the new trial's is the last
    return int((ranks[:-1] < ranks[-1]).sum() + (spread[:-1] > spread[-1]).sum())


class ParetoASHAScheduler(ASHAScheduler):
    """ASHA over several objectives (``experiment.objectives``): each rung compares the trials' objective vectors
    by non-dominated sorting (``_ParetoBracket``); the cost objectives are known from the first report, the
    accuracy ones at the rung."""

    def __init__(self, objectives: dict[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._objectives = dict(objectives)
        c = {"grace_period": 1, "reduction_factor": 4, "brackets": 1, **kwargs}  # Ray's defaults
        brackets: list[Any] = [
            _ParetoBracket(c["grace_period"], c["max_t"], c["reduction_factor"], s) for s in range(c["brackets"])
        ]
        self._brackets = brackets  # Ray's brackets, replaced: the same rungs, ranked by non-dominated sorting

    def _vector(self, result: dict[str, Any]) -> Any:
        """The result's objectives, each signed so that larger is better; a non-finite one at a finite worst."""
        out = []
        for m, mode in self._objectives.items():
            v = result.get(m)
            v = (
                float(v)
                if isinstance(v, (int, float)) and math.isfinite(v)
                else -FINITE_WORST * (1 if mode == "max" else -1)
            )
            out.append(v if mode == "max" else -v)
        return np.array(out)

    def _reports_all(self, result: dict[str, Any]) -> bool:
        return self._time_attr in result and all(m in result for m in self._objectives)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if result.get(INFEASIBLE) or not self._reports_all(result):
            return TrialScheduler.CONTINUE
        if result[self._time_attr] >= self._max_t and self._stop_last_trials:
            self._num_stopped += 1
            return TrialScheduler.STOP
        action = self._trial_info[trial.trial_id].on_result(trial, result[self._time_attr], self._vector(result))
        self._num_stopped += action == TrialScheduler.STOP
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        if result.get(INFEASIBLE) or not self._reports_all(result):
            self.on_trial_remove(tune_controller, trial)
            return
        self._trial_info[trial.trial_id].on_result(trial, result[self._time_attr], self._vector(result))
        del self._trial_info[trial.trial_id]
