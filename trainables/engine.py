"""The training engine: one trial's epochs, Ray-free (benchmarks and tests call ``fit`` directly).

Data stay uint8 in one shared copy (on the GPU when there is one); a batch is gathered by index,
converted, augmented and normalised on the device. Per-epoch randomness is derived from
``(seed, epoch)``, so a run resumed from a checkpoint draws the same batches it would have drawn.

Its parts: ``batches`` (pools into device batches), ``recipe`` (head, loss, freezing, optimizer, schedule) and
``device`` (device, precision, random streams); here a run is set up and its epochs run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .arithmetic import Arithmetic, choose, parse
from .augment import mix_batch
from .batches import Batcher, as_tensor, channel_stats, pixels, place_pool, predict, predictor
from .cost import trial_cost
from .data import Pools, Splits, fidelity_subset, make_splits
from .device import release_host_memory, resolve_device, rng_state, seed_everything, set_rng_state
from .models import create_model
from .recipe import (
    apply_recipe,
    balanced_weights,
    batch_factor,
    build_optimizer,
    build_schedule,
    clamp_to_deadline,
    clock_progress,
    decide,
    diverged,
    epoch_ends_at,
    freeze,
    head_outputs,
    make_loss,
    one_off_s,
    param_groups,
    refresh_rate,
    regroup_optimizer_state,
    replan_to_time_limit,
    step_schedule,
    steps_per_batch,
    train_mode,
)
from .resources import gpu_hours
from .sections import DATA_RUNGS, data_epochs, data_fraction, model_kwargs


@dataclass
class FitResult:
    model: nn.Module
    history: list[dict[str, float]]
    splits: Splits
    mean: list[float]
    std: list[float]
    image_size: int
    device: torch.device
    autocast: bool
    train_seconds: float = 0.0
    channels_last: bool = False
    arithmetic: dict[str, Any] = field(default_factory=dict)  # what trained it and why (Arithmetic.record)
    workers: int = 0  # loader processes for streamed pools
    early_stopping: int = 0  # the patience the run used (0 = off; always off without validation)
    monitor: str = "val_loss"  # what the plateau schedule watched (train_loss without validation)
    planned_epochs: int = 0  # train.epochs as the run began (more than it trained: re-planned to its time limit)
    tta: str = "none"  # train.tta: how every prediction of this model is made


@dataclass
class Run:
    """What ``fit`` sets up once and every epoch uses."""

    spec: dict[str, Any]
    device: torch.device
    splits: Splits
    batcher: Batcher
    model: nn.Module
    step_model: Callable[..., Any]  # ``model``, or its torch.compile wrapper (same parameters)
    opt: torch.optim.Optimizer
    sched: Any
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    arithmetic: Arithmetic
    threshold: float  # binary tasks' decision threshold on P(class 1); else 0.5
    held_out: bool  # a validation split exists (False when training on train + validation)
    mean: list[float]
    std: list[float]
    size: int
    # The furthest a time-limited schedule stepped per batch has gone, as a share of its length (which a re-plan
    # rescales, warm-up and all): it never goes back, so a re-plan never raises the rate again.
    schedule_share: float = 0.0

    @property
    def autocast(self) -> bool:
        return self.arithmetic.autocast

    @property
    def early_stopping(self) -> int:
        """Patience in epochs (0 = off): without held-out data there is nothing to stop on."""
        return int(self.spec["train"].get("early_stopping", 0)) if self.held_out else 0

    @property
    def monitor(self) -> str:
        """The loss the plateau schedule watches: validation's, else training's."""
        return "val_loss" if self.held_out else "train_loss"


@dataclass
class Progress:
    """Where a run is: epochs done, their metrics, and the early-stopping count (all in a checkpoint)."""

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_loss: float = float("inf")
    bad_epochs: int = 0

    def record(self, metrics: dict[str, float], patience: int) -> bool:
        """Add an epoch's metrics; True when early stopping ends the run here."""
        self.epoch = int(metrics["epoch"])
        if "val_loss" in metrics:
            if metrics["val_loss"] < self.best_loss:
                self.best_loss, self.bad_epochs = metrics["val_loss"], 0
            else:
                self.bad_epochs += 1
        stop = patience > 0 and self.bad_epochs >= patience
        if stop:
            metrics["early_stopped"] = 1
        self.history.append(metrics)
        return stop


def build_model(spec: dict[str, Any], pools: Pools, size: int, device: torch.device) -> nn.Module:
    """The spec's model for this task, frozen as asked, on ``device``."""
    t, m = spec["train"], spec["model"]
    if t.get("loss") == "bce" and pools.num_classes != 2:
        raise ValueError(f"train.loss=bce needs a binary task (2 classes), got {pools.num_classes} classes")
    model = create_model(
        m["name"],
        num_classes=head_outputs(spec, pools.num_classes),
        in_chans=pools.in_chans,
        image_size=size,
        **model_kwargs(m),
    ).to(device)
    freeze(model, m.get("freeze", "none"))
    return model


# Training images a model that initialises from the data sees (``init_from_data``: fast_cnn's whitening stem),
# evenly spaced over the training split: the same ones for every seed, so the seed varies the weights alone.
INIT_IMAGES = 5_000


def init_from_data(model: nn.Module, batcher: Batcher, train: np.ndarray) -> None:
    """Let a model that sets some weights from the data (it has ``init_from_data(batches)``) see normalised,
    unaugmented training images; a resumed run's checkpoint then overwrites them with the trained ones."""
    init: Callable[[Iterator[torch.Tensor]], None] | None = getattr(model, "init_from_data", None)
    if init is None or not len(train):
        return
    idx = torch.as_tensor(train[np.linspace(0, len(train) - 1, min(INIT_IMAGES, len(train))).astype(np.int64)])
    init(batcher(chunk)[0] for chunk in idx.split(500))


def setup(
    spec: dict[str, Any], pools: Pools, device: torch.device, merge_val: bool = False, arithmetic: str | None = None
) -> Run:
    """Seeds, splits, pools, model, optimizer, schedule and loss of one run (``merge_val``: see ``fit``;
    ``arithmetic``: a checkpoint's, which a resumed run keeps whatever this machine would choose)."""
    data, t = spec["data"], spec["train"]
    seed_everything(int(t["seed"]))
    splits = make_splits(pools, data)
    if merge_val:  # train on train + validation: no validation split is left
        splits = Splits(
            np.sort(np.concatenate([splits.train, splits.val])), splits.val[:0], splits.test, splits.test_from_train
        )
    x, y = place_pool(pools, device, float(spec.get("resources", {}).get("gpu", 0)))
    size = int(data.get("image_size") or pools.image_size)
    if data.get("mean") and data.get("std"):
        mean, std = list(data["mean"]), list(data["std"])
    else:
        mean, std = channel_stats(x, splits.train)
    model = build_model(spec, pools, size, device)
    if arithmetic is not None:
        arith = Arithmetic(*parse(arithmetic), source="checkpoint")
    else:
        shape = (int(t["batch_size"]), pools.in_chans, size, size)
        images = int(t["epochs"]) * len(splits.train)
        arith = choose(model, t["precision"], device, shape, family=str(spec["model"]["name"]), run_images=images)
    if arith.channels_last:
        model = model.to(memory_format=torch.channels_last)
    batcher = Batcher(x, y, size, mean, std, device, arith.channels_last, int(data.get("workers", 0)))
    init_from_data(model, batcher, splits.train)
    opt = build_optimizer(param_groups(model), t)
    sched = build_schedule(opt, t)
    apply_recipe(opt, sched, t)  # records initial_lr, which a restore's schedule progress is measured against
    weight = None
    if t.get("class_weights") == "balanced":  # rare classes count as much as common ones (paper 002)
        weight = torch.tensor(balanced_weights(pools.train_y[splits.train], pools.num_classes), device=device)
    return Run(
        spec=spec,
        device=device,
        splits=splits,
        batcher=batcher,
        model=model,
        step_model=torch.compile(model) if t.get("compile") else model,
        opt=opt,
        sched=sched,
        loss_fn=make_loss(t, weight),
        arithmetic=arith,
        threshold=float(t.get("threshold", 0.5)) if pools.num_classes == 2 else 0.5,
        held_out=not merge_val,
        mean=mean,
        std=std,
        size=size,
    )


def checkpoint(run: Run, progress: Progress) -> dict[str, Any]:
    """The state ``restore`` continues from: weights, optimizer, schedule, progress and random streams."""
    return {
        "epoch": progress.epoch,
        "model": run.model.state_dict(),
        "optimizer": run.opt.state_dict(),
        "scheduler": run.sched.state_dict(),
        "history": progress.history,
        "best_loss": progress.best_loss,
        "bad_epochs": progress.bad_epochs,
        "arithmetic": run.arithmetic.name,  # a resumed run computes as this one did (see setup)
        "rng": rng_state(),
    }


def restore(run: Run, state: dict[str, Any]) -> Progress:
    """Continue from a ``checkpoint``: the run then draws exactly what an uninterrupted one would have."""
    run.model.load_state_dict(state["model"])
    run.opt.load_state_dict(regroup_optimizer_state(state["optimizer"], run.opt, run.model))
    run.sched.load_state_dict(state["scheduler"])
    apply_recipe(run.opt, run.sched, run.spec["train"])  # a PBT exploit's perturbed values, not the saved ones
    if "rng" in state:  # checkpoints written before the random streams were saved resume without them
        set_rng_state(state["rng"])
    return Progress(
        int(state["epoch"]),
        list(state.get("history", [])),
        float(state.get("best_loss", float("inf"))),
        int(state.get("bad_epochs", 0)),
    )


@dataclass
class EpochStats:
    loss: float
    acc: float
    images_per_s: float
    compile_s: float = 0.0  # the compiled run's first step (kept out of images/s)
    images: int = 0  # images trained on
    one_off_s: float = 0.0  # a process's first epoch: what its first step cost over a typical one (recipe.one_off_s)


def train_epoch(
    run: Run, epoch: int, first: bool, max_batches: int | None = None, ends_at: float | None = None
) -> EpochStats:
    """One pass over the training split, or its rung's share under a data fidelity (``first``: the first epoch this process runs, where a compiled
    model pays for compilation; ``max_batches``: stop after that many, as the throughput probe does; ``ends_at``:
    the run's time limit, a ``time.perf_counter()`` moment: the epoch ends there (its first step always trains), and
    a schedule stepped per batch is never behind the clock (``clock_progress``) nor where it has been, so it ends
    warm-up, cosine and linear decayed, whatever the machine's pace; on a GPU a few queued steps may run past it)."""
    t, device, model = run.spec["train"], run.device, run.model
    seed = int(t["seed"])
    train_mode(model)
    g_cpu = torch.Generator().manual_seed(seed * 100_003 + epoch)
    g_dev = torch.Generator(device=device).manual_seed(seed * 100_003 + epoch)
    fraction = data_fraction(t, epoch + 1)
    train_idx = torch.as_tensor(fidelity_subset(run.splits.train, fraction, int(run.spec["data"]["split_seed"])))
    perm = train_idx[torch.randperm(len(train_idx), generator=g_cpu)]
    bs = max(1, min(int(t["batch_size"]), len(train_idx)))  # paper 003: "128 or lower" for tiny fractions
    mixing = float(t.get("mixup", 0)) > 0 or float(t.get("cutmix", 0)) > 0
    clip = float(t["grad_clip"])
    per_batch = steps_per_batch(t)
    n_batches = max(1, math.ceil(len(perm) / bs))
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    compile_s = first_step_s = 0.0
    n = steps = 0
    for i, (xb, yb) in enumerate(run.batcher.batches(perm, bs, run.spec["data"]["augment"], g_dev)):
        if max_batches is not None and i >= max_batches:
            break
        now = time.perf_counter()
        if ends_at is not None and i > 0 and now >= ends_at:
            break
        n += len(yb)
        if mixing:
            xb, ya, yb2, lam = mix_batch(xb, yb, float(t["mixup"]), float(t["cutmix"]), g_dev)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.autocast):
            out = run.step_model(xb)
            if mixing:
                loss = lam * run.loss_fn(out.float(), ya) + (1 - lam) * run.loss_fn(out.float(), yb2)
            else:
                loss = run.loss_fn(out.float(), yb)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        if per_batch:  # the epoch's schedule step (step_schedule) is where each epoch starts; steps move within it
            done = i / n_batches
            if ends_at is not None:
                length = int(t["epochs"])
                done = max(done, clock_progress(t, epoch, now - t0, ends_at - t0), run.schedule_share * length - epoch)
                run.schedule_share = max(run.schedule_share, (epoch + done) / length)
            factor = batch_factor(t, epoch, done, 1 / n_batches)
            for group in run.opt.param_groups:
                group["lr"] = group["initial_lr"] * factor
        run.opt.step()
        # Accumulate on the device: no host sync per step.
        loss_sum += loss.detach() * len(yb)
        correct += (decide(out.detach(), run.threshold) == yb).sum()
        steps += 1
        if first and i == 0:  # the first step pays the process's one-off costs (a compiled model: compilation)
            if device.type == "cuda":
                torch.cuda.synchronize()
            first_step_s = time.perf_counter() - t0
            compile_s = first_step_s if t.get("compile") else 0.0
    if device.type == "cuda":
        torch.cuda.synchronize()
    n, seconds = max(n, 1), time.perf_counter() - t0
    one_off = one_off_s(first_step_s, seconds, steps) if first else 0.0
    return EpochStats(
        loss_sum.item() / n, correct.item() / n, n / max(seconds - compile_s, 1e-9), compile_s, n, one_off
    )


def validate(run: Run) -> dict[str, float]:
    """Loss, accuracy and the selection metrics (``metrics.selection_metrics``; decisions at the threshold)
    on the validation split."""
    from .metrics import selection_metrics

    t = run.spec["train"]
    logits, labels = predict(
        run.model, run.batcher, run.splits.val, int(t["eval_batch_size"]), run.autocast, t.get("tta", "none")
    )
    pred = decide(logits, run.threshold)
    return {
        "val_loss": F.cross_entropy(logits, labels).item(),
        "val_acc": (pred == labels).float().mean().item(),
        **selection_metrics(labels.numpy(), pred.numpy(), logits.double().softmax(1).numpy()),
    }


def epoch_metrics(run: Run, epoch: int, trained: EpochStats) -> dict[str, Any]:
    """What an epoch (0-based ``epoch``) reports: training loss and accuracy, under a data fidelity its share of the
    data, validation metrics when something is held out, and the learning rate it trained at."""
    t = run.spec["train"]
    fidelity = (
        {
            "data_fraction": data_fraction(t, epoch + 1),
            "data_epochs": data_epochs(t, epoch + 1),
            "train_images": trained.images,
        }
        if t.get(DATA_RUNGS)
        else {}
    )
    return {
        "epoch": epoch + 1,
        "train_loss": trained.loss,
        "train_acc": trained.acc,
        **fidelity,
        **(validate(run) if run.held_out else {}),
        "lr": run.opt.param_groups[0]["lr"],
    }


def fit(
    spec: dict[str, Any],
    pools: Pools,
    *,
    state: dict[str, Any] | None = None,
    on_epoch: Callable[[dict[str, Any], Callable[[], dict[str, Any]]], None] | None = None,
    device: torch.device | None = None,
    merge_val: bool = False,
    on_cost: Callable[[dict[str, float]], bool] | None = None,
) -> FitResult:
    """Train ``spec``'s model on ``pools`` for ``train.epochs`` epochs, resuming from ``state``.

    ``on_epoch(metrics, get_state)`` is called after every epoch, ``metrics`` with the run's ``arithmetic``
    (bf16 or fp32, channels_last or not: what it trains with); ``get_state()`` returns the
    checkpoint payload (only built when the caller asks for it). ``merge_val`` trains on
    train + validation (final training): nothing is held out, so there are no ``val_*`` metrics,
    no early stopping, and a plateau schedule watches the training loss. ``on_cost``: the model's cost
    (``cost.trial_cost``) is measured once before training and given to it; it returns whether to train (False:
    nothing is trained), and every epoch's metrics carry the cost.
    """
    kept = state.get("arithmetic") if state and isinstance(state.get("arithmetic"), str) else None
    run = setup(spec, pools, device or resolve_device(spec["train"]["device"]), merge_val, kept)
    progress = restore(run, state) if state else Progress()
    start, t_start, planned = progress.epoch, time.perf_counter(), int(spec["train"]["epochs"])
    # first_s: seconds to the end of this process's first epoch (with what came before it: the cost's timing);
    # first_pace: that epoch without those and its first step's one-off costs (recipe.one_off_s), the pace until a
    # second epoch shows it
    epoch, first_s, first_pace, one_off = start - 1, None, None, 0.0
    gpu_request = float((spec.get("resources") or {}).get("gpu", 0))
    clamp_to_deadline(run.spec["train"])
    try:
        cost = run_cost(run, pools.in_chans) if on_cost is not None else {}
        go_on = on_cost(cost) if on_cost is not None else True
        while go_on and (epoch := epoch + 1) < int(spec["train"]["epochs"]):  # re-planning may shorten the run
            elapsed = time.perf_counter() - t_start
            if epoch == start + 1:
                first_s, first_pace = elapsed, elapsed - one_off
            before = int(run.spec["train"]["epochs"])
            replan_to_time_limit(run.spec["train"], epoch, epoch - start, elapsed, planned, first_s, first_pace)
            if int(run.spec["train"]["epochs"]) != before:  # this epoch's rate from the new plan, not the old one
                refresh_rate(run.sched)
            if epoch >= int(spec["train"]["epochs"]):
                break
            t0 = time.perf_counter()
            ends_at = epoch_ends_at(run.spec["train"], epoch, start, t_start, elapsed, first_s, first_pace)
            trained = train_epoch(run, epoch, first=epoch == start, ends_at=ends_at)
            if epoch == start:
                one_off = (t0 - t_start) + trained.one_off_s
            if not math.isfinite(trained.loss):  # checked once per epoch: no host sync per step
                metrics = diverged(epoch + 1, trained.loss)
                progress.record(metrics, 0)
                if on_epoch is not None:
                    on_epoch({**metrics, **cost, "arithmetic": run.arithmetic.name}, lambda: checkpoint(run, progress))
                break
            metrics = epoch_metrics(run, epoch, trained)
            step_schedule(run.sched, metrics, run.monitor)
            metrics.update(epoch_time_s=time.perf_counter() - t0, images_per_s=trained.images_per_s)
            # Resumed runs keep counting: the history holds the epochs before the checkpoint.
            metrics["train_seconds"] = metrics["epoch_time_s"] + sum(
                float(h.get("epoch_time_s", 0.0)) for h in progress.history
            )
            metrics["gpu_hours"] = gpu_hours(metrics["train_seconds"], gpu_request, run.device.type == "cuda")
            if trained.compile_s:
                metrics["compile_s"] = trained.compile_s
            stop = progress.record(metrics, run.early_stopping)
            release_host_memory()
            if on_epoch is not None:
                on_epoch({**metrics, **cost, "arithmetic": run.arithmetic.name}, lambda: checkpoint(run, progress))
            if stop:
                break
    finally:
        run.batcher.close()
    return FitResult(
        model=run.model,
        history=progress.history,
        splits=run.splits,
        mean=run.mean,
        std=run.std,
        image_size=run.size,
        device=run.device,
        autocast=run.autocast,
        train_seconds=time.perf_counter() - t_start,
        channels_last=run.arithmetic.channels_last,
        arithmetic=run.arithmetic.record(),
        workers=int(spec["data"].get("workers", 0)),
        planned_epochs=planned,
        tta=str(spec["train"].get("tta", "none")),
        early_stopping=run.early_stopping,
        monitor=run.monitor,
    )


def run_cost(run: Run, in_chans: int) -> dict[str, float]:
    """The cost of ``run``'s model as it predicts (with train.tta, every view's pass), in the arithmetic it trains in."""
    net = predictor(run.model, str(run.spec["train"].get("tta", "none")))
    return trial_cost(net, in_chans, run.size, run.device, run.autocast)


def predict_split(res: FitResult, pools: Pools, split: str, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of a trained model on ``split`` (train, val or test) of ``pools``, in fp32 whatever
    trained it: reported numbers must come out the same when ``tune-eval`` re-checks them on another machine
    (bf16 kernels round differently on CPUs and GPUs, and a CPU without AMX has none)."""
    idx = getattr(res.splits, split)
    from_train = split != "test" or res.splits.test_from_train
    px, py = pools.pool(from_train)
    x, y = pixels(px), as_tensor(py)
    batcher = Batcher(
        x,
        y,
        res.image_size,
        res.mean,
        res.std,
        res.device,
        res.channels_last,
        workers=res.workers,
    )
    try:
        logits, labels = predict(res.model, batcher, idx, batch_size, autocast=False, tta=res.tta)
    finally:
        batcher.close()
    return logits.numpy(), labels.numpy()
