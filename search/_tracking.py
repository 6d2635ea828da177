"""MLflow: one parent run per study, one child run per trial (params, per-epoch metrics, status, tags).

Child runs are found again by their ``trial_id`` tag, so a resumed study continues the runs it
already has instead of adding duplicates.
"""

from __future__ import annotations

import math
import time
from typing import Any

from ray.tune import Callback

from ._export import trial_status
from ._space import branches, flat_config

# Result keys that are Ray bookkeeping, not metrics worth a chart.
_SKIP = {"training_iteration", "timestamp", "time_this_iter_s", "time_total_s", "pid", "time_since_restore",
         "iterations_since_restore", "done", "checkpoint_dir_name", "should_checkpoint", "config", "date",
         "hostname", "node_ip", "trial_id", "experiment_tag"}


def client_for(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(client: Any, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    return exp.experiment_id if exp else client.create_experiment(name)


def start_parent(uri: str, experiment: str, run_name: str, tags: dict[str, str],
                 params: dict[str, Any], run_id: str | None = None) -> str:
    """Create the study's parent run, or reopen ``run_id`` on resume."""
    c = client_for(uri)
    if run_id:
        c.update_run(run_id, status="RUNNING")
        return run_id
    run = c.create_run(experiment_id(c, experiment), run_name=run_name, tags=tags)
    log_params(c, run.info.run_id, params)
    return run.info.run_id


def log_params(c: Any, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        c.log_batch(run_id, params=items[i:i + 100])


def numeric_metrics(result: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in result.items()
            if k not in _SKIP and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class MlflowTrials(Callback):
    """Ray Tune callback (runs in the driver) mirroring every trial into an MLflow child run."""

    def __init__(self, uri: str, experiment: str, parent_run_id: str, tags: dict[str, str], max_epochs: int,
                 space: dict[str, Any] | None = None) -> None:
        self.uri, self.experiment, self.parent, self.tags = uri, experiment, parent_run_id, tags
        self.space = space or {}  # conditional spaces: log the trial's flat {dotted key: value} view
        self.max_epochs = max_epochs
        self._runs: dict[str, str] = {}
        self._devices: set[str] = set()  # runs whose device tag is set (once, not every epoch)
        self._client: Any = None
        self._exp_id: str | None = None

    def __getstate__(self) -> dict[str, Any]:  # Ray pickles callbacks with the experiment state
        return {**self.__dict__, "_client": None}

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = client_for(self.uri)
        return self._client

    def run_id(self, trial: Any) -> str:
        tid = trial.trial_id
        if tid in self._runs:
            return self._runs[tid]
        c = self.client
        if self._exp_id is None:
            self._exp_id = experiment_id(c, self.experiment)
        exp_id = self._exp_id
        found = c.search_runs([exp_id], filter_string=f"tags.trial_id = '{tid}' and "
                                                      f"tags.`mlflow.parentRunId` = '{self.parent}'")
        if found:
            rid = found[0].info.run_id
            c.update_run(rid, status="RUNNING")
        else:
            tags = {**self.tags, "mlflow.parentRunId": self.parent, "trial_id": tid, "status": "running"}
            rid = c.create_run(exp_id, run_name=str(trial), tags=tags).info.run_id
            config = dict(trial.config)
            log_params(c, rid, self.flat(config))
        self._runs[tid] = rid
        return rid

    def flat(self, config: dict[str, Any]) -> dict[str, Any]:
        """The trial's {dotted key: value} view (what trials.csv reads too)."""
        return flat_config(config, self.space) if branches(self.space) else dict(config)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.run_id(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        from mlflow.entities import Metric

        rid = self.run_id(trial)
        if result.get("infeasible"):
            self.client.set_tag(rid, "status", "infeasible")
            self.client.set_tag(rid, "reason", str(result.get("reason", ""))[:5000])
            return
        if isinstance(result.get("device"), str) and rid not in self._devices:
            self.client.set_tag(rid, "device", result["device"])
            self._devices.add(rid)
        step, now = int(result.get("epoch", result.get("training_iteration", 0))), int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in numeric_metrics(result).items()]
        if metrics:
            self.client.log_batch(rid, metrics=metrics)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        from mlflow.entities import RunTag

        rid = self.run_id(trial)
        last = trial.last_result or {}
        tags = [RunTag("epochs", str(last.get("epoch", 0)))]
        if not last.get("infeasible"):  # its status and reason are tagged with the result
            tags.append(RunTag("status", trial_status(last, "", self.flat(trial.config), self.max_epochs)))
        self.client.log_batch(rid, tags=tags)
        self.client.set_terminated(rid, status="FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        rid = self.run_id(trial)
        self.client.set_tag(rid, "status", "error")
        self.client.set_tag(rid, "reason", error_text(trial)[:5000])
        self.client.set_terminated(rid, status="FAILED")


def error_text(trial: Any) -> str:
    """The last line of a trial's error (the exception), or ''."""
    path = getattr(trial, "error_file", None) or ""
    try:
        with open(path) as f:
            lines = [ln.strip() for ln in f.read().strip().splitlines() if ln.strip()]
        return lines[-1] if lines else ""
    except OSError:
        return str(getattr(trial, "error_msg", "") or "")
