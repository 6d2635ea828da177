"""A recipe's training parts, torch objects built from the ``model`` and ``train`` sections: the classifier
head's width and its loss, decisions from logits, freezing, the optimizer and the lr schedule (and a restored
run's optimizer and schedule given this trial's values; a run re-planned to meet its time limit).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .sections import ENDS_BY, SCHEDULE_BASE, TIME_LIMIT, schedule_length

GROW_MARGIN = 1.1  # a run lengthens only to the epochs that fit at a pace 10 % slower than measured: the later
# epochs' pace varies, and lengthening then shortening again moves the learning rate twice
GROW_WITHIN = 1 / 3  # of the planned run (at least its first epoch): later, a longer schedule would raise an
# already decayed learning rate


def head_outputs(spec: dict[str, Any], num_classes: int) -> int:
    """Width of the classifier: one logit for a binary task trained with BCE, else one per class."""
    return 1 if spec["train"].get("loss", "ce") == "bce" else num_classes


def two_logits(out: torch.Tensor) -> torch.Tensor:
    """A one-logit (BCE) output z as the logits [0, z]: softmax gives (1 - sigmoid(z), sigmoid(z)),
    so evaluation, thresholds and cross-entropy read both head types the same way."""
    return torch.cat([torch.zeros_like(out), out], dim=1) if out.shape[1] == 1 else out


def decide(logits: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Predicted classes: arg-max, or for two classes P(class 1) >= ``threshold``."""
    logits = two_logits(logits)
    if logits.shape[1] == 2 and threshold != 0.5:
        return (logits.float().softmax(1)[:, 1] >= threshold).long()
    return logits.argmax(1)


def make_loss(t: dict[str, Any], weight: torch.Tensor | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """loss(logits, labels): cross-entropy over classes, or BCE on one logit (label smoothing towards 0.5)."""
    ls = float(t["label_smoothing"])
    if t.get("loss", "ce") == "ce":
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=ls)

    def bce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = y.float() * (1 - ls) + 0.5 * ls
        return F.binary_cross_entropy_with_logits(out[:, 0], target, weight=None if weight is None else weight[y])

    return bce


def balanced_weights(labels: np.ndarray, k: int) -> np.ndarray:
    """Per-class loss weights n / (k * n_c), as scikit-learn's ``class_weight='balanced'``."""
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    return (counts.sum() / (k * np.maximum(counts, 1))).astype(np.float32)


def head_module(model: nn.Module) -> nn.Module:
    """The classifier: timm's ``get_classifier()``, else the last module that owns parameters."""
    classifier = getattr(model, "get_classifier", None)
    if callable(classifier):
        return classifier()
    return [mod for mod in model.modules() if any(True for _ in mod.parameters(recurse=False))][-1]


def freeze(model: nn.Module, how: str | float) -> None:
    """``none``; ``head_only`` (train the classifier alone); or a fraction f: the first round(f x L) of the
    L parameterised layers before the head — modules owning parameters, in registration order — are frozen.

    Frozen batch-norm layers also keep their running statistics: ``train_mode`` leaves them in eval mode.
    """
    if how == "none":
        return
    head = head_module(model)
    head_params = {id(p) for p in head.parameters()}
    if how == "head_only":
        head_modules = {id(mod) for mod in head.modules()}
        frozen = [mod for mod in model.modules() if id(mod) not in head_modules]
    else:
        layers = [
            mod
            for mod in model.modules()
            if any(True for _ in mod.parameters(recurse=False))
            and not any(id(p) in head_params for p in mod.parameters(recurse=False))
        ]
        frozen = layers[: round(float(how) * len(layers))]
    for mod in frozen:
        for p in mod.parameters(recurse=False):
            p.requires_grad_(False)
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.frozen_stats = True  # type: ignore[assignment]  # read by train_mode; not in the state dict


def train_mode(model: nn.Module) -> None:
    """``model.train()``, except frozen batch-norm layers: in train mode they would keep updating their
    running mean and variance from the new data, so a "frozen" layer would still change what it computes."""
    model.train()
    for mod in model.modules():
        if getattr(mod, "frozen_stats", False):
            mod.eval()


# Normalisation layers, whose parameters (a scale and a shift per channel) train at train.norm_lr_scale x the lr.
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def param_groups(model: nn.Module) -> list[dict[str, Any]]:
    """The trainable parameters as the optimizer's groups: the normalisation layers' in a group of their own
    (tagged ``norm``; ``apply_recipe`` gives it train.norm_lr_scale), present whenever the model has any, so that
    every trial of a model has the same groups (a PBT exploit loads another trial's optimizer state)."""
    norm = {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = [{"params": [p for p in trainable if id(p) not in norm], "norm": False}]
    if norm:
        groups.append({"params": [p for p in trainable if id(p) in norm], "norm": True})
    return groups


def regroup_optimizer_state(saved: dict[str, Any], opt: torch.optim.Optimizer, model: nn.Module) -> dict[str, Any]:
    """An optimizer state saved before the normalisation layers had a group of their own (one group: every
    trainable parameter in the model's order) in ``opt``'s groups, each parameter's state (momentum, Adam's
    moments) with it, so that a study started before that change resumes. Any other state is returned as it is
    (``load_state_dict`` then states a mismatch)."""
    if len(saved["param_groups"]) != 1 or len(opt.param_groups) == 1:
        return saved
    (old,) = saved["param_groups"]
    trainable = [p for p in model.parameters() if p.requires_grad]
    if len(old["params"]) != len(trainable):
        return saved
    if any(
        torch.is_tensor(v) and v.dim() and v.shape != p.shape
        for i, p in zip(old["params"], trainable)
        for v in saved["state"].get(i, {}).values()
    ):  # not the same parameters in the same order: load_state_dict's own checks speak
        return saved
    position = {id(p): i for i, p in enumerate(trainable)}
    groups, state, k = [], {}, 0
    for g in opt.param_groups:
        ids = []
        for p in g["params"]:
            i = old["params"][position[id(p)]]
            if i in saved["state"]:
                state[k] = saved["state"][i]
            ids.append(k)
            k += 1
        groups.append({**old, "norm": bool(g.get("norm")), "params": ids})
    return {"state": state, "param_groups": groups}


def build_optimizer(params: Any, t: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimizer over ``params`` (a list of parameters or of ``param_groups``); ``apply_recipe`` then sets each
    group's values."""
    name, lr, wd = t["optimizer"], float(t["lr"]), float(t["weight_decay"])
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    return torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=float(t["momentum"]), nesterov=bool(t["nesterov"]))


def build_schedule(opt: torch.optim.Optimizer, t: dict[str, Any]) -> Any:
    """The learning-rate schedule of the train section ``t``, per epoch. Its length (``epochs``, ``warmup_epochs``,
    ``milestones``) is read from ``t`` at every step: a run re-planned to meet its time limit ends its schedule
    at its new last epoch."""
    name, gamma = t["schedule"], float(t["gamma"])
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=gamma, patience=int(t["plateau_patience"])
        )

    def factor(e: int) -> float:  # lr multiplier for epoch e (0-based)
        warm, epochs, milestones = int(t["warmup_epochs"]), int(t["epochs"]), [int(m) for m in t["milestones"]]
        if e < warm:
            return (e + 1) / warm
        if name == "exponential":
            return gamma ** (e - warm)
        if name == "multistep":
            return gamma ** sum(e >= m for m in milestones)
        if name == "cosine":
            span = max(1, epochs - warm)
            return 0.5 * (1 + math.cos(math.pi * min(e - warm, span) / span))
        if name == "linear":  # one-cycle's shape with warm-up (airbench, Page's ResNet-9): down to 1/span
            span = max(1, epochs - warm)
            return max(0.0, 1 - (e - warm) / span)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def steps_per_batch(t: dict[str, Any]) -> bool:
    """Whether the schedule moves every optimizer step (``schedule_per: batch``; plateau decays on an epoch's loss)."""
    return t.get("schedule_per") == "batch" and t["schedule"] != "plateau"


def clock_progress(t: dict[str, Any], epoch: int, spent: float, left: float) -> float:
    """Where the clock puts a run with a time limit in epoch ``epoch`` (0-based), as the fraction of that epoch done:
    ``spent`` seconds of the ``left`` it had when the epoch began, which the epochs still planned share evenly.
    When it is ahead of the batches (a machine slower than the plan's pace), a schedule stepped per batch follows it,
    so the rate has decayed when the time is up (budgeted training's schedule on the clock)."""
    return spent / max(left, 1e-9) * max(int(t["epochs"]) - epoch, 1)


def batch_factor(t: dict[str, Any], epoch: int, done: float, step: float) -> float:
    """The lr multiplier of one optimizer step under ``schedule_per: batch``: ``done`` is the fraction of epoch
    ``epoch`` (0-based) before this step, ``step`` one step's. Warm-up rises to the end of the step (the first step
    trains), cosine and linear fall from its start (the last step still trains, near 0); exponential and multistep
    keep their epochs. After warm-up, each epoch's first step is at ``build_schedule``'s factor for that epoch; during
    warm-up the rate rises step by step instead of by whole epochs."""
    name, gamma = t["schedule"], float(t["gamma"])
    warm, epochs = int(t["warmup_epochs"]), int(t["epochs"])
    at = epoch + done
    if at < warm:
        return min(1.0, (at + step) / warm)
    if name == "exponential":
        return gamma ** (epoch - warm)
    if name == "multistep":
        return gamma ** sum(epoch >= int(m) for m in t["milestones"])
    span = max(1, epochs - warm)
    if name == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(at - warm, span) / span))
    if name == "linear":
        return max(0.0, 1 - (at - warm) / span)
    return 1.0


def refresh_rate(sched: Any) -> None:
    """The current epoch's rate from the schedule as it reads the train section now: a re-plan between epochs
    changed its length after the last step had set the rate for this epoch from the old one."""
    if isinstance(sched, torch.optim.lr_scheduler.LambdaLR):
        for group, base, factor in zip(sched.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas, strict=True):
            group["lr"] = base * factor(sched.last_epoch)
        sched._last_lr = [group["lr"] for group in sched.optimizer.param_groups]


def step_schedule(sched: Any, metrics: dict[str, Any], monitor: str) -> None:
    """One epoch's step of the schedule; a plateau schedule steps on the epoch's ``monitor`` loss."""
    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        sched.step(metrics[monitor])
    else:
        sched.step()


def diverged(epoch: int, loss: float) -> dict[str, Any]:
    """The result of an epoch whose training loss is not finite: the run ends here, flagged ``diverged``."""
    return {"epoch": epoch, "diverged": 1, "reason": f"training loss became {loss} at epoch {epoch}"}


def apply_recipe(opt: torch.optim.Optimizer, sched: Any, t: dict[str, Any]) -> None:
    """Give the optimizer and schedule this trial's lr, weight_decay, momentum and nesterov.

    Restored optimizer and schedule state carry the values of the run they were saved in (after a PBT
    exploit: another trial's), so a perturbed value would otherwise never take effect. The lr keeps the
    schedule's progress: the new lr times the factor reached so far (lr / initial_lr of the saved run).
    """
    for g in opt.param_groups:
        # Normalisation layers at train.norm_lr_scale x the lr (airbench: 64 x for batch norm's biases), their
        # weight decay divided by it: decay per step (lr x weight_decay under L2) stays the other layers'.
        scale = float(t.get("norm_lr_scale", 1.0)) if g.get("norm") else 1.0
        lr = float(t["lr"]) * scale
        g["lr"] = lr * g["lr"] / g.get("initial_lr", g["lr"])  # no initial_lr (plateau's first start): factor 1
        g["initial_lr"] = lr  # saved with the optimizer: the next restore's reference
        g["weight_decay"] = float(t["weight_decay"]) / scale
        if "momentum" in g:  # sgd
            g["momentum"], g["nesterov"] = float(t["momentum"]), bool(t["nesterov"])
    if hasattr(sched, "base_lrs"):  # LambdaLR: the schedule multiplies these
        sched.base_lrs = [g["initial_lr"] for g in opt.param_groups]
    sched._last_lr = [g["lr"] for g in opt.param_groups]
    # A plateau state saved with one group: torch before 2.6 indexes min_lrs by group (2.6 and later refill it).
    if len(getattr(sched, "min_lrs", ())) == 1 < len(opt.param_groups):
        sched.min_lrs = sched.min_lrs * len(opt.param_groups)


def clamp_to_deadline(t: dict[str, Any]) -> None:
    """At a run's first epoch: its time limit (``TIME_LIMIT``) ends no later than its deadline (``ENDS_BY``, seconds
    since the epoch), so what starting it took (its worker, data, model, precision timing) is spent from its own
    share, not after it. A run past its deadline trains its first epoch and ends."""
    ends_by = t.get(ENDS_BY)
    if ends_by:
        left = max(1e-3, float(ends_by) - time.time())  # > 0: a limit of 0 would mean none
        t[TIME_LIMIT] = min(float(t.get(TIME_LIMIT) or left), left)


# A final seed that starts with less than this share of its time limit left before its deadline is not trained:
# the seeds' mean is a claim about one recipe, and a seed cut to a fraction of its siblings' schedule is another (in
# issue 24's 15-minute run, two seeds that started past the deadline trained 1 epoch each, 0.26 and 0.23 beside
# 0.54). Half: a seed re-planned to half its share still ends decayed (replan_to_time_limit); a judgment.
LATE_SEED_KEEPS = 0.5


def too_late(t: dict[str, Any]) -> str:
    """Why a final seed starting now gets too little of its time limit (``TIME_LIMIT``) before its deadline
    (``ENDS_BY``) to be trained: less than LATE_SEED_KEEPS of it; '' when it has enough, or no deadline."""
    ends_by, limit = t.get(ENDS_BY), t.get(TIME_LIMIT)
    if not ends_by or not limit:
        return ""
    left = float(ends_by) - time.time()
    if left >= LATE_SEED_KEEPS * float(limit):
        return ""
    return (
        f"not trained: {max(left, 0.0):.0f} s of its {float(limit):.0f} s share were left before the budget's deadline "
        f"when it could start (at least {LATE_SEED_KEEPS:.0%} needed)"
    )


# The least part of an epoch a re-plan trains as an epoch of its own: less is not worth an epoch's start (and per
# batch, the clock has all but decayed the rate by then anyway: clock_progress).
MIN_PART = 0.05


def epoch_pace(run_here: int, elapsed: float, first_s: float | None, first_pace: float | None = None) -> float:
    """Seconds an epoch takes from here on: the epochs after the first in this process; after the first alone,
    ``first_pace``, that epoch without its one-off costs (``one_off_s``), else all of it."""
    if run_here >= 2 and first_s is not None:
        return max(elapsed - first_s, 1e-9) / (run_here - 1)
    if run_here == 1 and first_pace is not None:
        return max(first_pace, 1e-9)
    return max(elapsed, 1e-9) / run_here


def one_off_s(first_step_s: float, train_s: float, steps: int) -> float:
    """The seconds of a process's first epoch that later epochs do not pay (kernel selection, weight reorders, the
    loader's start, compilation): its first step's time over a typical step's, the mean of the others. Measured,
    not assumed: a fixed share had been (the first epoch at 4/3 of the later ones, from one CNN run), where in the
    45 final seeds of benchmarks/cifar10-value-*-size and cifar10-500pc-15m-* it was 0.91-1.24x the median of the
    later ones (median 1.03; one 3.6x), and the ViT's first epoch is no slower than its next: seeds planned their
    growth from a pace a quarter too fast, then cut back. One step: unknown, 0."""
    if steps < 2:
        return 0.0
    return max(0.0, first_step_s - (train_s - first_step_s) / (steps - 1))


def replan_to_time_limit(
    t: dict[str, Any],
    done: int,
    run_here: int,
    elapsed: float,
    planned: int = 0,
    first_s: float | None = None,
    first_pace: float | None = None,
) -> None:
    """Before epoch ``done`` (0-based; ``run_here`` of the ``done`` ran in this process, in ``elapsed`` seconds, the
    first of them in ``first_s``, ``first_pace`` without its one-off costs): when the rest of ``train.epochs`` would
    pass the run's time limit (``TIME_LIMIT``, a final seed's share of a wall-clock budget) at its pace
    (``epoch_pace``), the run is shortened to the epochs that fit, with its schedule's shape (``schedule_length``):
    it ends in time, its learning rate decayed, rather than cut off (the last of them may be a part of an epoch,
    ended by the clock: per batch whenever a part fits, per epoch when not one whole epoch does). Lengths are scaled from ``SCHEDULE_BASE`` (the run's planned schedule, or with
    final.fill_time_limit the recipe's longer one; without it, the train section's own). A run shorter than its
    base — cut by an earlier re-plan, or planned shorter than the recipe — is lengthened towards it when its pace
    leaves room, within the first third of its ``planned`` epochs (or after its first epoch), to the epochs that
    fit at a pace ``GROW_MARGIN`` slower (per batch, the last of them a part)."""
    limit = t.get(TIME_LIMIT)
    if not limit or run_here < 1:
        return
    per_epoch = epoch_pace(run_here, elapsed, first_s, first_pace)
    left, epochs = float(limit) - elapsed, int(t["epochs"])
    base = t.get(SCHEDULE_BASE) or t
    # A schedule stepped per batch counts the part of an epoch that fits: that epoch ends on the clock, its rate
    # decayed (engine.train_epoch's ends_at). One stepped per epoch plans whole epochs, the last of which ends on the
    # clock too (engine.fit); where not one more whole epoch fits, the part that does is that last epoch, at the
    # schedule's last rate, rather than a run stopped after an epoch trained at a rate of the longer plan.
    room = left / per_epoch
    if steps_per_batch(t):
        more = max(0, math.ceil(room - MIN_PART))
    else:
        more = max(0, math.floor(room + 1e-9)) or int(room >= MIN_PART)
    fits = done + more
    if fits < epochs:
        t.update(schedule_length(base, max(done, fits)))
    elif epochs < int(base["epochs"]) and done <= max(1, (planned or epochs) * GROW_WITHIN):
        # Per batch, the part of an epoch that fits counts here too, as when the run shortens (the clock ends it,
        # its rate decayed): whole epochs alone leave up to an epoch's time of the limit unspent.
        room = left / (per_epoch * GROW_MARGIN)
        more = math.ceil(room - MIN_PART) if steps_per_batch(t) else math.floor(room)
        grown = min(int(base["epochs"]), done + max(0, more))
        if grown > epochs:
            t.update(schedule_length(base, grown))


def epoch_ends_at(
    t: dict[str, Any],
    epoch: int,
    start: int,
    t_start: float,
    elapsed: float,
    first_s: float | None,
    first_pace: float | None = None,
) -> float | None:
    """When a time-limited run's ``epoch`` must end (a ``time.perf_counter()`` moment; None: when it has trained
    its pass). From its second epoch in this process (the first pays one-off costs, and its plan is the probe's,
    not its own pace; one started past its deadline trains it whole): a schedule stepped per batch keeps up with
    the clock to the run's limit; one stepped per epoch leaves the epochs after this one their time at the run's
    pace, so that an epoch the host slowed is cut short at its own rate, rather than running past the limit and
    leaving the last epochs, where the rate decays, no time (the run then stopped at an undecayed rate). Its last
    epoch ends on the clock (replan_to_time_limit may have made it a part). ``first_s``: the seconds of this
    process's first epoch (``first_pace``: without its one-off costs), ``elapsed`` the seconds since ``t_start``
    that ``replan_to_time_limit`` planned this epoch from, so that both read one pace (``epoch_pace``)."""
    limit = t.get(TIME_LIMIT)
    if not limit or epoch <= start:
        return None
    after = 0 if steps_per_batch(t) else max(0, int(t["epochs"]) - 1 - epoch)
    return t_start + float(limit) - after * epoch_pace(epoch - start, elapsed, first_s, first_pace)
