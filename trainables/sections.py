"""The trial side's spec sections without torch: their schemas and the small rules over their values.

``tune-run`` validates a spec, prints ``--help`` and refuses bad input from these alone, before anything
imports torch or Ray (a spec error costs a fraction of a second). The engine, final training and the
augmentation read the same definitions from here.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

# What every epoch reports that a study can select on, with the direction that is better.
METRICS = {
    "val_acc": "max",
    "val_loss": "min",
    "train_acc": "max",
    "train_loss": "min",
    "val_f1_macro": "max",
    "val_mcc": "max",
    "val_balanced_acc": "max",
    "val_auc": "max",
    # Wall seconds the trial has trained so far (its epochs, validation included): an objective beside accuracy when
    # the question is what a configuration costs to train (experiment.objectives).
    "train_seconds": "min",
    # GPU-hours the trial has trained so far: train_seconds weighted by its GPU share (resources.gpu; 0 on CPU), the
    # budget's gpu-h unit (resources.gpu_hours): a cost objective on a cluster of shared GPUs.
    "gpu_hours": "min",
}
# Cost metrics a search trial reports when a study's objectives or limits name them, each with its better direction:
# measured once, before the trial's first epoch, by ``cost.measure_cost`` as final models measure theirs (flops:
# forward FLOPs per image; latency_ms: one image).
COST_METRICS = {"params": "min", "flops": "min", "latency_ms": "min"}
# Metrics only a binary task reports (AUC-ROC ranks P(class 1)).
BINARY_METRICS = ("val_auc",)


def metric_problem(metric: str | None, num_classes: int) -> str | None:
    """Why a task of ``num_classes`` classes cannot select on ``metric`` (None: it can)."""
    if metric in BINARY_METRICS and num_classes != 2:
        return (
            f"{metric} needs a binary task (2 classes), got {num_classes} classes; "
            f"for more classes use val_f1_macro, val_mcc or val_balanced_acc"
        )
    return None


Optimizer = Literal["adamw", "adam", "sgd"]
Schedule = Literal["none", "exponential", "multistep", "cosine", "linear", "plateau"]
OPTIMIZERS, SCHEDULES = get_args(Optimizer), get_args(Schedule)


# The error type of a broken rule, which the orchestration states as its one-line error (search/_contract.py).
RULE = "spec_rule"


def rule(key: str, message: str) -> PydanticCustomError:
    """What a section model's validator raises when one of its rules breaks: the error type and context the
    orchestration reads as the one-line error naming ``key`` (search/_contract.py)."""
    return PydanticCustomError(RULE, "{message}", {"key": key, "message": message})


class _Section(BaseModel):
    """A spec section of the trial side: its keys with type, default, range and meaning (and the JSON Schema's)."""

    model_config = ConfigDict(extra="forbid")


class Train(_Section):
    """How one model trains: optimizer, schedule, loss, batch and arithmetic."""

    optimizer: Optimizer = Field("adamw", description="adamw | adam | sgd")
    lr: float = Field(
        1e-3,
        gt=0,
        description=(
            "peak learning rate; write exponents with a dot (1.0e-3): a YAML 1.1 reader such as PyYAML takes 1e-3 as "
            "text, which tune-run reads as a number all the same but this schema underlines"
        ),
    )
    weight_decay: float = Field(0.01, ge=0, description="decoupled for adamw, an L2 penalty for adam and sgd")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    nesterov: bool = Field(False, description="sgd only: Nesterov momentum")
    norm_lr_scale: float = Field(
        1.0,
        gt=0,
        description=(
            "learning-rate multiplier of the normalisation layers' parameters, their weight decay divided by it "
            "(the same decay per step); fast_cnn fixes batch norm's scales and trains its shifts fast"
        ),
    )
    epochs: int = Field(10, ge=1, description="epochs of a trial (a final model's: final.epochs, else this)")
    batch_size: int = Field(128, ge=1, description="training images per step")
    eval_batch_size: int = Field(512, ge=1, description="images per inference step: no effect on results")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing of the cross-entropy, in [0, 1)")
    loss: Literal["ce", "bce"] = Field("ce", description="ce | bce (binary tasks: one sigmoid logit, paper 000)")
    threshold: float = Field(
        0.5, gt=0, lt=1, description="binary tasks: predict class 1 when P(class 1) >= threshold (searchable)"
    )
    tta: Literal["none", "flip", "flip_shift"] = Field(
        "none",
        description=(
            "none | flip: every prediction (validation, test, tune-eval) averages the logits of the image and its"
            " mirror image (airbench); twice the inference cost | flip_shift: also of both in the windows one "
            "pixel up-left and down-right (airbench94's; weights 1/2, 1/4, 1/4); six times"
        ),
    )
    schedule: Schedule = Field(
        "none",
        description=(
            "none | exponential | multistep | cosine | linear | plateau, moved every epoch or every step "
            "(schedule_per); linear: from lr down towards 0 over the epochs after warm-up, one-cycle's shape"
        ),
    )
    schedule_per: Literal["epoch", "batch"] = Field(
        "epoch",
        description=(
            "how often the schedule moves: epoch (the papers' torch schedulers) | batch: every optimizer step, "
            "warm-up, cosine and linear by the fraction of the run done (airbench), so a run of a few epochs "
            "still decays its rate towards 0; not with plateau, which watches an epoch's loss (a trial that draws"
            " plateau from a space steps it per epoch)"
        ),
    )
    gamma: float = Field(
        0.1, gt=0, description="exponential: lr *= gamma each epoch; multistep and plateau: the factor"
    )
    milestones: list[int] = Field([], description="multistep: epochs where lr *= gamma")
    warmup_epochs: int = Field(0, ge=0, description="linear warm-up before the schedule")
    plateau_patience: int = Field(
        2,
        ge=0,
        description=(
            "plateau: epochs without a val_loss improvement (train_loss in a final train+val run) before a decay"
        ),
    )
    grad_clip: float = Field(0.0, ge=0, description="max gradient norm; 0 = off")
    early_stopping: int = Field(
        0,
        ge=0,
        description=(
            "stop after this many epochs without a val_loss improvement; 0 = off (always off in a final train+val"
            " run, which has no validation)"
        ),
    )
    class_weights: Literal["none", "balanced"] = Field(
        "none", description="none | balanced (loss weights n / (k * n_class))"
    )
    mixup: float = Field(0.0, ge=0, description="Mixup Beta(a, a) concentration; 0 = off")
    cutmix: float = Field(
        0.0, ge=0, description="CutMix Beta(a, a) concentration; 0 = off; both on: one of them per batch"
    )
    seed: int = Field(0, description="weights, batch order, augmentation")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description=(
            "auto: fp32 or bf16 autocast, whichever is >= 10 % faster timed on this device (the memory layout "
            "timed too) | fp32 | bf16"
        ),
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto | cpu | cuda")
    compile: bool = Field(False, description="torch.compile the model; compile time is reported apart (compile_s)")

    @model_validator(mode="before")
    @classmethod
    def _plateau_per_epoch(cls, train: Any) -> Any:
        if isinstance(train, dict) and train.get("schedule") == "plateau" and train.get("schedule_per") == "batch":
            raise rule(
                "schedule_per", "plateau decays on an epoch's loss: schedule_per: batch takes the other schedules"
            )
        return train


class Final(_Section):
    """Final training: the best configuration retrained with several seeds, tested on the held-out split."""

    seeds: list[int] = Field([0, 1, 2], min_length=1, description="one final model per seed, run in parallel")
    epochs: int | None = Field(
        None,
        ge=1,
        description=(
            "epochs of a final model; null = train.epochs (a budget sizes it); warm-up and milestones keep their "
            "share of the run, shorter or longer than the recipe's"
        ),
    )
    train_on: Literal["train+val", "train"] = Field(
        "train+val", description="train+val (no validation: exactly the epochs above, no val_* metrics) | train"
    )
    max_per_class: int | None = Field(None, ge=1, description="cap per class for final training (paper 000: 5,000)")
    train_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="stratified share of the training data for final training (paper 003 keeps the search's)",
    )
    topk: int = Field(5, ge=1, description="top-k accuracy (skipped when k >= the number of classes)")
    bootstrap: int = Field(1000, ge=0, description="resamples of the test images for a single run's interval; 0 = none")
    # Per seed, each timing after a warm-up pass: 1 s is thousands of passes of the quickstart CNN's one image
    # (0.1 ms on a 2-core CPU), tens of a large model's; a smoke run, which checks the path and not the model,
    # times 0.1 s (trainables/smoke.py).
    timing_s: float = Field(
        1.0,
        gt=0,
        le=600,
        description=(
            "seconds each of a final model's two speed timings runs at least (metrics.json's cost: batch "
            "throughput_images_per_s and one-image latency_ms; trials' latency_ms objective is timed 1 s)"
        ),
    )
    threshold: float | Literal["tune"] | None = Field(
        None, description="binary: a fixed P(class 1) cut-off | tune (on validation) | null = train.threshold"
    )
    after_search: bool | None = Field(
        None, description="train final models after the search; null = true when the spec has a final section"
    )
    time_limit_s: float | None = Field(
        None,
        gt=0,
        description=(
            "seconds one seed's training may take (null: no limit; a wall-clock budget sets it): a seed slower "
            "than planned re-plans its schedule between epochs to end within it, its learning rate decayed, and its "
            "last epoch ends on the clock (when not one whole epoch fits, the part that does, at the last rate), "
            "each one before it in time to leave those after it theirs at its pace (one the host slowed is cut "
            "short at its own rate); "
            "with schedule_per: batch (warm-up, cosine, linear) its schedule also keeps up with the clock from its "
            "second epoch and the part of an epoch that fits is trained, so it ends at the limit decayed however "
            "slow its last epoch"
        ),
    )
    fill_time_limit: bool = Field(
        False,
        description=(
            "with time_limit_s: a seed faster than planned also lengthens its schedule, up to train.epochs (a "
            "budget sets it when it sized final.epochs)"
        ),
    )
    # Measured (issue 24, CIFAR-10 at 500 images per class, airbench94's widths): 30 epochs of the 10-epoch recipe,
    # its warm-up stretched with it, reached 0.761 against 0.699 (seed 0), in a 15-minute budget that 10 epochs x 3
    # seeds left two thirds unspent. 3: what was measured, a judgment beyond it.
    max_stretch: float = Field(
        3.0,
        ge=1,
        description=(
            "a budgeted study whose plan ran no search gives its search's share to the final models: they train up "
            "to this many times train.epochs where the budget affords it, warm-up and milestones stretched with the "
            "run (final.epochs null only; 1 = never beyond train.epochs; tune-run --final --budget, the recipe as "
            "written, never stretches)"
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _threshold(cls, final: Any) -> Any:
        thr = final.get("threshold") if isinstance(final, dict) else None
        if isinstance(thr, str) and thr != "tune":
            raise rule("threshold", f"a probability in (0, 1) or 'tune', got {thr!r}")
        if isinstance(thr, float) and not 0.0 < thr < 1.0:
            raise rule("threshold", f"0 < threshold < 1 must hold, got threshold={thr}")
        if thr == "tune" and final.get("train_on") != "train":
            raise rule("threshold", "tuning the threshold needs held-out validation data: set final.train_on: train")
        return final


class Augment(_Section):
    """Training-time augmentation (``data.augment``): applied to whole batches on the training device, drawn per
    image."""

    p: float = Field(
        1.0, ge=0, le=1, description="probability that an image is augmented at all (gates everything below)"
    )
    hflip: float = Field(0.0, ge=0, le=1, description="probability of a horizontal flip")
    vflip: float = Field(0.0, ge=0, le=1, description="probability of a vertical flip")
    pad_crop: int = Field(0, ge=0, description="pixels of zero padding, then a random crop back to size; 0 = off")
    pad_crop_p: float = Field(1.0, ge=0, le=1, description="probability of the pad and crop")
    rotation: float = Field(0.0, ge=0, le=180, description="max degrees, uniform in [-r, r]; 0 = off")
    rotation_p: float = Field(1.0, ge=0, le=1, description="probability of the rotation")
    resized_crop: float = Field(
        0.0, ge=0, le=1, description="min area of a random resized crop, aspect 3/4..4/3; 0 = off"
    )
    resized_crop_p: float = Field(1.0, ge=0, le=1, description="probability of the resized crop")
    color_jitter: float = Field(
        0.0, ge=0, description="strength s: brightness, contrast, saturation factors in [1-s, 1+s]; 0 = off"
    )
    color_jitter_p: float = Field(1.0, ge=0, le=1, description="probability of the colour jitter")
    randaugment: int = Field(0, ge=0, description="torchvision RandAugment: ops per image (2 is usual); 0 = off")
    randaugment_magnitude: int = Field(
        9, ge=0, le=30, description="RandAugment's magnitude M on torchvision's 0..30 scale"
    )
    randaugment_group: int = Field(
        8, ge=1, description="images sharing one draw of ops (a call per group keeps it batched)"
    )


# Keys of ``data.augment`` with their defaults.
AUGMENT_DEFAULTS: dict[str, Any] = Augment().model_dump()


class ModelBase(_Section):
    """The keys of every ``model`` section; a registered model adds its builder's arguments."""

    name: str | None = Field(
        None, description="a registered model, timm/<any timm model> or tv/<any torchvision model> (required)"
    )
    freeze: Literal["none", "head_only"] | Annotated[float, Field(ge=0, le=1)] = Field(
        "none",
        description=(
            "none | head_only | a fraction f: the first round(f x L) of the L parameterised layers before the "
            "head (modules owning weights, in registration order) are frozen; frozen BatchNorm layers also keep "
            "their running statistics (eval mode)"
        ),
    )

    @field_validator("freeze", mode="before")
    @classmethod
    def _freeze_word_or_fraction(cls, freeze: Any) -> Any:
        if isinstance(freeze, str) and freeze not in ("none", "head_only"):
            raise rule("freeze", f"none, head_only or a fraction of layers in [0, 1], got {freeze!r}")
        if isinstance(freeze, (int, float)) and not isinstance(freeze, bool) and not 0.0 <= freeze <= 1.0:
            raise rule("freeze", f"0 <= freeze <= 1 must hold, got freeze={freeze}")
        return freeze


class FreeModel(ModelBase):
    """A timm or torchvision model: any keyword argument its library takes, checked when it is built."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(
        pattern=r"^(timm|tv)/.+",
        description="timm/<name> or tv/<name>: any model of that library, with any keyword argument it takes",
    )


class Data(_Section):
    """What the trials read and how it is split; ``data.dataset`` is required."""

    dataset: str | None = Field(
        None, examples=["cifar10"], description="digits | cifar10 | cifar100 | imagefolder | synthetic (required)"
    )
    root: str | None = Field(None, description="local data; null = torchvision download (cifar) into ~/.cache/tune-run")
    download: bool = Field(True, description="allow that download when root lacks the files")
    image_size: int | None = Field(
        None, ge=1, description="null = native (digits 8, cifar 32); imagefolder decodes once at this size"
    )
    val_fraction: float = Field(0.1, gt=0, lt=1, description="of the train pool, stratified")
    test_fraction: float = Field(
        0.2, gt=0, le=1, description="held out of the train pool when the dataset has no test split; never searched on"
    )
    train_fraction: float = Field(
        1.0, gt=0, le=1, description="stratified fraction of the training split each search trial uses"
    )
    max_per_class: int | None = Field(
        None,
        ge=1,
        description=(
            "cap training images per class for the search's trials (balanced subsample); final training has its "
            "own, final.max_per_class; a smaller data set for both: load_max_per_class"
        ),
    )
    load_max_per_class: int | None = Field(
        None,
        ge=1,
        description=(
            "imagefolder: files read per class (seeded) before any split; a tree larger than memory is never "
            "decoded whole (paper 000's balanced 5,000 per class)"
        ),
    )
    storage: Literal["auto", "memory", "stream"] = Field(
        "auto",
        description=(
            "files (imagefolder, class-folder roots): memory = decoded once, uint8, one copy shared by all "
            "trials; stream = read from disk every epoch by loader workers; auto = stream when the decoded set "
            "would pass max_memory_gb"
        ),
    )
    max_memory_gb: float | None = Field(
        None, gt=0, description="auto's limit; null = a quarter of the host's available memory"
    )
    workers: int = Field(
        4,
        ge=0,
        description=(
            "streaming only: decoding processes per trial, kept for its life and added to its CPU request "
            "(in-memory sets use none)"
        ),
    )
    val_max_per_class: int | None = Field(None, ge=1, description="cap validation images per class")
    test_max_per_class: int | None = Field(
        None,
        ge=1,
        description=(
            "cap test images per class (a stratified draw from split_seed; the training and validation splits do "
            "not move with it); a --smoke run tests at most 100"
        ),
    )
    split_seed: int = Field(0, description="every split above depends on this alone")
    on_bad_image: Literal["skip", "error"] = Field(
        "skip",
        description=(
            "imagefolder: skip = leave unreadable files out (counted in the data: line, listed in "
            "runs/<study>/skipped_images.txt); error = stop, naming the first (exit 2)"
        ),
    )
    positive_class: str | None = Field(
        None,
        description=(
            "binary tasks: the class name that is class 1 (threshold on P(class 1), positive precision/recall/F1,"
            " AUC); null = the second class name in sorted order"
        ),
    )
    mean: list[float] | None = Field(None, description="per channel, 0..1 scale; null = computed on the training split")
    std: list[float] | None = Field(None, description="per channel, 0..1 scale; null = computed on the training split")
    num_classes: int = Field(10, ge=2, description="synthetic only")
    num_samples: int = Field(2000, ge=1, description="synthetic only")
    augment: Augment = Field(default_factory=Augment, description="applied to whole batches on the training device")

    @model_validator(mode="before")
    @classmethod
    def _source(cls, d: Any) -> Any:
        """Where the images come from, against how they are held."""
        if not isinstance(d, dict):
            return d
        dataset, root = d.get("dataset"), d.get("root")
        if dataset == "imagefolder" and not root:
            raise rule("root", "imagefolder needs data.root (a class-per-folder tree)")
        files = dataset == "imagefolder" or (dataset in ("cifar10", "cifar100") and root)
        if d.get("storage") == "stream" and not files:
            raise rule(
                "storage",
                f"stream reads image files (imagefolder, or cifar with a class-folder data.root); {dataset} is loaded "
                "whole, use auto or memory",
            )
        if root is None and dataset in ("cifar10", "cifar100") and d.get("download") is False:
            raise rule("root", f"{dataset} needs data.root when data.download is false")
        return d


# Keys whose value decides which other keys exist: each model family has its own arguments, so the family is searched
# by a branch (a conditional sub-space), with the advice the spec's error line gives.
BRANCH_KEYS = {
    "model.name": "make it a branch, e.g. space.family: {grid: [{model.name: cnn, model.conv1: ...}, ...]}",
}

# Keys of the model section that are not the builder's arguments.
NOT_MODEL_ARGS = ("name", "freeze")


def model_kwargs(model_section: dict[str, Any]) -> dict[str, Any]:
    """The builder's keyword arguments from a spec's model section (``freeze`` is a training option)."""
    return {k: v for k, v in model_section.items() if k not in NOT_MODEL_ARGS}


# A study's data fidelity (``scheduler.fidelity: data``): [(last epoch of a rung, its share of the training split)].
DATA_RUNGS = "_data_rungs"


def final_epochs(spec: dict[str, Any]) -> int:
    """How long a final model trains: ``final.epochs``, or the recipe's ``train.epochs`` when unset (the one rule:
    final training, its estimate and its budget read it here)."""
    return int((spec.get("final") or {}).get("epochs") or spec["train"]["epochs"])


def shortened(spec: dict[str, Any], epochs: int) -> dict[str, Any]:
    """A copy of ``spec`` that trains ``epochs`` epochs with the same schedule's shape: warm-up and step
    milestones keep their share of the run (a search's short trials, ``search.epochs``)."""
    s = copy.deepcopy(spec)
    if epochs < int(spec["train"]["epochs"]):
        s["train"].update(schedule_length(spec["train"], epochs))
        s["train"][SHORTENED_FROM] = int(spec["train"]["epochs"])
    return s


def scale_configured_schedule(train: dict[str, Any], config: dict[str, Any]) -> None:
    """A shortened trial's warm-up and milestones that its configuration sets (a space, a branch option) were written
    for the recipe's length: scaled here as ``shortened`` scaled the spec's own, so the trial's rate still warms up
    and decays within it (a 2-epoch warm-up left as it is in a 1-epoch trial never reaches its peak)."""
    full = train.get(SHORTENED_FROM)
    keys = [k for k in ("warmup_epochs", "milestones") if f"train.{k}" in config]
    if full is None or not keys:
        return
    scaled = schedule_length({**train, "epochs": full}, int(train["epochs"]))
    train.update({k: scaled[k] for k in keys})


def schedule_length(t: dict[str, Any], epochs: int) -> dict[str, Any]:
    """The train section's ``epochs``, ``warmup_epochs`` and ``milestones`` for a run of ``epochs`` instead of
    ``t["epochs"]``: warm-up and step milestones keep their share of the run (the one rule for shortened search
    trials, final training at fewer epochs and a final run re-planned to meet its time limit)."""
    scale = epochs / int(t["epochs"])
    return {
        "epochs": int(epochs),
        "warmup_epochs": int(round(int(t["warmup_epochs"]) * scale)),
        "milestones": sorted({max(1, int(round(int(m) * scale))) for m in t["milestones"]}),
    }


# A final seed's limit on its training time (final.time_limit_s), in the train section its run reads.
TIME_LIMIT = "_time_limit_s"
# A final seed's deadline under a wall-clock budget (seconds since the epoch; nodes' clocks NTP-synced), in the train
# section its run reads: its time limit ends no later (``clamp_to_deadline``). A moment, not a setting: given to
# the final trainable by the budget's plan, never written with a spec.
ENDS_BY = "_ends_by"
# The schedule (epochs, warm-up, milestones) a run with a time limit is re-planned from: its own as planned, or
# with final.fill_time_limit the recipe's, which it may lengthen back towards. Every re-planned length is scaled
# from it, not from the last re-plan's (no rounding drift when a run re-plans more than once).
SCHEDULE_BASE = "_schedule_base"
# The recipe's length (train.epochs) a search trial shortened by ``search.epochs`` was cut from: what a warm-up or
# milestones set by its configuration are scaled from (``scale_configured_schedule``).
SHORTENED_FROM = "_shortened_from"
# The train keys above: what a run reads and no spec holds (``resolve`` refuses them), so a model folder's spec,
# which tune-eval resolves, is written without them; what they did is in its metrics.json.
RUN_ONLY = (DATA_RUNGS, TIME_LIMIT, ENDS_BY, SCHEDULE_BASE, SHORTENED_FROM)


def settings_only(spec: dict[str, Any]) -> dict[str, Any]:
    """A copy of a spec a run recorded without the keys that run set for itself (``RUN_ONLY``): what a model
    folder's spec holds, and what tune-eval resolves of one written before those keys were left out of it."""
    s = copy.deepcopy(spec)
    if isinstance(s, dict) and isinstance(s.get("train"), dict):  # else resolve says what is wrong with it
        for key in RUN_ONLY:
            s["train"].pop(key, None)
    return s


def data_fidelity(spec: dict[str, Any], rungs: list[int], max_t: int) -> dict[str, Any]:
    """A copy of ``spec`` whose trials grow their data with the scheduler's rungs: the epochs up to rung r
    train on r / max_t of the training split, the epochs after the last rung on all of it."""
    s = copy.deepcopy(spec)
    s["train"][DATA_RUNGS] = [[int(r), min(1.0, r / max_t)] for r in sorted(set(rungs)) if 0 < r < max_t]
    return s


def data_fraction(t: dict[str, Any], epoch: int) -> float:
    """The share of the training split epoch ``epoch`` (1-based) trains on: its rung's, else all."""
    return next((float(f) for last, f in t.get(DATA_RUNGS) or [] if epoch <= last), 1.0)


def data_epochs(t: dict[str, Any], epoch: int) -> float:
    """Epochs of the whole training split that epochs 1..``epoch`` add up to: an epoch on a quarter of it counts a
    quarter (the unit of an epoch budget, planned and spent alike)."""
    return sum(data_fraction(t, e) for e in range(1, epoch + 1))
