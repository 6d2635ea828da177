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
        if isinstance(value, float) and not math.isfinite(value):
            worst = -FINITE_WORST if getattr(self, "_mode", "max") == "max" else FINITE_WORST
            return {**result, metric: worst}
        return result


class ASHAScheduler(_FeasibleOnly, sch.AsyncHyperBandScheduler):
    pass


class HyperBandScheduler(_FeasibleOnly, sch.HyperBandScheduler):
    pass


class HyperBandForBOHB(_FeasibleOnly, sch.HyperBandForBOHB):
    pass


class MedianStoppingRule(_FeasibleOnly, sch.MedianStoppingRule):
    pass


class PopulationBasedTraining(_FeasibleOnly, sch.PopulationBasedTraining):
    pass
