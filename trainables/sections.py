"""The trial side's spec sections without torch: their schemas and the small rules over their values.

``tune-run`` validates a spec, prints ``--help`` and refuses bad input from these alone, before anything
imports torch or Ray (a spec error costs a fraction of a second). The engine, final training and the
augmentation read the same definitions from here.
"""

from __future__ import annotations

import copy
from typing import Any

OPTIMIZERS = ("adamw", "adam", "sgd")
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
}
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


SCHEDULES = ("none", "exponential", "multistep", "cosine", "linear", "plateau")

# Schema of the sections this package owns: key -> (type, default[, allowed values]).
TRAIN_SCHEMA: dict[str, tuple[Any, ...]] = {
    "optimizer": (str, "adamw", OPTIMIZERS),
    "lr": (float, 1e-3),  # peak learning rate
    "weight_decay": (float, 0.01),  # decoupled for adamw, L2 for adam/sgd
    "momentum": (float, 0.9),  # sgd only
    "nesterov": (bool, False),  # sgd only
    # Learning-rate multiplier of the normalisation layers' parameters, their weight decay divided by it (decay per
    # step unchanged): batch norm's shifts train fast where its scales are fixed (fast_cnn; airbench: 64).
    "norm_lr_scale": (float, 1.0),
    "epochs": (int, 10),
    "batch_size": (int, 128),
    "eval_batch_size": (int, 512),  # inference only: no effect on results
    "label_smoothing": (float, 0.0),
    "loss": (str, "ce", ("ce", "bce")),  # bce: binary tasks, one sigmoid logit (paper 000)
    "threshold": (float, 0.5),  # binary tasks: predict class 1 when P(class 1) >= threshold
    # Test-time augmentation of every prediction (validation, test, tune-eval): flip = the mean of the logits of the
    # image and its mirror image (airbench); twice the inference cost.
    "tta": (str, "none", ("none", "flip")),
    "schedule": (str, "none", SCHEDULES),  # stepped once per epoch
    "gamma": (float, 0.1),  # decay factor: exponential (per epoch), multistep, plateau
    "milestones": (list, []),  # multistep: epochs where lr *= gamma
    "warmup_epochs": (int, 0),  # linear warm-up before any schedule
    "plateau_patience": (int, 2),  # plateau: epochs without val_loss improvement
    "grad_clip": (float, 0.0),  # max gradient norm; 0 = off
    "early_stopping": (int, 0),  # stop after this many epochs without a val_loss improvement; 0 = off
    "class_weights": (str, "none", ("none", "balanced")),  # balanced: loss weights n / (k * n_class)
    "mixup": (float, 0.0),  # Mixup Beta(a, a) concentration; 0 = off
    "cutmix": (float, 0.0),  # CutMix Beta(a, a) concentration; 0 = off (both on: one per batch)
    "seed": (int, 0),  # weights, batch order, augmentation
    "precision": (str, "auto", ("auto", "fp32", "bf16")),  # auto: the faster, timed here (arithmetic.py)
    "device": (str, "auto", ("auto", "cpu", "cuda")),
    "compile": (bool, False),  # torch.compile; its cost is reported as compile_s (epoch 1)
}

# What final training reads (``final:``).
FINAL_SCHEMA: dict[str, tuple[Any, ...]] = {
    "seeds": (list, [0, 1, 2]),  # one final model per seed, run as parallel trials
    "epochs": (int, None),  # None = train.epochs
    "train_on": (str, "train+val", ("train+val", "train")),
    "max_per_class": (int, None),  # cap per class for final training (paper 000: 5,000)
    "train_fraction": (float, 1.0),  # stratified share of the training data (paper 003 keeps the search's)
    "topk": (int, 5),  # top-k accuracy (skipped when k >= number of classes)
    "bootstrap": (int, 1000),  # resamples of the test images for a single run's interval
    "threshold": (float | str, None),  # binary: P(positive) cut-off, "tune" (on validation); None = train.threshold
    "after_search": (bool, None),  # None = true when the spec has a final section
    # Seconds one seed's training may take (null: no limit); a wall-clock budget sets it from its final share. A
    # seed slower than planned re-plans its schedule between epochs to end within it, learning rate decayed.
    "time_limit_s": (float, None),
    # With time_limit_s: a seed faster than planned also lengthens its schedule to use its time, up to
    # train.epochs (a budget sets it when it sized final.epochs; final.epochs a user gives is kept).
    "fill_time_limit": (bool, False),
}

# Keys of ``data.augment`` with their defaults (units and meaning in the comment).
AUGMENT_DEFAULTS: dict[str, Any] = {
    "p": 1.0,  # probability that a sample is augmented at all
    "hflip": 0.0,  # probability of a horizontal flip
    "vflip": 0.0,  # probability of a vertical flip
    "pad_crop": 0,  # pixels of zero padding before a random crop back to size; 0 = off
    "pad_crop_p": 1.0,  # probability of the pad+crop
    "rotation": 0.0,  # max rotation in degrees (uniform in [-r, r]); 0 = off
    "rotation_p": 1.0,  # probability of the rotation
    "resized_crop": 0.0,  # min area fraction of a random resized crop (e.g. 0.08); 0 = off
    "resized_crop_p": 1.0,  # probability of the resized crop
    "color_jitter": 0.0,  # strength s: brightness, contrast, saturation factors uniform in [1-s, 1+s]; 0 = off
    "color_jitter_p": 1.0,  # probability of the colour jitter
    "randaugment": 0,  # RandAugment: ops per image (torchvision's N; 2 is usual); 0 = off
    "randaugment_magnitude": 9,  # RandAugment magnitude M on torchvision's 0..30 scale
    "randaugment_group": 8,  # images that share one draw of ops (per-image draws cost a call each)
}

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
    return s


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
# The train keys above: what a run reads and no spec holds (``resolve`` refuses them), so a model folder's spec,
# which tune-eval resolves, is written without them; what they did is in its metrics.json.
RUN_ONLY = (DATA_RUNGS, TIME_LIMIT, ENDS_BY, SCHEDULE_BASE)


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
