"""The orchestration sections' schema (experiment, search, scheduler, resources, tracking): each key with its
type, default and allowed values; the trial side supplies data, model, train and final."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ._budget import DEFAULT_SPLIT, MIN_GAIN, parse_budget
from ._objectives import PICK_RE, parse_conditions
from ._schema import NAME_RE, SpecError, allowed, did_you_mean, rule

Algorithm = Literal["random", "grid", "optuna", "nsga2", "bohb"]
SchedulerName = Literal["fifo", "asha", "hyperband", "median", "pbt"]
Fidelity = Literal["epochs", "data"]
ALGORITHMS, SCHEDULERS, FIDELITIES = get_args(Algorithm), get_args(SchedulerName), get_args(Fidelity)


class _Section(BaseModel):
    """A spec section: its keys, each with type, default, range and meaning (the JSON Schema's source too)."""

    model_config = ConfigDict(extra="forbid")


class Experiment(_Section):
    """What a study is called, what it optimises and where its results go."""

    name: str | None = Field(
        None,
        examples=["my-study"],
        description=(
            "the study's name: letters, digits, '.', '_' and '-'; results go to <output_dir>/<name>/; default: the "
            "spec file's stem"
        ),
        json_schema_extra={"pattern": NAME_RE.pattern},  # _name_is_a_folder below, for editors
    )
    metric: str | None = Field(
        None,
        description=(
            "what trials are ranked by, reported every epoch: val_acc | val_loss | train_acc | train_loss | "
            "val_f1_macro | val_mcc | val_balanced_acc (imbalanced classes) | val_auc (binary only) | train_seconds "
            "(training time so far, an objective beside accuracy) | gpu_hours (train_seconds times the trial's GPU "
            "share; 0 on CPU); null = val_acc, or the first of "
            "experiment.objectives"
        ),
    )
    mode: Literal["max", "min"] | None = Field(
        None, description="max | min; null = the metric's better direction (a loss is minimised; the other is refused)"
    )
    objectives: dict[str, str] | None = Field(
        None,
        examples=[{"val_acc": "max", "latency_ms": "min"}],
        description=(
            "two or more metrics searched together, each with its direction (max | min): the study finds the trials "
            "no other beats in all of them (a Pareto front, trials.csv's pareto column); the first is the study's "
            "metric. Besides the metrics above: params, flops (forward FLOPs per image), latency_ms (one image), "
            "measured once per trial before its first epoch, as final models measure them; null = one metric"
        ),
    )
    constraints: dict[str, float] | None = Field(
        None,
        examples=[{"params": 1.0e6, "latency_ms": 5}],
        description=(
            "hard upper limits on params, flops or latency_ms: a configuration over one is infeasible (with the "
            "reason) and trains nothing"
        ),
    )
    pick: str | None = Field(
        None,
        examples=["latency_ms<=5"],
        json_schema_extra={"pattern": PICK_RE},  # what _objectives.parse_conditions reads, for editors
        description=(
            "which trial best.yaml holds when there are several objectives: the best by the first objective among "
            "the trials that meet these conditions ('<metric> <op> <number>' joined by commas, op <=, <, >= or >); "
            "null = the best by the first objective"
        ),
    )
    output_dir: str = Field(
        "runs",
        description=(
            "where study folders go: a path, or a storage URI, s3://bucket/prefix or gs://bucket/prefix (README: "
            "remote storage)"
        ),
    )
    description: str = Field("", description="free text, recorded with the study")

    @field_validator("name")
    @classmethod
    def _name_is_a_folder(cls, name: str | None) -> str | None:
        if name is not None and not NAME_RE.match(name):  # null: the spec file's stem, checked once filled in
            raise rule("name", f"letters, digits, '.', '_' and '-' only, got {name!r}")
        return name

    @model_validator(mode="after")
    def _metric_a_trial_reports(self, info: ValidationInfo) -> Experiment:
        """The metric is one a trial reports (the trial side's ``{metric: better direction}``, passed as the
        validation context ``metrics``), and the mode agrees with its better direction: maximising a loss is
        always a mistake."""
        metrics: dict[str, str] | None = (info.context or {}).get("metrics")
        if metrics is None:  # the section alone: checked once the spec's trial side is known
            return self
        costs: dict[str, str] = (info.context or {}).get("costs") or {}
        if self.objectives is not None:
            self._check_objectives(metrics, costs)
        elif self.pick is not None:
            raise rule("pick", "chooses among several objectives: set experiment.objectives, or leave pick out")
        for m, limit in (self.constraints or {}).items():
            if m not in costs:
                raise rule("constraints", f"{m!r} is not a cost known before training; allowed: {allowed(costs)}")
            if not limit > 0:
                raise rule("constraints", f"{m} > 0 must hold for a limit, got {m}={limit}")
        metric = self.metric or "val_acc"
        if metric not in metrics and not (self.objectives and metric == next(iter(self.objectives))):
            raise rule(
                "metric",
                f"{metric!r} is not reported by trials; allowed: {allowed(metrics)}{did_you_mean(metric, metrics)}",
            )
        better = metrics.get(metric) or (self.objectives or {}).get(metric)
        if self.mode is not None and self.mode != better:
            raise rule(
                "mode",
                f"{metric} is better when {'higher' if better == 'max' else 'lower'}: "
                f"mode must be {better}, got {self.mode}",
            )
        return self

    def _check_objectives(self, metrics: dict[str, str], costs: dict[str, str]) -> None:
        """Two or more objectives a trial reports, each in its better direction; the metric, if given, the first;
        a pick on objectives."""
        goals = self.objectives or {}
        reported = {**metrics, **costs}
        if len(goals) < 2:
            raise rule("objectives", f"at least 2 objectives must be given, got {len(goals)}: {goals}")
        for m, mode in goals.items():
            if m not in reported:
                raise rule(
                    "objectives",
                    f"{m!r} is not reported by trials; allowed: {allowed(reported)}{did_you_mean(str(m), reported)}",
                )
            if mode != reported[m]:
                raise rule(
                    "objectives",
                    f"{m} is better when {'higher' if reported[m] == 'max' else 'lower'}: its direction must be "
                    f"{reported[m]}, got {mode!r}",
                )
        first = next(iter(goals))
        if self.metric is not None and self.metric != first:
            raise rule(
                "metric",
                f"with objectives, the metric is the first of them ({first}): leave it out or set it to {first}, "
                f"got {self.metric!r}",
            )
        if self.pick is not None:
            try:
                conditions = parse_conditions(self.pick)
            except ValueError as exc:
                raise rule("pick", str(exc)) from None
            for c in conditions:
                if c.metric not in goals:
                    raise rule("pick", f"{c.metric!r} is not an objective; allowed: {allowed(goals)}")

    @staticmethod
    def json_schema(metrics: dict[str, str], costs: dict[str, str]) -> dict[str, Any]:
        """The rules above for an editor: the metric among those reported, the mode its better direction; the
        objectives among the metrics and costs, each max or min, two at least; the limits on costs, above 0."""
        lower = [m for m, better in metrics.items() if better == "min"]
        objective = {"anyOf": [{"type": "null"}, {"type": "object", "minProperties": 2}]}
        return {
            "properties": {
                "metric": {"enum": [*metrics, None]},
                "objectives": {
                    **objective,
                    "propertyNames": {"enum": [*metrics, *costs]},
                    "properties": {m: {"const": better} for m, better in {**metrics, **costs}.items()},
                },
                "constraints": {
                    "propertyNames": {"enum": list(costs)},
                    "additionalProperties": {"type": "number", "exclusiveMinimum": 0},
                },
            },
            "if": {"properties": {"metric": {"enum": lower}}, "required": ["metric"]},
            "then": {"properties": {"mode": {"enum": ["min", None]}}},
            "else": {"properties": {"mode": {"enum": ["max", None]}}},  # no metric: val_acc's
        }


class Search(_Section):
    """How configurations are drawn, how many and how long, and the compute budget."""

    algorithm: Algorithm = Field(
        "random",
        description=(
            "random (grid and sampled keys mix: grid points x num_samples) | grid | optuna (TPE; with several "
            "objectives, multi-objective TPE) | nsga2 (Optuna's NSGA-II, for several objectives: its first "
            "generation, 50 trials, is random) | bohb"
        ),
    )
    num_samples: int | None = Field(
        None,
        ge=1,
        description=(
            "samples per grid point, or trials for optuna and bohb; null = sized from search.budget when there is "
            "one, else 1"
        ),
    )
    max_concurrent: int = Field(0, ge=0, description="trials at once; 0 = as many as the resources allow")
    seed: int = Field(0, description="the searcher's seed: the same spec draws the same configurations")
    epochs: int | Literal["auto"] | None = Field(
        None,
        description=(
            "the search's trials: null = train.epochs; a number (<= train.epochs); auto = the longest that leaves the"
            " budget 10 trials (Compute budgets, below), the schedule's shape kept"
        ),
    )
    recipe_first: bool = Field(
        False,
        description=(
            "the spec's own values of the searched keys are the first trial (random, optuna, bohb; not a grid or a "
            "conditional space): the search ranks what it finds against the recipe it has to beat; --dry-run says "
            "what it will be, study.json records it"
        ),
    )
    # Measured: 6 one-epoch trials took 28 s without, 7 s with. The reset that reuses a process waits for the
    # previous trial to end (trainables/ray_adapter.py, RESET_TIMEOUT_S).
    reuse_actors: bool = Field(
        True,
        description=(
            "keep trial processes alive between trials (saves a process start and the torch import, about 4 s a trial"
            " on 2 cores)"
        ),
    )
    budget: str | None = Field(
        None,
        description=(
            "compute budget of the whole study (search + final training): 45s | 30m | 2h (wall clock) | 1.5gpu-h (GPU"
            " share x time, summed over trials) | 400epochs (summed over trials); tune-run --budget sets it (Compute "
            "budgets, below)"
        ),
    )
    budget_split: float | None = Field(
        DEFAULT_SPLIT,
        gt=0,
        lt=1,
        description=(
            "the search's share of the budget (0 < x < 1); null = final training of the recipe first (its seeds for"
            " all of train.epochs at the probe's pace), the search what is left, none when that is too little to "
            "search in; final training also gets what the search left unspent"
        ),
    )
    min_gain: float = Field(
        MIN_GAIN,
        ge=0,
        lt=1,
        description=(
            "the smallest validation-accuracy gain over the recipe that a budget-sized search (num_samples null, "
            "with final training) must be able to tell from noise on the validation split (two standard errors, "
            "at accuracy 0.5: 0.063 on 500 images, 0.020 on 5,000); where the split is too small for it, no search "
            "runs and the budget trains the recipe; 0 = never skip for this (a study of one metric, val_acc, only)"
        ),
    )
    sizes: list[dict[str, Any]] = Field(
        [],
        description=(
            "dearer versions of the recipe, dearest first, each a mapping of model.* and train.* keys (not "
            "train.epochs) to values, e.g. [{model.width1: 64, model.width2: 256}]: under a wall-clock or GPU-hours "
            "budget with final training, the plan probes them in turn and takes the first whose final training "
            "still trains each seed 0.8 of train.epochs; none: the recipe as written. The search then searches "
            "around it (Compute budgets, below)"
        ),
    )
    stall_timeout_s: float = Field(
        600.0,
        gt=0,
        description=(
            "seconds with trials paused and none running before the study ends (exit 1; --resume goes on): a "
            "scheduler that never resumes its paused trials would otherwise wait for ever"
        ),
    )

    @field_validator("budget")
    @classmethod
    def _budget_a_duration(cls, budget: str | None) -> str | None:
        if budget is not None:
            try:
                parse_budget(budget, "")
            except SpecError as err:
                raise rule("budget", err.message) from None
        return budget

    @model_validator(mode="before")
    @classmethod
    def _epochs_word(cls, search: Any) -> Any:
        epochs = search.get("epochs") if isinstance(search, dict) else None
        if isinstance(epochs, str) and epochs != "auto":
            raise rule(
                "epochs",
                f"a whole number of epochs, auto (sized from search.budget) or null (train.epochs), got {epochs!r}",
            )
        return search


class Scheduler(_Section):
    """Which trials stop early or change while they train; its time unit is the epoch."""

    name: SchedulerName = Field(
        "fifo",
        description=(
            "fifo (none) | asha | hyperband | median | pbt (bohb needs hyperband; pbt perturbs the keys in space; "
            "with several objectives fifo, or asha ranking each rung by non-dominated sorting)"
        ),
    )
    max_t: int | None = Field(
        None, ge=1, description="epochs of the longest trial; null = the largest train.epochs a trial can have"
    )
    grace_period: int = Field(
        1, description="asha, median: epochs before a trial may be stopped (1 <= grace_period <= max_t)"
    )
    reduction_factor: float = Field(3.0, gt=1, description="asha, hyperband: one in this many trials goes on at a rung")
    brackets: int = Field(1, ge=1, description="asha: brackets of rungs")
    min_samples_required: int = Field(
        3, ge=1, description="median: trials that must have reported before one is stopped"
    )
    perturbation_interval: int = Field(2, ge=1, description="pbt: epochs between perturbations")
    quantile_fraction: float = Field(
        0.25, gt=0, le=0.5, description="pbt: the bottom share of trials copies the top share's checkpoints"
    )
    resample_probability: float = Field(
        0.25, ge=0, le=1, description="pbt: the chance that a perturbed value is drawn anew from the space"
    )
    fidelity: Fidelity = Field(
        "epochs",
        description=(
            "asha, hyperband: what a rung grows. epochs; data: also the training set, the epochs up to rung r "
            "training on r / max_t of the training split (nested: each rung's images include the last's) and the "
            "epochs after the last rung on all of it, reported per epoch as data_fraction and train_images"
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _data_needs_rungs(cls, sched: Any) -> Any:
        if (
            isinstance(sched, dict)
            and sched.get("fidelity") == "data"
            and sched.get("name") not in ("asha", "hyperband")
        ):
            raise rule(
                "fidelity",
                f"data grows the training set at asha's or hyperband's rungs; scheduler.name is {sched.get('name')!r}",
            )
        return sched


class Resources(_Section):
    """What one trial holds."""

    cpu: float = Field(1.0, gt=0, description="CPUs per trial")
    gpu: float = Field(
        0.0,
        ge=0,
        description=(
            "GPUs per trial: a fraction in [0, 1] packs trials on one GPU, each capped at that share of its memory "
            "and counted as that share in GPU-hours, or a whole number; clamped to 0 with a warning where there is no"
            " GPU"
        ),
        json_schema_extra={"anyOf": [{"maximum": 1}, {"multipleOf": 1}]},  # _whole_gpus below, for editors
    )
    max_failures: int = Field(
        3,
        ge=0,
        description=(
            "retries of a trial whose process or node died (a node lost, a worker crash, a kill by Ray's memory "
            "monitor), each from its last checkpoint (a final seed: from its start); what a trial ends itself with "
            "(infeasible, diverged, out of GPU memory, missing weights or data) is never retried"
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _whole_gpus(cls, res: Any) -> Any:
        gpu = res.get("gpu") if isinstance(res, dict) else None
        if isinstance(gpu, (int, float)) and gpu > 1 and not float(gpu).is_integer():
            raise rule("gpu", f"gpu must be a fraction in [0, 1] or a whole number, got {gpu}")
        return res


class Tracking(_Section):
    """Where MLflow records the study."""

    mlflow_uri: str = Field(
        "sqlite:///mlflow.db",
        description=(
            "MLflow tracking URI: a relative sqlite path is relative to the working directory, artifacts go to "
            "mlruns/ beside it; or a tracking server, http://host:5000"
        ),
    )
    mlflow_experiment: str | None = Field(None, description="MLflow experiment; null = experiment.name")
    parent_run_id: str | None = Field(
        None, description="nest this study's runs under another MLflow run (best.yaml sets it to the study's run)"
    )
    enabled: bool = Field(True, description="track the study in MLflow")


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
