"""MLflow: one parent run per study, one child run per trial (params, per-epoch metrics, status, tags).

Child runs are found again by their ``trial_id`` tag, so a resumed study continues the runs it
already has instead of adding duplicates.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray.tune import Callback

from ..spec._space import branches, flat_config
from ._export import error_reason, full_epochs, status_reason, trial_status
from ._mlflow_store import SQLITE, new_sqlite_store
from ._paths import STUDY_ARTIFACTS, artifact_location, tracking_uri

# Result keys that are Ray bookkeeping, not metrics worth a chart.
_SKIP = {
    "training_iteration",
    "timestamp",
    "time_this_iter_s",
    "time_total_s",
    "pid",
    "time_since_restore",
    "iterations_since_restore",
    "done",
    "checkpoint_dir_name",
    "should_checkpoint",
    "config",
    "date",
    "hostname",
    "node_ip",
    "trial_id",
    "experiment_tag",
    "infeasible",
    "diverged",
    "oom",
    "error",
}  # the status tag says them


def check_store(uri: str, timeout: float = 5.0) -> str | None:
    """Why the tracking store at ``uri`` cannot be used (None when it can), found within ``timeout``
    seconds: MLflow's own client retries an unreachable server for minutes before it gives up."""
    import urllib.error
    import urllib.request
    from pathlib import Path

    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
                return None
        except urllib.error.HTTPError:
            return None  # it answered: a server is there (auth and paths are MLflow's business)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return f"{uri} cannot be reached ({reason}); start the server or fix the URI"
    if uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///") :]).parent
        if not folder.is_dir():
            return f"{uri}: the folder {str(folder)!r} does not exist"
    return None


def client_for(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    if uri.startswith(("http://", "https://")):
        # A server that went away fails a write in seconds, not after minutes of the client's retries: a
        # study goes on without it, and what was not written is filled in later (sync_study).
        import os

        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")

    uri = tracking_uri(uri)
    if uri.startswith(SQLITE):
        new_sqlite_store(Path(uri[len(SQLITE) :]))
    return MlflowClient(tracking_uri=uri)


def log_budget(uri: str, run_id: str, cb: dict[str, Any], planned: bool) -> None:
    """A study's compute budget (``_budget``'s record): planned figures as the study run's params (once), spent
    ones as its metrics."""
    c = client_for(uri)
    if planned:
        for k, v in cb["planned"].items():
            c.log_param(run_id, f"budget.planned.{k}", v)
        for k, v in cb["planned_seconds"].items():
            c.log_param(run_id, f"budget.planned_seconds.{k}", round(v, 1))
        for k in ("unit", "num_samples", "final_epochs"):
            if k in cb:
                c.log_param(run_id, f"budget.{k}", cb[k])
    for k, v in cb["spent"].items():
        c.log_metric(run_id, f"budget_spent_{k}", float(v))
    for k, v in cb["spent_seconds"].items():
        c.log_metric(run_id, f"budget_spent_seconds_{k}", float(v))


def flat_params(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec as MLflow params: dotted key paths to values (the space as one value)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and prefix != "space":
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = node

    walk("", {k: v for k, v in spec.items()})
    return out


def finish_parent(
    uri: str,
    parent: str,
    out: Path,
    best: dict[str, Any] | None,
    metric: str,
    rows: list[dict[str, Any]],
    interrupted: bool = False,
) -> None:
    """Close a study's MLflow run: its best value and trial, its trial count, its summary files."""
    c = client_for(uri)
    have = c.get_run(parent).data.metrics  # a repeated finish (--sync-mlflow) logs no value twice
    if best is not None and not math.isnan(float(best[f"best_{metric}"])):
        if have.get(f"best_{metric}") != float(best[f"best_{metric}"]):
            c.log_metric(parent, f"best_{metric}", float(best[f"best_{metric}"]))
        c.set_tag(parent, "best_trial_id", best["trial_id"])
    if have.get("trials") != len(rows):
        c.log_metric(parent, "trials", len(rows))
    for name in STUDY_ARTIFACTS:
        if (out / name).is_file():
            c.log_artifact(parent, str(out / name))
    c.set_terminated(parent, status="KILLED" if interrupted else "FINISHED")


# MLflow 3's UI opens an experiment on its GenAI pages unless this tag says it trains models (3.x up to
# about 3.10; later ones follow the workflowType of the URL, see ui_page).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def experiment_id(client: Any, name: str, uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name, artifact_location(uri, name), tags=dict([EXPERIMENT_KIND]))
    if EXPERIMENT_KIND[0] not in exp.tags:  # an experiment made before the tag (or by hand)
        client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
    return exp.experiment_id


def ui_page(uri: str, experiment: str) -> str:
    """The experiment's training-runs page in ``mlflow ui`` (MLflow 3.1x picks the page from the
    ``workflowType`` of the URL, or the GenAI / Model training switch, over the experiment's tag)."""
    return f"#/experiments/{experiment_id(client_for(uri), experiment, uri)}/runs?workflowType=machine_learning"


def log_dataset(c: Any, run_id: str, info: dict[str, Any] | None, context: str = "training") -> None:
    """The study's data set as the run's input: the UI's Dataset column (name, digest, images per split)."""
    if not info:
        return
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag

    local = info["local"]  # a folder on disk, else a built-in or downloaded set
    ds = Dataset(
        name=info["name"],
        digest=info["digest"],
        source_type="local" if local else "code",
        source=json.dumps({"uri": str(info["source"])} if local else {"tags": {"dataset": info["source"]}}),
        profile=json.dumps(
            {
                "num_rows": sum(info["counts"].values()),
                **info["counts"],
                "classes": len(info["classes"]),
                "image_shape": info["image_shape"],
            }
        ),
    )
    c.log_inputs(run_id, datasets=[DatasetInput(ds, tags=[InputTag("mlflow.data.context", context)])])


def start_parent(
    uri: str,
    experiment: str,
    run_name: str,
    tags: dict[str, str],
    params: dict[str, Any],
    run_id: str | None = None,
    dataset: dict[str, Any] | None = None,
) -> str:
    """Create the study's parent run, or reopen ``run_id`` on resume."""
    c = client_for(uri)
    if run_id:
        c.update_run(run_id, status="RUNNING")
        return run_id
    run = c.create_run(experiment_id(c, experiment, uri), run_name=run_name, tags=tags)
    log_params(c, run.info.run_id, params)
    log_dataset(c, run.info.run_id, dataset)
    return run.info.run_id


def run_params(base: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """A trial's (or seed's) params: the study's resolved spec with the run's own values, so every run
    of every study and model family has the same keys (model.name, train.lr, data.dataset, …)."""
    out = dict(base)
    if "model.name" in config and config["model.name"] != base.get("model.name"):
        out = {k: v for k, v in out.items() if not k.startswith("model.")}  # another family's arguments
    return {**out, **config}


def log_params(c: Any, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        c.log_batch(run_id, params=items[i : i + 100])


def numeric_metrics(result: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in result.items()
        if k not in _SKIP and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def metric_time_ms(result: dict[str, Any]) -> int:
    """When an epoch's metrics happened, in ms: the result's own timestamp, so a history filled in later by
    --sync-mlflow is ordered like one logged live (MLflow orders a history by time, then step)."""
    return int(float(result.get("timestamp") or time.time()) * 1000)


class MlflowTrials(Callback):
    """Ray Tune callback (runs in the driver) mirroring every trial into an MLflow child run."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        parent_run_id: str,
        tags: dict[str, str],
        max_epochs: int,
        space: dict[str, Any] | None = None,
        dataset: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        oom_reason: Callable[[dict[str, Any]], str] | None = None,
    ) -> None:
        self.uri, self.experiment, self.parent, self.tags = uri, experiment, parent_run_id, tags
        self.oom_reason = oom_reason  # a trial killed for host memory: its reason, by its flat config
        self.dataset = dataset  # logged as each trial run's input
        self.params = params or {}  # the study's flat spec, under each run's own values
        self.space = space or {}  # conditional spaces: log the trial's flat {dotted key: value} view
        self.max_epochs = max_epochs
        # MLflow writes that failed (the server went away mid-study): the first error and the trials whose
        # runs are incomplete. The study's end fills them in, or says how to (tune-run --sync-mlflow).
        self.down: str | None = None
        self.incomplete: set[str] = set()
        self._runs: dict[str, str] = {}
        self._steps: dict[str, dict[str, set[int]]] = {}  # reopened runs: metric -> the steps MLflow holds
        self._devices: set[str] = set()  # runs whose device tag is set (once, not every epoch)
        self._client: Any = None
        self._exp_id: str | None = None

    def __getstate__(self) -> dict[str, Any]:  # Ray pickles callbacks with the experiment state
        # A resumed study tries MLflow afresh (and fills in what is missing at its end), and finds each trial's
        # run again, as reopened: its trials continue from checkpoints and may repeat epochs the run holds.
        return {**self.__dict__, "_client": None, "down": None, "incomplete": set(), "_runs": {}, "_steps": {}}

    def _write(self, trial: Any, write: Callable[[], None]) -> None:
        """One event's MLflow writes. Once one fails, the rest of the study's are skipped instead of each
        waiting out the client's retries; the trials go on, and their runs are noted as incomplete."""
        if self.down is None:
            try:
                write()
                return
            except Exception as err:  # noqa: BLE001  (whatever the client raises: MLflow is not the study)
                first = (str(err).strip().splitlines() or [""])[0][:300]
                self.down = f"{time.strftime('%H:%M:%S')} ({type(err).__name__}: {first})"
        self.incomplete.add(trial.trial_id)

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
            self._exp_id = experiment_id(c, self.experiment, self.uri)
        exp_id = self._exp_id
        found = c.search_runs(
            [exp_id], filter_string=f"tags.trial_id = '{tid}' and tags.`mlflow.parentRunId` = '{self.parent}'"
        )
        if found:
            rid = found[0].info.run_id
            c.update_run(rid, status="RUNNING")
            self._steps[rid] = {}  # reopened (--resume, a retried trial): it may repeat epochs the run holds
        else:
            tags = {**self.tags, "mlflow.parentRunId": self.parent, "trial_id": tid, "status": "running"}
            rid = c.create_run(exp_id, run_name=str(trial), tags=tags).info.run_id
            config = dict(trial.config)
            log_params(c, rid, run_params(self.params, self.flat(config)))
            log_dataset(c, rid, self.dataset)
        self._runs[tid] = rid
        return rid

    def flat(self, config: dict[str, Any]) -> dict[str, Any]:
        """The trial's {dotted key: value} view (what trials.csv reads too)."""
        return flat_config(config, self.space) if branches(self.space) else dict(config)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write(trial, lambda: self._start(trial))

    def _start(self, trial: Any) -> None:
        self.run_id(trial)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A failed trial retried from its checkpoint (its node died) reruns the epochs after it, and an epoch
        reported just before the failure may be among them: from now on its run logs each step once. (A PBT
        exploit, which also restarts from a checkpoint, is a new lineage: its steps are all logged.)"""
        rid = self._runs.get(trial.trial_id)
        if rid is not None:
            self._steps.setdefault(rid, {})

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        self._write(trial, lambda: self._result(trial, result))

    def _result(self, trial: Any, result: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        rid = self.run_id(trial)
        if result.get("infeasible"):
            self.client.set_tag(rid, "status", "infeasible")
            self.client.set_tag(rid, "reason", str(result.get("reason", ""))[:5000])
            return
        if isinstance(result.get("device"), str) and rid not in self._devices:
            self.client.set_tag(rid, "device", result["device"])
            if result.get("gpu_ids"):  # the GPU(s) Ray pinned the trial to
                self.client.set_tag(rid, "gpu", str(result["gpu_ids"]))
            if isinstance(result.get("arithmetic"), str):  # bf16 or fp32, channels_last or not
                self.client.set_tag(rid, "arithmetic", result["arithmetic"])
            self._devices.add(rid)
        step, now = int(result.get("epoch", result.get("training_iteration", 0))), metric_time_ms(result)
        metrics = [Metric(k, v, now, step) for k, v in numeric_metrics(result).items()]
        if rid in self._steps:  # a continued trial reruns the epochs after its checkpoint: each step once
            metrics = [m for m in metrics if step not in self._logged(rid, m.key)]
        if metrics:
            self.client.log_batch(rid, metrics=metrics)
            for m in metrics if rid in self._steps else ():
                self._steps[rid][m.key].add(step)

    def _logged(self, rid: str, key: str) -> set[int]:
        """The steps of ``key`` a reopened run holds (read from MLflow once per key)."""
        have = self._steps[rid]
        if key not in have:
            have[key] = {m.step for m in self.client.get_metric_history(rid, key)}
        return have[key]

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write(trial, lambda: self._complete(trial))

    def _complete(self, trial: Any) -> None:
        from mlflow.entities import RunTag

        rid = self.run_id(trial)
        last = trial.last_result or {}
        tags = [RunTag("epochs", str(last.get("epoch", 0)))]
        status = "infeasible"
        if not last.get("infeasible"):  # its status and reason are tagged with the result
            status = trial_status(last, "", full_epochs(self.flat(trial.config), self.max_epochs))
            tags.append(RunTag("status", status))
            if status_reason(last, status):  # diverged, oom, a user error
                tags.append(RunTag("reason", status_reason(last, status)[:5000]))
        self.client.log_batch(rid, tags=tags)
        self.client.set_terminated(rid, status="FAILED" if status == "error" else "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write(trial, lambda: self._error(trial))

    def _error(self, trial: Any) -> None:
        rid = self.run_id(trial)
        text = error_text(trial)
        self.client.set_tag(rid, "status", trial_status({}, text or "failed", 0))
        self.client.set_tag(rid, "reason", error_reason(text, self.flat(dict(trial.config)), self.oom_reason)[:5000])
        self.client.set_terminated(rid, status="FAILED")


def error_text(trial: Any) -> str:
    """The whole text of a trial's error (the exception, or Ray's reason for killing it), or ''."""
    path = getattr(trial, "error_file", None) or ""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return str(getattr(trial, "error_msg", "") or "")
