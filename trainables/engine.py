"""The training engine: one trial's epochs, Ray-free (benchmarks and tests call ``fit`` directly).

Data stay uint8 in one shared copy (on the GPU when there is one); a batch is gathered by index,
converted, augmented and normalised on the device. Per-epoch randomness is derived from
``(seed, epoch)``, so a run resumed from a checkpoint draws the same batches it would have drawn.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .augment import augment_batch, mix_batch
from .data import ImageFiles, Pools, Splits, make_splits
from .models import create_model
from .resources import device_memory, pool_fits
from .sections import (
    DATA_RUNGS,
    model_kwargs,
)


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
    workers: int = 0  # loader processes for streamed pools
    early_stopping: int = 0  # the patience the run used (0 = off; always off without validation)
    monitor: str = "val_loss"  # what the plateau schedule watched (train_loss without validation)


def native_bf16(device: torch.device) -> bool:
    """bf16 matrix arithmetic in hardware: CUDA, or a CPU with AMX tiles (oneDNN runs bf16 convolutions and
    matmuls on them). Measured on a 2-core AMX host with channels_last: the CIFAR CNN trains 3.5x and ResNet-18
    2.9x faster than in fp32 (benchmarks/precision.py). Without AMX, oneDNN has no bf16 matrix unit to use: such
    CPUs stay fp32 (not measured here)."""
    if device.type == "cuda":
        return True
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private, but the only probe torch offers
    return device.type == "cpu" and bool(amx and amx())


def use_autocast(precision: str, device: torch.device) -> bool:
    """``train.precision``: ``bf16`` always autocasts, ``fp32`` never, ``auto`` where bf16 is native."""
    return precision == "bf16" or (precision == "auto" and native_bf16(device))


def wants_channels_last(model: nn.Module, device: torch.device) -> bool:
    """channels_last pays for convolutions where the kernels want it: tensor-core layouts on the GPU, oneDNN's
    blocked formats on an AMX CPU (part of the 3.5x above); elsewhere NCHW."""
    return native_bf16(device) and any(isinstance(m, nn.Conv2d) for m in model.modules())


def resolve_device(want: str = "auto") -> torch.device:
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def device_warning(want: str = "auto") -> str | None:
    """Why a trial that may use a GPU trains on CPU, or None. Reported with the trial's results (the
    study's console prints it once), not warned in every trial process."""
    if want == "auto" and not torch.cuda.is_available():
        return "no GPU visible to the trials: training on CPU"
    return None


_LIBC: Any = None


def release_host_memory() -> None:
    """Hand freed heap pages back to the OS (glibc only; elsewhere a no-op).

    glibc raises its mmap threshold after large frees, so past batches' temporaries stay resident
    in the heap (100-150 MB per trial measured at batch 256, 64 px); trimming once per epoch keeps a
    trial's resident memory at its live tensors, and concurrent trials at about one data copy.
    """
    global _LIBC
    if _LIBC is None:
        import ctypes
        import sys

        try:
            _LIBC = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else False
            _LIBC.malloc_trim  # noqa: B018  (musl has no malloc_trim)
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def as_tensor(a: np.ndarray) -> torch.Tensor:
    """Zero-copy view of a (possibly read-only, shared-memory) array; nothing ever writes to it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(a)


Pixels = torch.Tensor | ImageFiles  # an in-memory uint8 pool, or files decoded on demand


def pixels(a: np.ndarray | ImageFiles) -> Pixels:
    """A pool's pixels as the engine reads them: a zero-copy tensor, or the streamed files as they are."""
    return a if isinstance(a, ImageFiles) else as_tensor(a)


def take(x: Pixels, idx: torch.Tensor) -> torch.Tensor:
    """uint8 images at positions ``idx`` (decoded from files when ``x`` is streamed)."""
    if isinstance(x, ImageFiles):
        return torch.from_numpy(x[idx.cpu().numpy()])
    return x[idx.to(x.device)]


def channel_stats(x: Pixels, idx: np.ndarray, limit: int = 10_000) -> tuple[list[float], list[float]]:
    """Per-channel mean/std (0..1 scale) of the training images (a fixed subsample of at most ``limit``)."""
    if isinstance(x, ImageFiles):
        limit = min(limit, 2_000)  # each is a file decode; 2,000 pin a channel mean to ~0.1 %
    device = x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
    sub = torch.as_tensor(idx[np.linspace(0, len(idx) - 1, min(limit, len(idx))).astype(np.int64)], device=device)
    # Sums in float64 over chunks of 256 images: a float copy of all 10,000 would be 6 GB at 224 px, per trial.
    s = torch.zeros(x.shape[1], dtype=torch.float64, device=device)
    s2 = torch.zeros_like(s)
    for i in range(0, len(sub), 256):
        xs = take(x, sub[i : i + 256]).double()
        s += xs.sum(dim=(0, 2, 3))
        s2 += xs.square().sum(dim=(0, 2, 3))
    n = len(sub) * x.shape[2] * x.shape[3]
    mean = s / n
    var = (s2 / n - mean.square()) * n / max(n - 1, 1)  # unbiased, as torch.std
    return (mean / 255).tolist(), (var.clamp_min(0).sqrt() / 255).clamp_min(1e-3).tolist()


class _FileBatches(torch.utils.data.Dataset):
    """Item i = pool position i; a loader worker decodes a whole batch of them in one call (``__getitems__``)."""

    def __init__(self, files: ImageFiles) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.files[int(i)])

    def __getitems__(self, idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.files[np.asarray(idx)])


class _PassOrder(torch.utils.data.Sampler):
    """The loader's batch sampler: the batches of the current pass (a training epoch, an evaluation), set
    before each pass. The loader — and its worker processes — last the trial; only this order changes."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.chunks)

    def __len__(self) -> int:
        return len(self.chunks)


def _whole_batch(xb: Any) -> Any:
    """Collation: ``__getitems__`` already returns the stacked batch."""
    return xb


class Batcher:
    """Turns pool indices into normalised float batches on the device.

    In-memory pools are gathered by index in this process (no loader workers: the copy is a
    memcpy). Streamed pools are decoded by ``workers`` DataLoader processes, a few batches ahead;
    the processes start on the first pass and persist until ``close()``.
    Either way the uint8 batch is converted, resized, augmented and normalised on the device.
    """

    def __init__(
        self,
        x: Pixels,
        y: torch.Tensor,
        size: int,
        mean: list[float],
        std: list[float],
        device: torch.device,
        channels_last: bool,
        workers: int = 0,
    ) -> None:
        self.x, self.y, self.size, self.device = x, y, size, device
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255
        self.channels_last = channels_last
        self.workers = workers
        self._order = _PassOrder()
        self._loader: torch.utils.data.DataLoader | None = None

    def finish(
        self, xb: torch.Tensor, aug: dict[str, Any] | None = None, g: torch.Generator | None = None
    ) -> torch.Tensor:
        """A uint8 batch (any device) -> float, resized, augmented, normalised, on the device."""
        xb = xb.to(self.device, non_blocking=True).float()
        if xb.shape[-1] != self.size or xb.shape[-2] != self.size:
            xb = F.interpolate(xb, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        if aug is not None:
            xb = augment_batch(xb, aug, g)
        xb = (xb - self.mean) / self.std
        if self.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        return xb

    def labels(self, idx: torch.Tensor) -> torch.Tensor:
        return self.y[idx.to(self.y.device)].to(self.device, non_blocking=True)

    def __call__(
        self, idx: torch.Tensor, aug: dict[str, Any] | None = None, g: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.finish(take(self.x, idx), aug, g), self.labels(idx)

    def _file_loader(self) -> torch.utils.data.DataLoader:
        if self._loader is None:
            assert isinstance(self.x, ImageFiles)  # the loader is for streamed sets only
            self._loader = torch.utils.data.DataLoader(
                _FileBatches(self.x),
                batch_sampler=self._order,
                collate_fn=_whole_batch,
                num_workers=self.workers,
                persistent_workers=self.workers > 0,
                pin_memory=self.device.type == "cuda",
                prefetch_factor=4 if self.workers else None,
                generator=torch.Generator().manual_seed(0),
            )  # its own: a loader draws a seed, which must not move
            # the global stream that dropout and the weights use
        return self._loader

    def batches(
        self, order: torch.Tensor, batch_size: int, aug: dict[str, Any] | None = None, g: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of ``order`` in order. Augmentation draws from ``g`` lazily, batch by batch, so the
        random stream is the same whether the pixels come from memory or from loader workers."""
        chunks = list(order.split(batch_size))
        if not isinstance(self.x, ImageFiles):
            for idx in chunks:
                yield self(idx, aug, g)
            return
        loader = self._file_loader()
        self._order.chunks = [idx.numpy() for idx in chunks]
        for i, xb in enumerate(loader):  # the loader runs to its end, so the next pass starts clean
            yield self.finish(xb, aug, g), self.labels(chunks[i])

    def close(self) -> None:
        """Stop the loader's worker processes (a no-op for in-memory pools)."""
        it = getattr(self._loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self._loader = None


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


def build_optimizer(params: Any, t: dict[str, Any]) -> torch.optim.Optimizer:
    name, lr, wd = t["optimizer"], float(t["lr"]), float(t["weight_decay"])
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    return torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=float(t["momentum"]), nesterov=bool(t["nesterov"]))


def build_schedule(opt: torch.optim.Optimizer, t: dict[str, Any]) -> Any:
    name, gamma, warm, epochs = t["schedule"], float(t["gamma"]), int(t["warmup_epochs"]), int(t["epochs"])
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=gamma, patience=int(t["plateau_patience"])
        )
    milestones = sorted(int(m) for m in t["milestones"])

    def factor(e: int) -> float:  # lr multiplier for epoch e (0-based)
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


def apply_recipe(opt: torch.optim.Optimizer, sched: Any, t: dict[str, Any]) -> None:
    """Give the optimizer and schedule this trial's lr, weight_decay, momentum and nesterov.

    Restored optimizer and schedule state carry the values of the run they were saved in (after a PBT
    exploit: another trial's), so a perturbed value would otherwise never take effect. The lr keeps the
    schedule's progress: the new lr times the factor reached so far (lr / initial_lr of the saved run).
    """
    lr = float(t["lr"])
    for g in opt.param_groups:
        g["lr"] = lr * g["lr"] / g.get("initial_lr", lr)  # no initial_lr (plateau's first start): factor 1
        g["initial_lr"] = lr  # saved with the optimizer: the next restore's reference
        g["weight_decay"] = float(t["weight_decay"])
        if "momentum" in g:  # sgd
            g["momentum"], g["nesterov"] = float(t["momentum"]), bool(t["nesterov"])
    if hasattr(sched, "base_lrs"):  # LambdaLR: the schedule multiplies these
        sched.base_lrs = [lr] * len(opt.param_groups)
    sched._last_lr = [g["lr"] for g in opt.param_groups]


@torch.no_grad()
def predict(
    model: nn.Module, batcher: Batcher, idx: np.ndarray, batch_size: int, autocast: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32, on CPU) and labels for the pool indices ``idx``."""
    model.eval()
    outs, ys = [], []
    for xb, yb in batcher.batches(torch.as_tensor(idx), batch_size):
        with torch.autocast(batcher.device.type, dtype=torch.bfloat16, enabled=autocast):
            outs.append(two_logits(model(xb).float()).cpu())
        ys.append(yb.cpu())
    if not outs:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    return torch.cat(outs), torch.cat(ys)


def rng_state() -> dict[str, Any]:
    """Every global random stream training may draw from — torch (dropout, stochastic depth), CUDA,
    numpy, python — in a form ``torch.load(weights_only=True)`` reads back. Batch order and augmentation
    use their own per-epoch generators; these streams are what a resumed run must continue."""
    _, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)  # the tuple form (MT19937)
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {
            "version": int(version),
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Put back the streams ``rng_state`` recorded."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)


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
    autocast: bool
    threshold: float  # binary tasks' decision threshold on P(class 1); else 0.5
    held_out: bool  # a validation split exists (False when training on train + validation)
    mean: list[float]
    std: list[float]
    size: int

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


def place_pool(pools: Pools, device: torch.device, gpu: float) -> tuple[Pixels, torch.Tensor]:
    """The train pool's pixels and labels where batches are gathered: device memory when the uint8 pool
    fits the trial's share of it (``resources.pool_fits``), else (shared) host memory, a copy per batch."""
    x, y = pixels(pools.train_x), as_tensor(pools.train_y)
    if device.type == "cuda" and isinstance(x, torch.Tensor) and pool_fits(x.numel(), gpu, *device_memory(device)):
        x, y = x.to(device), y.to(device)
    return x, y


def build_model(spec: dict[str, Any], pools: Pools, size: int, device: torch.device) -> nn.Module:
    """The spec's model for this task, frozen as asked, on ``device`` (channels_last where it pays)."""
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
    if wants_channels_last(model, device):
        model = model.to(memory_format=torch.channels_last)
    return model


def setup(spec: dict[str, Any], pools: Pools, device: torch.device, merge_val: bool = False) -> Run:
    """Seeds, splits, pools, model, optimizer, schedule and loss of one run (``merge_val``: see ``fit``)."""
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
    batcher = Batcher(x, y, size, mean, std, device, wants_channels_last(model, device), int(data.get("workers", 0)))
    opt = build_optimizer([p for p in model.parameters() if p.requires_grad], t)
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
        autocast=use_autocast(t["precision"], device),
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
        "rng": rng_state(),
    }


def restore(run: Run, state: dict[str, Any]) -> Progress:
    """Continue from a ``checkpoint``: the run then draws exactly what an uninterrupted one would have."""
    run.model.load_state_dict(state["model"])
    run.opt.load_state_dict(state["optimizer"])
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


def train_epoch(run: Run, epoch: int, first: bool, max_batches: int | None = None) -> EpochStats:
    """One pass over the training split, or its rung's share under a data fidelity (``first``: the first epoch this process runs, where a compiled
    model pays for compilation; ``max_batches``: stop after that many, as the throughput probe does)."""
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
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    compile_s = 0.0
    n = 0
    for i, (xb, yb) in enumerate(run.batcher.batches(perm, bs, run.spec["data"]["augment"], g_dev)):
        if max_batches is not None and i >= max_batches:
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
        run.opt.step()
        # Accumulate on the device: no host sync per step.
        loss_sum += loss.detach() * len(yb)
        correct += (decide(out.detach(), run.threshold) == yb).sum()
        if first and i == 0 and t.get("compile"):  # the first compiled step pays for compilation
            if device.type == "cuda":
                torch.cuda.synchronize()
            compile_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.synchronize()
    n = max(n, 1)
    return EpochStats(
        loss_sum.item() / n, correct.item() / n, n / max(time.perf_counter() - t0 - compile_s, 1e-9), compile_s, n
    )


def validate(run: Run) -> dict[str, float]:
    """Loss, accuracy and the selection metrics (``metrics.selection_metrics``; decisions at the threshold)
    on the validation split."""
    from .metrics import selection_metrics

    logits, labels = predict(
        run.model, run.batcher, run.splits.val, int(run.spec["train"]["eval_batch_size"]), run.autocast
    )
    pred = decide(logits, run.threshold)
    return {
        "val_loss": F.cross_entropy(logits, labels).item(),
        "val_acc": (pred == labels).float().mean().item(),
        **selection_metrics(labels.numpy(), pred.numpy(), logits.double().softmax(1).numpy()),
    }


def step_schedule(run: Run, metrics: dict[str, float]) -> None:
    if isinstance(run.sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        run.sched.step(metrics[run.monitor])
    else:
        run.sched.step()


def data_fraction(t: dict[str, Any], epoch: int) -> float:
    """The share of the training split epoch ``epoch`` (1-based) trains on: its rung's, else all."""
    return next((float(f) for last, f in t.get(DATA_RUNGS) or [] if epoch <= last), 1.0)


def data_epochs(t: dict[str, Any], epoch: int) -> float:
    """Epochs of the whole training split that epochs 1..``epoch`` add up to: an epoch on a quarter of it counts a
    quarter (the unit of an epoch budget, planned and spent alike)."""
    return sum(data_fraction(t, e) for e in range(1, epoch + 1))


def fidelity_subset(train: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The first ``fraction`` of one seeded order of the training split: each rung's images include the
    previous rung's (growing data, not a new draw), and the order does not depend on the trial."""
    if fraction >= 1.0:
        return train
    order = np.random.default_rng([seed, 3]).permutation(len(train))
    return np.sort(train[order[: max(1, math.ceil(fraction * len(train)))]])


def diverged(epoch: int, loss: float) -> dict[str, Any]:
    """The result of an epoch whose training loss is not finite: the run ends here, flagged ``diverged``."""
    return {"epoch": epoch, "diverged": 1, "reason": f"training loss became {loss} at epoch {epoch}"}


def fit(
    spec: dict[str, Any],
    pools: Pools,
    *,
    state: dict[str, Any] | None = None,
    on_epoch: Callable[[dict[str, float], Callable[[], dict[str, Any]]], None] | None = None,
    device: torch.device | None = None,
    merge_val: bool = False,
) -> FitResult:
    """Train ``spec``'s model on ``pools`` for ``train.epochs`` epochs, resuming from ``state``.

    ``on_epoch(metrics, get_state)`` is called after every epoch; ``get_state()`` returns the
    checkpoint payload (only built when the caller asks for it). ``merge_val`` trains on
    train + validation (final training): nothing is held out, so there are no ``val_*`` metrics,
    no early stopping, and a plateau schedule watches the training loss.
    """
    run = setup(spec, pools, device or resolve_device(spec["train"]["device"]), merge_val)
    progress = restore(run, state) if state else Progress()
    start, t_start = progress.epoch, time.perf_counter()
    try:
        for epoch in range(start, int(spec["train"]["epochs"])):
            t0 = time.perf_counter()
            trained = train_epoch(run, epoch, first=epoch == start)
            if not math.isfinite(trained.loss):  # checked once per epoch: no host sync per step
                metrics = diverged(epoch + 1, trained.loss)
                progress.record(metrics, 0)
                if on_epoch is not None:
                    on_epoch(metrics, lambda: checkpoint(run, progress))
                break
            metrics = {
                "epoch": epoch + 1,
                "train_loss": trained.loss,
                "train_acc": trained.acc,
                **(
                    {
                        "data_fraction": data_fraction(spec["train"], epoch + 1),
                        "data_epochs": data_epochs(spec["train"], epoch + 1),
                        "train_images": trained.images,
                    }
                    if spec["train"].get(DATA_RUNGS)
                    else {}
                ),
                **(validate(run) if run.held_out else {}),
                "lr": run.opt.param_groups[0]["lr"],
            }
            step_schedule(run, metrics)
            metrics.update(epoch_time_s=time.perf_counter() - t0, images_per_s=trained.images_per_s)
            if trained.compile_s:
                metrics["compile_s"] = trained.compile_s
            stop = progress.record(metrics, run.early_stopping)
            release_host_memory()
            if on_epoch is not None:
                on_epoch(metrics, lambda: checkpoint(run, progress))
            if stop:
                break
    finally:
        run.batcher.close()
    return FitResult(
        run.model,
        progress.history,
        run.splits,
        run.mean,
        run.std,
        run.size,
        run.device,
        run.autocast,
        time.perf_counter() - t_start,
        int(spec["data"].get("workers", 0)),
        early_stopping=run.early_stopping,
        monitor=run.monitor,
    )


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
        wants_channels_last(res.model, res.device),
        workers=res.workers,
    )
    try:
        logits, labels = predict(res.model, batcher, idx, batch_size, autocast=False)
    finally:
        batcher.close()
    return logits.numpy(), labels.numpy()
