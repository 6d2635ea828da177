"""The orchestration sections' schema (experiment, search, scheduler, resources, tracking): each key with its
type, default and allowed values; the trial side supplies data, model, train and final."""

from __future__ import annotations

import re
from typing import Any

from ._budget import DEFAULT_SPLIT

ALGORITHMS = ("random", "grid", "optuna", "bohb")
SCHEDULERS = ("fifo", "asha", "hyperband", "median", "pbt")
FIDELITIES = ("epochs", "data")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# key -> (type, default[, allowed values]); the time unit of every scheduler is the epoch.
SCHEMA: dict[str, dict[str, tuple[Any, ...]]] = {
    "experiment": {
        "name": (str, None),  # default: the spec file's stem
        "metric": (str, "val_acc"),  # one of the trial side's METRICS
        "mode": (str, None, ("max", "min")),  # default: the metric's better direction
        "output_dir": (str, "runs"),
        "description": (str, ""),
    },
    "search": {
        "algorithm": (str, "random", ALGORITHMS),
        "num_samples": (int, None),  # samples (random/optuna/bohb), or repeats of the grid; None = sized
        # from search.budget when there is one, else 1
        "max_concurrent": (int, 0),  # 0 = as many as the resources allow
        "seed": (int, 0),
        "epochs": (int | str | None, None),  # the search's trials: null = train.epochs; auto = sized from the budget
        "recipe_first": (bool, False),  # the spec's own values of the searched keys are the first trial
        # Keep trial processes (and their imports) alive between trials: a new process costs about 4 s of a
        # 2-core CPU per trial (6 one-epoch trials: 28 s without, 7 s with). The reset that reuses one waits for
        # the previous trial to end (trainables/ray_adapter.py, RESET_TIMEOUT_S).
        "reuse_actors": (bool, True),
        "budget": (str, None),  # 45s | 30m | 2h | 1.5gpu-h | 400epochs: search + final training (_budget.py)
        "budget_split": (float, DEFAULT_SPLIT),  # the search's share of the budget; final training gets the rest
        # Seconds with trials paused and none running before the study ends (exit 1; --resume goes on): a
        # scheduler that never resumes its paused trials would otherwise keep it waiting for ever.
        "stall_timeout_s": (float, 600.0),
    },
    "scheduler": {
        "name": (str, "fifo", SCHEDULERS),
        "max_t": (int, None),  # epochs; default train.epochs
        "grace_period": (int, 1),  # asha, median: epochs before a trial may be stopped
        "reduction_factor": (float, 3.0),  # asha, hyperband
        "brackets": (int, 1),  # asha
        "min_samples_required": (int, 3),  # median
        "perturbation_interval": (int, 2),  # pbt, epochs
        "quantile_fraction": (float, 0.25),  # pbt
        "resample_probability": (float, 0.25),  # pbt
        "fidelity": (str, "epochs", FIDELITIES),  # asha, hyperband: what rungs grow (data: also the training set)
    },
    "resources": {
        "cpu": (float, 1.0),
        "gpu": (float, 0.0),  # fractions pack several trials on one GPU
        "max_failures": (int, 3),  # retries of a trial whose process or node died, from its last checkpoint
    },
    "tracking": {
        "mlflow_uri": (str, "sqlite:///mlflow.db"),  # relative to the working directory
        "mlflow_experiment": (str, None),  # default: experiment.name
        "parent_run_id": (str, None),  # nest runs under this MLflow run (best.yaml: the study's run)
        "enabled": (bool, True),
    },
}
BACKEND_SECTIONS = ("data", "model", "train")
TOP_LEVEL = ("experiment", "data", "model", "train", "space", "search", "scheduler", "resources", "tracking", "final")


# --------------------------------------------------------------------------- paths and overrides
