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

from ray.tune import schedulers as sch
from ray.tune.schedulers import TrialScheduler

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
