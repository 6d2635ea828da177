"""The orchestration sections' schema (experiment, search, scheduler, resources, tracking): each key with its
type, default and allowed values; the trial side supplies data, model, train and final."""

from __future__ import annotations

import re
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from ._budget import DEFAULT_SPLIT

Algorithm = Literal["random", "grid", "optuna", "bohb"]
SchedulerName = Literal["fifo", "asha", "hyperband", "median", "pbt"]
Fidelity = Literal["epochs", "data"]
ALGORITHMS, SCHEDULERS, FIDELITIES = get_args(Algorithm), get_args(SchedulerName), get_args(Fidelity)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class _Section(BaseModel):
    """A spec section: its keys, each with type, default, range and meaning (the JSON Schema's source too)."""

    model_config = ConfigDict(extra="forbid")


class Experiment(_Section):
    """What a study is called, what it optimises and where its results go."""

    name: str | None = Field(None, description="the study's name; default: the spec file's stem")
    metric: str = Field("val_acc", description="what trials are ranked by: a metric every epoch reports")
    mode: Literal["max", "min"] | None = Field(None, description="max or min; default: the metric's better direction")
    output_dir: str = Field("runs", description="where study folders go: a path, or s3://bucket/prefix, gs://...")
    description: str = Field("", description="free text, recorded with the study")


class Search(_Section):
    """How configurations are drawn, how many and how long, and the compute budget."""

    algorithm: Algorithm = Field("random", description="the searcher: random, grid, optuna (TPE), bohb")
    num_samples: int | None = Field(
        None,
        ge=1,
        description="samples (random/optuna/bohb) or repeats of the grid; null: sized from "
        "search.budget when there is one, else 1",
    )
    max_concurrent: int = Field(0, ge=0, description="trials at once; 0: as many as the resources allow")
    seed: int = Field(0, description="the searcher's seed")
    epochs: int | Literal["auto"] | None = Field(
        None, description="the search's trials' epochs: null = train.epochs; auto = sized from search.budget"
    )
    recipe_first: bool = Field(False, description="the spec's own values of the searched keys are the first trial")
    # A new process costs about 4 s of a 2-core CPU per trial (6 one-epoch trials: 28 s without, 7 s with). The
    # reset that reuses one waits for the previous trial to end (trainables/ray_adapter.py, RESET_TIMEOUT_S).
    reuse_actors: bool = Field(True, description="keep trial processes (and their imports) alive between trials")
    budget: str | None = Field(
        None, description="search + final training: 45s | 30m | 2h | 1.5gpu-h | 400epochs (spaces/README.md)"
    )
    budget_split: float = Field(
        DEFAULT_SPLIT, gt=0, lt=1, description="the search's share of the budget; final training gets the rest"
    )
    # A scheduler that never resumes its paused trials would otherwise keep the study waiting for ever.
    stall_timeout_s: float = Field(
        600.0,
        gt=0,
        description="seconds with trials paused and none running before the study ends (exit 1; --resume goes on)",
    )


class Scheduler(_Section):
    """Which trials stop early or change while they train; its time unit is the epoch."""

    name: SchedulerName = Field("fifo", description="fifo (none), asha, hyperband, median or pbt")
    max_t: int | None = Field(None, description="epochs of the longest trial; default: train.epochs")
    grace_period: int = Field(1, description="asha, median: epochs before a trial may be stopped")
    reduction_factor: float = Field(3.0, gt=1, description="asha, hyperband: 1 in this many trials goes on at a rung")
    brackets: int = Field(1, ge=1, description="asha: brackets of rungs")
    min_samples_required: int = Field(3, ge=1, description="median: trials needed before one is stopped")
    perturbation_interval: int = Field(2, ge=1, description="pbt: epochs between perturbations")
    quantile_fraction: float = Field(0.25, gt=0, le=0.5, description="pbt: the bottom share copies the top share")
    resample_probability: float = Field(
        0.25, ge=0, le=1, description="pbt: chance a perturbed value is drawn anew from the space"
    )
    fidelity: Fidelity = Field(
        "epochs", description="asha, hyperband: what rungs grow, epochs or (data) also the share of the training set"
    )


class Resources(_Section):
    """What one trial holds."""

    cpu: float = Field(1.0, gt=0, description="CPUs per trial")
    gpu: float = Field(
        0.0,
        ge=0,
        description="GPUs per trial: a fraction in [0, 1] packs trials on one GPU, or a whole number",
        json_schema_extra={"anyOf": [{"maximum": 1}, {"multipleOf": 1}]},  # the rule check_orchestration states
    )
    max_failures: int = Field(
        3, ge=0, description="retries of a trial whose process or node died, from its last checkpoint"
    )


class Tracking(_Section):
    """Where MLflow records the study."""

    mlflow_uri: str = Field(
        "sqlite:///mlflow.db", description="MLflow tracking URI; a relative path: the working directory"
    )
    mlflow_experiment: str | None = Field(None, description="MLflow experiment; default: experiment.name")
    parent_run_id: str | None = Field(None, description="nest the study's runs under this MLflow run")
    enabled: bool = Field(True, description="track in MLflow at all")


# The orchestration's sections by name.
SCHEMA: dict[str, type[BaseModel]] = {
    "experiment": Experiment,
    "search": Search,
    "scheduler": Scheduler,
    "resources": Resources,
    "tracking": Tracking,
}
BACKEND_SECTIONS = ("data", "model", "train")
TOP_LEVEL = ("experiment", "data", "model", "train", "space", "search", "scheduler", "resources", "tracking", "final")


# --------------------------------------------------------------------------- paths and overrides
